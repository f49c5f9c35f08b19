"""The Train Pixel Segmentation dialog: builds a ``train_pixel_segmentation`` job and starts it.

Every value maps to one field of :class:`TrainPixelSegmentationJob` (the same job the Processing
algorithm builds from the same values). A live pre-flight summary (``sample_summary`` job, run in a
worker: nothing heavy is imported here) shows what the sampler will draw; OK stays disabled, with
the reason, while the setup cannot train.
"""

from __future__ import annotations

import dataclasses

from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..core.basic_jobs import EnvironmentReportJob
from ..core.errors import UserError
from ..core.labeling.grid import read_grid
from ..core.labeling.project import LabelingProject
from ..core.patchsize import PATCH_MULTIPLE, nearest_patch_size
from ..core.sampling.jobs import SampleSummaryJob
from ..core.segmentation.jobs import (
    ARCHITECTURE_LABELS,
    ARCHITECTURES,
    ENCODERS,
    LOSS_CHOICES,
    LOSS_LABELS,
    UNLABELLED,
    TrainPixelSegmentationJob,
)
from ..core.training.length import training_length
from ..core.training.start_weights import START_RANDOM, WEIGHTS_FILTER
from ..core.wording import for_dialog, plural
from . import settings
from .job_dialog_support import (
    MODEL_FILTER,
    browse_file,
    browse_folder,
    checked_problems,
    counted,
    devices_listed,
    double_spin,
    file_row,
    fill_devices,
    fit_to_screen,
    guard_wheel,
    int_spin,
    known_devices,
    labeling_tool_project,
    lay_out_dialog,
    main_window,
    problem_label,
    remember_value,
    remembered_job,
    remembered_value,
    select_device,
    set_known_devices,
    show_dialog,
    show_problems,
    single_shot_timer,
)
from .task import JobManager
from .training_dialog_parts import (
    TrainingDialog,
    model_output_row,
    suggest_model_outputs,
    summary_html,
)

SETTINGS_KEY = "deep_learning_trainer/train_pixel_segmentation/last_job"
SUMMARY_DELAY_MS = 500
_SUMMARY_FIELDS = ("project", "patch_size", "split", "shuffle", "seed",
                   "feature_patch_percentage", "background_patch_ratio")
_ARCH_HELP = {
    "unetplusplus": "Nested skip connections: sharp outlines of structural objects (buildings, "
                    "vehicles, containers).",
    "unet": "The classic encoder-decoder: a good choice for features of irregular appearance "
            "(clouds, debris, vegetation).",
    "deeplabv3plus": "Atrous convolutions: fast to train, good results on large, uniform areas.",
}
def valid_patch_size(value: int, limit: int | None) -> int:
    """The multiple of 32 nearest to ``value`` that fits in ``limit`` px (the smallest raster)."""
    top = max(PATCH_MULTIPLE, (limit // PATCH_MULTIPLE) * PATCH_MULTIPLE) if limit else None
    nearest = max(PATCH_MULTIPLE, int(round(value / PATCH_MULTIPLE)) * PATCH_MULTIPLE)
    return min(nearest, top) if top else nearest


def summary_blockers(summary: dict) -> list[str]:
    """Reasons the sampled patches cannot train a model (empty when they can). No validation
    patch is only a warning: the engine then keeps the last model."""
    patches = summary.get("patches", {})
    train = patches.get("train", {})
    out = []
    if not train.get("total"):
        out.append("No training patch was selected: label more features, raise the split or "
                   "the feature patch percentage, or use a smaller patch size.")
    elif not train.get("feature"):
        out.append("The training patches hold no labelled feature: label features on the "
                   "training rasters.")
    return out


class TrainSegmentationDialog(TrainingDialog):
    """Train Pixel Segmentation. ``job()`` gives the job the values describe."""

    settings_key = SETTINGS_KEY
    summary_fields = _SUMMARY_FIELDS
    keeps_background_window = True

    def __init__(self, parent: QWidget | None = None, plugin=None, project_path: str | None = None,
                 remember: bool = True, live_summary: bool = True,
                 probe_devices: bool = True) -> None:
        super().__init__(parent)
        self.plugin = plugin
        self.remember = remember
        self.live_summary = live_summary
        self.jobs = getattr(plugin, "jobs", None) or JobManager(None, self)
        self.setWindowTitle("Train Pixel Segmentation")
        self.setObjectName("TrainPixelSegmentationDialog")
        self.project: LabelingProject | None = None
        self.classes: list = []
        self.raster_sizes: list[tuple[str, int, int]] = []
        self.project_error = ""
        self.summary: dict | None = None
        self.summary_error = ""
        self.summary_state = "idle"   # idle | waiting | running | ready | failed
        self._summary_cache: dict[str, tuple[str, object]] = {}
        self._loading = False
        self.task = None
        self.window = None
        self._timer = single_shot_timer(self, SUMMARY_DELAY_MS, self._start_summary)
        self._build()
        self._fill_devices(settings.device())
        job = self._remembered_job()
        if project_path and str(project_path) != job.project:
            # another project: its own classes and outputs, not the last project's
            job = dataclasses.replace(job, project=str(project_path), output_model="",
                                      output_last_model="", log_folder="", resume_from="",
                                      solid_distances={}, blur_distances={})
        self.set_job(job)
        self.restore_ui_state()
        if probe_devices and not devices_listed():
            self._probe_devices()

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        left = QWidget()
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self._model_group())
        col.addWidget(self._patch_group())
        col.addWidget(self._training_group())
        col.addWidget(self._output_group())
        col.addWidget(self._advanced_group())
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(left.sizeHint().width() + 24)

        summary_box = QGroupBox("Pre-flight sample summary")
        sl = QVBoxLayout(summary_box)
        self.summary_status = QLabel("Choose a labeling project.")
        self.summary_status.setWordWrap(True)
        self.summary_view = QTextBrowser()
        self.summary_view.setOpenLinks(False)
        self.summary_view.setMinimumWidth(330)
        sl.addWidget(self.summary_status)
        sl.addWidget(self.summary_view, 1)

        right = QVBoxLayout()
        right.addWidget(summary_box, 3)
        right.addWidget(self._classes_group(), 2)
        top = QHBoxLayout()
        top.addWidget(scroll, 3)
        top.addLayout(right, 2)

        self.reason_label = problem_label()
        self.reason_label.setObjectName("reason_label")
        lay_out_dialog(self, top, "Train", self.reason_label)
        fit_to_screen(self, 1180, 900)

    def _model_group(self) -> QGroupBox:
        box = QGroupBox("Project and model")
        form = QFormLayout(box)
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("Labeling project (.gpkg)")
        self.project_edit.setToolTip("The labeling project with the training rasters, classes "
                                     "and labels (or a folder of exported segmentation chips).")
        self.project_edit.editingFinished.connect(self._project_changed)
        form.addRow("Labeling project", file_row(self.project_edit, self._browse_project))

        self.arch_combo = QComboBox()
        for a in ARCHITECTURES:
            self.arch_combo.addItem(ARCHITECTURE_LABELS.get(a, a), a)
            self.arch_combo.setItemData(self.arch_combo.count() - 1, _ARCH_HELP.get(a, ""),
                                        Qt.ToolTipRole)
        self.arch_help = QLabel()
        self.arch_help.setWordWrap(True)
        self.arch_help.setStyleSheet("color: #555;")
        self.arch_combo.currentIndexChanged.connect(
            lambda _i: self.arch_help.setText(_ARCH_HELP.get(self.arch_combo.currentData(), "")))
        form.addRow("Model architecture", self.arch_combo)
        form.addRow("", self.arch_help)
        self.encoder_combo = QComboBox()
        for e in ENCODERS:
            self.encoder_combo.addItem(e, e)
        self.encoder_combo.setToolTip("The backbone that extracts features; larger encoders learn "
                                      "more but train slower.")
        form.addRow("Encoder", self.encoder_combo)

        self.weights_none = QRadioButton("Random initial weights")
        self.weights_imagenet = QRadioButton("ImageNet pre-trained encoder weights")
        self.weights_file = QRadioButton("Weights from a local file")
        self.weights_model = QRadioButton("Start from an existing model (fine-tune)")
        self.weights_group = QButtonGroup(self)
        for b, tip in ((self.weights_none, "Start from random weights: works offline; needs "
                                           "more epochs."),
                       (self.weights_imagenet, "Start the encoder from ImageNet weights: "
                                               "usually learns faster from fewer labels."),
                       (self.weights_file, "Start from a weights file (START_WEIGHTS): a "
                                           "state dict of the same network or of its encoder "
                                           "(e.g. ImageNet weights copied for an offline "
                                           "computer)."),
                       (self.weights_model, "Fine-tune a model trained before; its "
                                            "architecture, encoder and normalisation are used.")):
            b.setToolTip(tip)
            self.weights_group.addButton(b)
            b.toggled.connect(self._changed)
        self.weights_note = QLabel("ImageNet weights are downloaded once and need an internet "
                                   "connection; offline, training stops with a message — then "
                                   "choose random weights or a local file.")
        self.start_file_edit = QLineEdit()
        self.start_file_edit.setPlaceholderText("Weights file (.safetensors, .pth)")
        self.start_file_edit.setToolTip(self.weights_file.toolTip())
        self.start_file_edit.textChanged.connect(self._start_file_edited)
        self.weights_note.setWordWrap(True)
        self.weights_note.setStyleSheet("color: #555;")
        self.init_model_edit = QLineEdit()
        self.init_model_edit.setPlaceholderText("Model to fine-tune")
        self.init_model_edit.setToolTip("A pixel segmentation model (.dltmodel.safetensors) to "
                                        "start from.")
        wl = QVBoxLayout()
        wl.setSpacing(2)
        wl.addWidget(self.weights_none)
        wl.addWidget(self.weights_imagenet)
        wl.addWidget(self.weights_note)
        wl.addWidget(self.weights_file)
        wl.addLayout(file_row(self.start_file_edit, lambda: browse_file(
            self, self.start_file_edit, "Start weights", WEIGHTS_FILTER)))
        wl.addWidget(self.weights_model)
        wl.addLayout(file_row(self.init_model_edit, self._browse_init_model))
        form.addRow("Initial weights", wl)
        for w in (self.arch_combo, self.encoder_combo):
            w.currentIndexChanged.connect(self._changed)
        self.init_model_edit.textChanged.connect(self._init_model_edited)
        return box

    def _patch_group(self) -> QGroupBox:
        box = QGroupBox("Patches")
        form = QFormLayout(box)
        self.patch_spin = int_spin(
            32, 4096, PATCH_MULTIPLE, " px",
            tooltip="Edge of the square patches: a multiple of 32, no larger than the rasters. "
                    "Larger patches see more context but need more GPU memory.")
        self.patch_fix_button = QPushButton()
        self.patch_fix_button.hide()
        self.patch_fix_button.clicked.connect(self._use_suggested_patch)
        row = QHBoxLayout()
        row.addWidget(self.patch_spin)
        row.addWidget(self.patch_fix_button)
        row.addStretch(1)
        form.addRow("Patch size", row)

        self.split_slider = QSlider(Qt.Horizontal)
        self.split_slider.setRange(0, 100)
        self.split_spin = int_spin(0, 100, suffix=" % training")
        for w in (self.split_slider, self.split_spin):
            w.setToolTip("Percent of the rasters used for training; the rest validate (with a "
                         "single raster: of its patches).")
        self.split_slider.valueChanged.connect(self.split_spin.setValue)
        self.split_spin.valueChanged.connect(self.split_slider.setValue)
        row = QHBoxLayout()
        row.addWidget(self.split_slider, 1)
        row.addWidget(self.split_spin)
        form.addRow("Training/validation split", row)
        self.shuffle_check = QCheckBox("Shuffle rasters before splitting (uses the seed)")
        self.shuffle_check.setToolTip("Off: the same rasters validate every run (repeatable). "
                                      "On: the split is drawn with the random seed.")
        form.addRow("", self.shuffle_check)
        self.feature_spin = double_spin(0, 1, 2, 0.05)
        self.feature_spin.setToolTip("Share (0–1) of the patches holding labelled features that "
                                     "are used, in each split: 0.4 of 50 patches → 20.")
        form.addRow("Feature patch percentage", self.feature_spin)
        self.background_spin = double_spin(0, 100, 2, 0.05)
        self.background_spin.setToolTip("Background patches (no labelled feature) per feature "
                                        "patch: 0.15 × 20 → 3. Raise it to reduce false "
                                        "positives when features are sparse.")
        form.addRow("Background patch ratio", self.background_spin)
        for w in (self.patch_spin, self.split_spin, self.feature_spin, self.background_spin):
            w.valueChanged.connect(self._changed)
        self.shuffle_check.toggled.connect(self._changed)
        return box

    def _training_group(self) -> QGroupBox:
        box = QGroupBox("Training")
        grid = QGridLayout(box)
        self.epochs_spin = counted(int_spin(
            1, 100000, tooltip="Passes over the training patches. The best model (lowest "
                               "validation loss) is kept whatever the number."), "epoch")
        self.batch_spin = counted(int_spin(
            1, 4096, tooltip="Patches per optimisation step; limited by GPU memory."), "patch")
        self.lr_spin = double_spin(0.000001, 1, 6, 0.0001)
        self.lr_spin.setToolTip("Step size of the AdamW optimiser at the start (it decays "
                                "over training); 0.001 suits most cases, lower it when "
                                "fine-tuning.")
        self.rotation_check = QCheckBox("Rotation")
        self.scale_check = QCheckBox("Scale")
        self.flip_check = QCheckBox("Flips")
        self.contrast_check = QCheckBox("Contrast")
        for c, tip in ((self.rotation_check, "Random 90° turns and small rotations."),
                       (self.scale_check, "Random zoom in and out by up to 20 %."),
                       (self.flip_check, "Random horizontal and vertical flips.")):
            c.setToolTip(tip + " Applied to the image and its labels alike.")
        self.contrast_check.setToolTip("Random contrast (×0.8–1.25) per patch, the same for all "
                                       "bands: lighting and exposure differ across a scene. "
                                       "Labels are unchanged.")
        self.cw_min_spin = double_spin(0, 10, 2, 0.5)
        self.cw_max_spin = double_spin(0, 10, 2, 0.5)
        for s in (self.cw_min_spin, self.cw_max_spin):
            s.setToolTip("Patches with rare classes are drawn more often: with the max weight at "
                         "the start of training, decaying to the min at the end. Useful max: "
                         "1–6; 2 and 3 when features are sparse, else 0 and 1.")
        self.loss_spin = double_spin(0, 1, 2, 0.05)
        self.loss_spin.setToolTip("0 weighs feature and background pixels equally; higher "
                                  "values push the loss towards feature pixels (sparse or "
                                  "partly labelled features).")
        self.device_combo = QComboBox()   # filled after the layout (its width follows the rest)
        self.device_combo.setToolTip("Where training runs; Automatic picks the first CUDA GPU.")
        self.unlabelled_combo = QComboBox()
        for value, label in zip(UNLABELLED, ("background", "unknown (not learnt)")):
            self.unlabelled_combo.addItem(label, value)
        self.unlabelled_combo.setToolTip("background: labels cover every feature, the rest is "
                                         "background. unknown: sparse labels (e.g. land-cover "
                                         "polygons): only labelled pixels are learnt.")
        self.loss_combo = QComboBox()
        for value in sorted(LOSS_CHOICES, key=lambda v: (v != "auto", v != "gce_dice")):
            self.loss_combo.addItem(LOSS_LABELS[value], value)
        self.loss_combo.setToolTip("Generalized cross-entropy + Dice suits sparse features, and "
                                   "labels the image contradicts (an old map) pull less than "
                                   "under cross-entropy, and after the first fifth of the "
                                   "epochs not at all; Automatic uses it unless unlabelled "
                                   "pixels are unknown (sparse polygons: cross-entropy + Dice "
                                   "learns them faster). Tversky weighs missed features more "
                                   "than false alarms.")
        self.length_label = QLabel()
        self.length_label.setWordWrap(True)
        rows = [("Epochs", self.epochs_spin), ("Patches per batch", self.batch_spin),
                ("Learning rate", self.lr_spin), ("Device", self.device_combo),
                ("Unlabelled pixels", self.unlabelled_combo)]
        for i, (label, w) in enumerate(rows):
            grid.addWidget(QLabel(label), i, 0)
            grid.addWidget(w, i, 1)
        aug = QHBoxLayout()
        for c in (self.rotation_check, self.scale_check, self.flip_check, self.contrast_check):
            aug.addWidget(c)
        grid.addWidget(QLabel("Augmentation"), 0, 2)
        grid.addLayout(aug, 0, 3)
        cw = QHBoxLayout()
        cw.addWidget(QLabel("min"))
        cw.addWidget(self.cw_min_spin)
        cw.addWidget(QLabel("max"))
        cw.addWidget(self.cw_max_spin)
        grid.addWidget(QLabel("Class weight"), 1, 2)
        grid.addLayout(cw, 1, 3)
        grid.addWidget(QLabel("Loss weight"), 2, 2)
        grid.addWidget(self.loss_spin, 2, 3)
        grid.addWidget(QLabel("Loss"), 3, 2)
        grid.addWidget(self.loss_combo, 3, 3)
        grid.addWidget(self.length_label, len(rows), 0, 1, 4)
        for combo in (self.unlabelled_combo, self.loss_combo):
            combo.currentIndexChanged.connect(self._changed)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        for w in (self.epochs_spin, self.batch_spin, self.lr_spin, self.cw_min_spin,
                  self.cw_max_spin, self.loss_spin):
            w.valueChanged.connect(self._changed)
        for c in (self.rotation_check, self.scale_check, self.flip_check, self.contrast_check):
            c.toggled.connect(self._changed)
        self.device_combo.currentIndexChanged.connect(self._changed)
        return box

    def _classes_group(self) -> QGroupBox:
        box = QGroupBox("Point and line labels: distances per class (px)")
        layout = QVBoxLayout(box)
        self.class_table = QTableWidget(0, 3)
        self.class_table.setHorizontalHeaderLabels(["Class", "Solid distance", "Blur distance"])
        self.class_table.verticalHeader().hide()
        self.class_table.setSelectionMode(QAbstractItemView.NoSelection)
        header = self.class_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.class_table.setMinimumHeight(110)
        self.class_table.setToolTip("Solid: pixels around a point or line label taken as the "
                                    "feature. Blur: a soft margin beyond it that shrinks to "
                                    "zero during training. Polygons are not affected.")
        layout.addWidget(self.class_table)
        row = QHBoxLayout()
        self.set_solid_button = QPushButton("Set all solid distances…")
        self.set_blur_button = QPushButton("Set all blur distances…")
        self.set_solid_button.clicked.connect(lambda: self._set_all_clicked(1))
        self.set_blur_button.clicked.connect(lambda: self._set_all_clicked(2))
        row.addWidget(self.set_solid_button)
        row.addWidget(self.set_blur_button)
        row.addStretch(1)
        layout.addLayout(row)
        return box

    def _output_group(self) -> QGroupBox:
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("Best model (best mean validation IoU)")
        self.output_last_edit = QLineEdit()
        self.output_last_edit.setPlaceholderText("Model after the last epoch (optional)")
        self.output_edit.setToolTip("The model with the best mean validation IoU of the classes; "
                                    ".dltmodel.safetensors is added to a name without it.")
        self.output_last_edit.setToolTip("The model after the last epoch, to resume training "
                                         "from (its optimizer state is saved beside it).")
        form.addRow("Output model", model_output_row(
            self, self.output_edit, "Output model"))
        form.addRow("Output last model", model_output_row(
            self, self.output_last_edit, "Output last model"))
        self.background_check = QCheckBox("Run in the background (progress in the task manager "
                                          "only)")
        self.tensorboard_check = QCheckBox("Open TensorBoard in the browser when training starts")
        self.background_check.setToolTip("Off: the Training Model window shows the progress. "
                                         "Either way it can be opened from Deep Learning ▸ "
                                         "Training Model Window.")
        self.tensorboard_check.setToolTip("A local TensorBoard (127.0.0.1) shows the metrics of "
                                          "this run; its address also appears in the message "
                                          "bar.")
        form.addRow("", self.background_check)
        form.addRow("", self.tensorboard_check)
        form.addRow("", self.preview_row())
        self.output_edit.textChanged.connect(self._changed)
        self.output_last_edit.textChanged.connect(self._changed)
        return box

    def _advanced_group(self) -> QGroupBox:
        box = QGroupBox("Advanced")
        box.setCheckable(True)
        box.setChecked(False)
        inner = QWidget()
        form = QFormLayout(inner)
        form.setContentsMargins(0, 0, 0, 0)
        self.seed_spin = int_spin(0, 2**31 - 1, tooltip="Seed of the shuffled split, the "
                                  "patches drawn and the initial weights: the same seed repeats "
                                  "a run.")
        self.patience_spin = counted(int_spin(
            0, 100000, special="off", tooltip="Stop when the validation loss has not improved "
                                              "for this many epochs (off: run every epoch)."),
            "epoch")
        self.steps_spin = counted(int_spin(
            0, 10**7, special="automatic",
            tooltip="Batches of new random windows per epoch; automatic covers the training "
                    "area about twice, at least 12 batches."), "batch")
        self.max_patches_spin = counted(int_spin(
            0, 10**8, special="all", tooltip="Use at most this many training patches per epoch "
                                             "(a random subset each epoch)."), "patch")
        self.trials_spin = int_spin(
            0, 500, special="off", tooltip="Train this many short trials with other learning "
            "rates, losses, architectures and patch sizes (Optuna), stop weak ones early and keep "
            "the best model; the first trial uses the settings above.")
        self.search_spin = double_spin(0.1, 10080, 1, 5, " min")
        self.search_spin.setToolTip("Wall-clock minutes for all trials together; each trial "
                                    "gets an equal share.")
        self.workers_spin = int_spin(-1, 64, special="automatic",
                                     tooltip="Processes reading patches while the model trains "
                                             "(0: in the training process).")
        self.resume_edit = QLineEdit()
        self.resume_edit.setPlaceholderText("Last model of an earlier run")
        self.resume_edit.setToolTip("Continue an earlier run from its last model (and its "
                                    "optimizer state, when saved beside it).")
        self.log_edit = QLineEdit()
        self.log_edit.setPlaceholderText("<output model>_logs")
        self.log_edit.setToolTip("TensorBoard logs, the metrics CSV, the learning curves and "
                                 "the report.")
        form.addRow("Random seed", self.seed_spin)
        form.addRow("Early stopping patience (epochs)", self.patience_spin)
        form.addRow("Batches per epoch", self.steps_spin)
        form.addRow("Max training patches per epoch", self.max_patches_spin)
        form.addRow("Hyperparameter search trials", self.trials_spin)
        form.addRow("Search time budget", self.search_spin)
        form.addRow("Data loader workers", self.workers_spin)
        form.addRow("Resume from last model", file_row(self.resume_edit, self._browse_resume))
        form.addRow("Log folder (TensorBoard, CSV)", file_row(self.log_edit, self._browse_log))
        layout = QVBoxLayout(box)
        layout.addWidget(inner)
        inner.setVisible(False)
        box.toggled.connect(inner.setVisible)
        self.advanced_box = box
        for w in (self.seed_spin, self.patience_spin, self.steps_spin, self.max_patches_spin,
                  self.workers_spin, self.trials_spin, self.search_spin):
            w.valueChanged.connect(self._changed)
        self.trials_spin.valueChanged.connect(
            lambda n: self.search_spin.setEnabled(n > 0))
        self.search_spin.setEnabled(False)
        self.resume_edit.textChanged.connect(self._changed)
        self.log_edit.textChanged.connect(self._changed)
        return box

    # -- values <-> job ------------------------------------------------------------------------
    def job(self) -> TrainPixelSegmentationJob:
        """The job these values describe."""
        weights = ("imagenet" if self.weights_imagenet.isChecked() else
                   self.start_file_edit.text().strip() if self.weights_file.isChecked() else
                   START_RANDOM)
        init_model = self.init_model_edit.text().strip() if self.weights_model.isChecked() else ""
        solid, blur = self.distances()
        return TrainPixelSegmentationJob(
            project=self.project_edit.text().strip(),
            architecture=str(self.arch_combo.currentData()),
            encoder=str(self.encoder_combo.currentData()),
            start_weights=weights,
            init_model=init_model,
            patch_size=self.patch_spin.value(),
            split=float(self.split_spin.value()),
            shuffle=self.shuffle_check.isChecked(),
            seed=self.seed_spin.value(),
            feature_patch_percentage=self.feature_spin.value(),
            background_patch_ratio=self.background_spin.value(),
            epochs=self.epochs_spin.value(),
            batch_size=self.batch_spin.value(),
            learning_rate=self.lr_spin.value(),
            augment_rotation=self.rotation_check.isChecked(),
            augment_scale=self.scale_check.isChecked(),
            augment_flip=self.flip_check.isChecked(),
            augment_photometric=self.contrast_check.isChecked(),
            solid_distances=solid,
            blur_distances=blur,
            class_weight_min=self.cw_min_spin.value(),
            class_weight_max=self.cw_max_spin.value(),
            loss_weight=self.loss_spin.value(),
            loss=str(self.loss_combo.currentData()),
            unlabelled_pixels=str(self.unlabelled_combo.currentData()),
            patience=self.patience_spin.value(),
            trials=self.trials_spin.value(),
            search_minutes=self.search_spin.value(),
            steps_per_epoch=self.steps_spin.value(),
            max_patches=self.max_patches_spin.value(),
            num_workers=self.workers_spin.value(),
            resume_from=self.resume_edit.text().strip(),
            device=str(self.device_combo.currentData() or "auto"),
            output_model=self.output_edit.text().strip(),
            output_last_model=self.output_last_edit.text().strip(),
            log_folder=self.log_edit.text().strip(),
        )

    def set_job(self, job: TrainPixelSegmentationJob) -> None:
        """Show ``job``'s values (the class table follows its project)."""
        self._loading = True
        try:
            self.project_edit.setText(job.project)
            _select(self.arch_combo, job.architecture)
            _select(self.encoder_combo, job.encoder)
            self.init_model_edit.setText(job.init_model)
            if job.init_model:
                self.weights_model.setChecked(True)
            elif job.start_weights == "imagenet":
                self.weights_imagenet.setChecked(True)
            elif job.start_weights != START_RANDOM:
                self.start_file_edit.setText(job.start_weights)
                self.weights_file.setChecked(True)
            else:
                self.weights_none.setChecked(True)
            self.patch_spin.setValue(int(job.patch_size))
            self.split_spin.setValue(int(round(job.split)))
            self.shuffle_check.setChecked(bool(job.shuffle))
            self.seed_spin.setValue(int(job.seed))
            self.feature_spin.setValue(float(job.feature_patch_percentage))
            self.background_spin.setValue(float(job.background_patch_ratio))
            self.epochs_spin.setValue(int(job.epochs))
            self.batch_spin.setValue(int(job.batch_size))
            self.lr_spin.setValue(float(job.learning_rate))
            self.rotation_check.setChecked(bool(job.augment_rotation))
            self.scale_check.setChecked(bool(job.augment_scale))
            self.flip_check.setChecked(bool(job.augment_flip))
            self.contrast_check.setChecked(bool(job.augment_photometric))
            self.cw_min_spin.setValue(float(job.class_weight_min))
            self.cw_max_spin.setValue(float(job.class_weight_max))
            self.loss_spin.setValue(float(job.loss_weight))
            _select(self.loss_combo, job.loss)
            _select(self.unlabelled_combo, job.unlabelled_pixels)
            self.patience_spin.setValue(int(job.patience))
            self.trials_spin.setValue(int(job.trials))
            self.search_spin.setValue(float(job.search_minutes))
            self.steps_spin.setValue(int(job.steps_per_epoch))
            self.max_patches_spin.setValue(int(job.max_patches))
            self.workers_spin.setValue(int(job.num_workers))
            self.resume_edit.setText(job.resume_from)
            select_device(self.device_combo, job.device)
            self.output_edit.setText(job.output_model)
            self.output_last_edit.setText(job.output_last_model)
            self.log_edit.setText(job.log_folder)
        finally:
            self._loading = False
        self._pending_distances = (job.solid_distances, job.blur_distances)
        self._project_changed()

    def distances(self) -> tuple[dict, dict]:
        """Solid and blur distance per class id (as text keys, as in job files and Processing)."""
        solid, blur = {}, {}
        for row in range(self.class_table.rowCount()):
            cid = self.class_table.item(row, 0).data(Qt.UserRole)
            solid[str(cid)] = self.class_table.cellWidget(row, 1).value()
            blur[str(cid)] = self.class_table.cellWidget(row, 2).value()
        return solid, blur

    def set_all(self, column: int, value: float) -> None:
        """Set every class's solid (column 1) or blur (column 2) distance to ``value``."""
        for row in range(self.class_table.rowCount()):
            self.class_table.cellWidget(row, column).setValue(value)

    # -- project -------------------------------------------------------------------------------
    def _project_changed(self) -> None:
        path = self.project_edit.text().strip()
        pending = getattr(self, "_pending_distances", None)
        self._pending_distances = None
        if path != getattr(self, "_project_path", None) or pending is not None:
            self._project_path = path
            self._load_project(path)
            if pending is not None:
                self._apply_distances(*pending)
            self._suggest_outputs()
        self._changed()

    def _load_project(self, path: str) -> None:
        self.project, self.classes, self.raster_sizes, self.project_error = None, [], [], ""
        if path:
            try:
                self.project = LabelingProject.open(path)
                self.classes = sorted(self.project.classes(), key=lambda c: c.id)
                for r in self.project.rasters():
                    try:
                        g = read_grid(r.path)
                        self.raster_sizes.append((r.name, g.width, g.height))
                    except UserError as exc:
                        self.project_error = f"{exc.message} {exc.fix}".strip()
            except UserError as exc:
                self.project_error = f"{exc.message} {exc.fix}".strip()
        self.class_table.setRowCount(len(self.classes))
        for row, c in enumerate(self.classes):
            item = QTableWidgetItem(f"{c.id}  {c.name}")
            item.setData(Qt.UserRole, c.id)
            item.setData(Qt.DecorationRole, QColor(c.color))
            item.setFlags(Qt.ItemIsEnabled)
            self.class_table.setItem(row, 0, item)
            for col, value in ((1, c.solid_distance), (2, c.blur_distance)):
                spin = double_spin(0, 10000, 1, 1)
                spin.setValue(float(value))
                spin.valueChanged.connect(self._changed)
                self.class_table.setCellWidget(row, col, spin)
        guard_wheel(self.class_table)

    def _apply_distances(self, solid, blur) -> None:
        for column, values in ((1, solid), (2, blur)):
            if not values:
                continue
            if isinstance(values, dict):
                by_id = {str(k): v for k, v in values.items()}
            else:
                by_id = {str(c.id): v for c, v in zip(self.classes, values)}
            for row, c in enumerate(self.classes):
                if str(c.id) in by_id:
                    self.class_table.cellWidget(row, column).setValue(float(by_id[str(c.id)]))

    def _suggest_outputs(self) -> None:
        if self.project:
            suggest_model_outputs(str(self.project.path), "segmentation", self.output_edit,
                                  self.output_last_edit)

    # -- checks --------------------------------------------------------------------------------
    def patch_limit(self) -> int | None:
        """The smallest raster side of the project (patches must fit in it)."""
        sides = [min(w, h) for _n, w, h in self.raster_sizes]
        return min(sides) if sides else None

    def suggested_patch_size(self) -> int:
        return valid_patch_size(self.patch_spin.value(), self.patch_limit())

    def problems(self) -> list[str]:
        """Why the job cannot start (OK is disabled while there is any)."""
        job = self.job()
        out = []
        own = checked_problems(job)
        if not job.project:
            out.append("Choose a labeling project.")
            own = [p for p in own if "(PROJECT) is required" not in p]
        if self.project_error:
            out.append(self.project_error)
        elif self.project is not None:
            if not self.classes:
                out.append("The labeling project has no class: add classes in the Labeling "
                           "Tool.")
            if not self.raster_sizes:
                out.append("The labeling project has no training raster: add rasters in the "
                           "Labeling Tool.")
        # the patch size message names the size that is valid for these rasters too
        own = [p for p in own if not p.startswith(f"Patch size {job.patch_size} is not a")]
        out += own
        limit = self.patch_limit()
        suggestion = self.suggested_patch_size()
        if job.patch_size % PATCH_MULTIPLE:
            fits = (f" (the smallest raster is {limit} px)"
                    if limit and suggestion < nearest_patch_size(job.patch_size) else "")
            out.append(f"Patch size {job.patch_size} is not a multiple of {PATCH_MULTIPLE}: "
                       f"use {suggestion}{fits}.")
        elif limit and job.patch_size > limit:
            name, w, h = min(self.raster_sizes, key=lambda r: min(r[1], r[2]))
            out.append(f"Patch size {job.patch_size} px is larger than the raster {name} "
                       f"({w} × {h} px): use {suggestion}.")
        if self.summary_state == "failed" and self.summary_error:
            out.append(self.summary_error)
        elif self.summary_state == "ready" and self.summary is not None:
            out += summary_blockers(self.summary)
        return list(dict.fromkeys(for_dialog(p, TrainPixelSegmentationJob) for p in out))

    def _changed(self, *_args) -> None:
        if self._loading:
            return
        self.arch_help.setText(_ARCH_HELP.get(self.arch_combo.currentData(), ""))
        self.weights_note.setEnabled(self.weights_imagenet.isChecked())
        self.init_model_edit.setEnabled(self.weights_model.isChecked())
        self.start_file_edit.setEnabled(self.weights_file.isChecked())
        # options that do not apply are disabled: a fine-tuned or resumed model brings its own
        # architecture and encoder; patience needs validation patches
        from_model = self.weights_model.isChecked() or bool(self.resume_edit.text().strip())
        for w, tip in ((self.arch_combo, "The network design; the line below says what each "
                                         "suits."),
                       (self.encoder_combo, "The backbone that extracts features; larger "
                                            "encoders learn more but train slower.")):
            w.setEnabled(not from_model)
            w.setToolTip("Taken from the model you start from or resume." if from_model
                         else tip)
        self.patience_spin.setEnabled(self.split_spin.value() < 100)
        suggestion = self.suggested_patch_size()
        bad_patch = suggestion != self.patch_spin.value()
        self.patch_fix_button.setText(f"Use {suggestion}")
        self.patch_fix_button.setVisible(bad_patch)
        self._show_length()
        if self.summary_state == "ready" and self.summary is not None:
            self._show_summary("ready", self.summary)   # the unlabelled-pixels line
        self._schedule_summary()
        self._validate()

    def _show_length(self) -> None:
        """Training length in steps, up front (warning below a few hundred)."""
        job = self.job()
        area = sum(w * h for _n, w, h in self.raster_sizes) * job.split / 100.0
        if not area or job.patch_size % PATCH_MULTIPLE:
            self.length_label.setText("")
            return
        per_epoch, total, warning = training_length(job, area)
        text = (f"Training length: {plural(job.epochs, 'epoch')} × "
                f"{plural(per_epoch, 'batch', 'batches')} = {plural(total, 'step')}.")
        self.length_label.setText(text + (f" <b style='color:#a05a00'>{warning}</b>"
                                          if warning else ""))

    def _validate(self) -> None:
        show_problems(self.reason_label, self.ok_button, self.problems())

    def _use_suggested_patch(self) -> None:
        self.patch_spin.setValue(self.suggested_patch_size())

    def _start_file_edited(self, text: str) -> None:
        if text.strip() and not self._loading:
            self.weights_file.setChecked(True)
        self._changed()

    def _init_model_edited(self, text: str) -> None:
        if text.strip() and not self._loading:
            self.weights_model.setChecked(True)
        self._changed()

    # -- live summary --------------------------------------------------------------------------
    def summary_job(self) -> SampleSummaryJob:
        """The ``sample_summary`` job for the current sampling values."""
        job = self.job()
        return SampleSummaryJob(project=job.project, format="segmentation",
                                patch_size=job.patch_size, split=job.split, shuffle=job.shuffle,
                                seed=job.seed,
                                feature_patch_percentage=job.feature_patch_percentage,
                                background_patch_ratio=job.background_patch_ratio)

    def _summary_ready_to_run(self, job: SampleSummaryJob) -> bool:
        return bool(job.project) and self.project is not None and not self.project_error \
            and not job.problems() and job.patch_size % PATCH_MULTIPLE == 0 \
            and not (self.patch_limit() and job.patch_size > self.patch_limit())

    def _schedule_summary(self) -> None:
        job = self.summary_job()
        if not self._summary_changed(job):
            return
        if self._summary_key in self._summary_cache:
            self._timer.stop()
            state, value = self._summary_cache[self._summary_key]
            self._show_summary(state, value)
            return
        if not self._summary_ready_to_run(job):
            self._timer.stop()
            self.summary, self.summary_state, self.summary_error = None, "idle", ""
            self._show_summary_waiting()
            return
        self.summary_state = "waiting"
        self.summary_status.setText("Sampling…")
        if self.live_summary:
            self._timer.start()

    def _start_summary(self) -> None:
        self.summary_state = "running"
        super()._start_summary()

    def _summary_done(self, key: str, state: str, value) -> None:
        if sip.isdeleted(self):
            return
        self._summary_cache[key] = (state, value)
        if key == self._summary_key:
            self._show_summary(state, value)

    def set_summary(self, summary: dict) -> None:
        """Show ``summary`` (a ``SamplePlan.summary()`` dict) for the current values."""
        self._summary_cache[self._summary_key] = ("ready", summary)
        self._show_summary("ready", summary)

    def _show_summary(self, state: str, value) -> None:
        self.summary_state = state
        if state == "ready":
            self.summary, self.summary_error = value, ""
            blockers = summary_blockers(value)
            self.summary_status.setText("Cannot train with this sampling." if blockers
                                        else "What training will sample:")
            unknown = self.unlabelled_combo.currentData() == "unknown"
            self.summary_view.setHtml(summary_html(value, self.classes) + (
                "<p>Unlabelled pixels: <b>unknown</b> — only labelled pixels are learnt; "
                "background counts above are not trained.</p>" if unknown else
                "<p>Unlabelled pixels: <b>background</b>.</p>"))
        else:
            self.summary, self.summary_error = None, str(value).strip()
            self.summary_status.setText("The sampling failed:")
            self.summary_view.setPlainText(self.summary_error)
        self._validate()

    # -- devices -------------------------------------------------------------------------------
    def _fill_devices(self, current: str) -> None:
        fill_devices(self.device_combo, known_devices(), current)

    def _probe_devices(self) -> None:
        task = self.jobs.start(EnvironmentReportJob(), "Listing CUDA devices", notify=False)
        task.succeeded.connect(self._devices_known)

    def _devices_known(self, report: dict) -> None:
        set_known_devices(report.get("cuda_devices") or [])
        if not sip.isdeleted(self):
            self._fill_devices(str(self.device_combo.currentData() or "auto"))

    # -- remembering, job files ----------------------------------------------------------------
    def _remembered_job(self) -> TrainPixelSegmentationJob:
        default = TrainPixelSegmentationJob(device=settings.device())
        return remembered_job(SETTINGS_KEY, default) if self.remember else default

    def remember_values(self) -> None:
        """Keep the values for the next time the dialog opens (QgsSettings)."""
        super().remember_values()
        remember_value(SETTINGS_KEY + "_ui", {"background": self.background_check.isChecked(),
                                              "tensorboard": self.tensorboard_check.isChecked()})

    def restore_ui_state(self) -> None:
        """Tick Background and TensorBoard as they were when the dialog was last accepted."""
        state = remembered_value(SETTINGS_KEY + "_ui") if self.remember else None
        if not isinstance(state, dict):
            state = {}
        self.background_check.setChecked(bool(state.get("background", False)))
        self.tensorboard_check.setChecked(bool(state.get("tensorboard", True)))

    def _show_loaded_job(self, job: TrainPixelSegmentationJob) -> None:
        self._project_path = None
        self.set_job(job)

    # -- browsing ------------------------------------------------------------------------------
    def _browse_project(self) -> None:
        if browse_file(self, self.project_edit, "Labeling project", "Labeling project (*.gpkg)"):
            self._project_changed()

    def _browse_init_model(self) -> None:
        browse_file(self, self.init_model_edit, "Model to fine-tune", MODEL_FILTER)

    def _browse_resume(self) -> None:
        browse_file(self, self.resume_edit, "Last model to resume from", MODEL_FILTER)

    def _browse_log(self) -> None:
        browse_folder(self, self.log_edit, "Log folder")

    def _set_all_clicked(self, column: int) -> None:
        what = "solid" if column == 1 else "blur"
        value, ok = QInputDialog.getDouble(self, "Set all to the same value",
                                           f"{what.capitalize()} distance for every class (px)",
                                           0.0, 0.0, 10000.0, 1)
        if ok:
            self.set_all(column, value)


def _select(combo: QComboBox, value) -> None:
    index = combo.findData(value)
    if index < 0:
        combo.addItem(str(value), value)
        index = combo.count() - 1
    combo.setCurrentIndex(index)


def open_train_segmentation(plugin, project_path: str | None = None) -> TrainSegmentationDialog:
    """Menu and Labeling Tool opener: the dialog, pre-filled with ``project_path`` (or the
    project the Labeling Tool passed in ``plugin.labeling_project``)."""
    project_path = project_path or labeling_tool_project(plugin)
    return show_dialog(TrainSegmentationDialog(main_window(plugin), plugin=plugin,
                                               project_path=project_path))
