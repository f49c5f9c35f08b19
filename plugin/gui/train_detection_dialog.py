"""The Train Object Detection dialog: ENVI's controls, a live pre-flight summary (patches per split
and boxes per class, computed in a worker) and the Training Model window while it trains. What it
shares with the other training dialogs is in :mod:`.training_dialog_parts`."""

from __future__ import annotations

import html

from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTextBrowser,
    QWidget,
)

from ..core.detection.jobs import (
    ARCHITECTURE_CHOICES,
    ARCHITECTURE_LABELS,
    DetectionSummaryJob,
    TrainObjectDetectionJob,
)
from ..core.wording import for_dialog, plural
from . import settings
from .job_dialog_support import (
    browse_file,
    checked_problems,
    device_combo,
    double_spin,
    explain_fields,
    file_row,
    fit_to_screen,
    form_group,
    int_spin,
    lay_out_dialog,
    main_window,
    on_change,
    problem_label,
    remembered_job,
    select_device,
    show_dialog,
    show_problems,
    show_value,
    single_shot_timer,
    widget_value,
)
from .task import JobManager
from .training_dialog_parts import (
    TrainingDialog,
    model_output_row,
    start_weights_row,
    suggest_model_outputs,
)

SETTINGS_KEY = "deep_learning_trainer/train_object_detection/last_job"
_SUMMARY_FIELDS = ("project", "patch_size", "split", "shuffle", "seed", "pad_small_features",
                   "feature_patch_percentage", "background_patch_ratio", "epochs", "batch_size",
                   "steps_per_epoch", "max_patches")


def detection_summary_html(summary: dict) -> str:
    """Patches per split and boxes per class as a compact rich-text table."""
    patches = summary.get("patches", {})
    rows = ["<tr><th></th><th align='right'>Training</th><th align='right'>Validation</th></tr>"]
    for key, label in (("feature", "Patches with boxes"), ("background", "Background patches")):
        rows.append(f"<tr><td>{label}</td><td align='right'>{patches.get('train', {}).get(key, 0)}"
                    f"</td><td align='right'>{patches.get('validation', {}).get(key, 0)}</td></tr>")
    boxes = summary.get("boxes", {})
    colours = {c["name"]: c.get("color", "#000") for c in summary.get("classes", [])}
    names = sorted(set(boxes.get("train", {})) | set(boxes.get("validation", {})) | set(colours))
    if names:
        rows.append("<tr><td colspan='3'><i>Boxes per class</i></td></tr>")
    for name in names:
        t, v = boxes.get("train", {}).get(name, 0), boxes.get("validation", {}).get(name, 0)
        style = " style='color:#b00020'" if not t or not v else ""
        rows.append(f"<tr{style}><td><span style='color:{html.escape(colours.get(name, '#000'))}'>"
                    f"□</span> {html.escape(name)}</td><td align='right'>{t}</td>"
                    f"<td align='right'>{v}</td></tr>")
    text = f"<table cellspacing='0' cellpadding='2' width='100%'>{''.join(rows)}</table>"
    text += (f"<p style='color:#555'>Patches of {summary.get('patch_size', '?')} px; largest box "
             f"{summary.get('largest_box_px', 0):g} px.</p>")
    steps = summary.get("steps")
    if steps:
        text += (f"<p>Training length: <b>{plural(steps['total'], 'optimiser step')}</b> "
                 f"({plural(steps['epochs'], 'epoch')} × "
                 f"{plural(steps['per_epoch'], 'batch', 'batches')} of "
                 f"{plural(steps['batch_size'], 'random window')}).</p>")
    if summary.get("warnings"):
        items = "".join(f"<li>{html.escape(w)}</li>" for w in summary["warnings"])
        text += f"<ul style='color:#a05a00'>{items}</ul>"
    return text


class TrainDetectionDialog(TrainingDialog):
    """Train Object Detection. ``job()`` gives the job the values describe."""

    settings_key = SETTINGS_KEY
    summary_fields = _SUMMARY_FIELDS
    summary_title = "Detection sampling summary"

    def __init__(self, parent: QWidget | None = None, plugin=None, project_path: str | None = None,
                 remember: bool = True, live_summary: bool = True) -> None:
        super().__init__(parent)
        self.plugin = plugin
        self.remember = remember
        self.live_summary = live_summary
        self.jobs = getattr(plugin, "jobs", None) or JobManager(None, self)
        self.task = None
        self.window = None
        self.summary: dict | None = None
        self.summary_error = ""
        self._timer = single_shot_timer(self, 600, self._start_summary)
        self.setWindowTitle("Train Object Detection")
        self.setObjectName("TrainDetectionDialog")
        self._build()
        job = self._remembered_job()
        if project_path:
            job.project = project_path
        self.set_job(job)

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        data, f = form_group("Training data")
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("Labeling project (.gpkg) or COCO/VOC/YOLO chips "
                                             "folder")
        f.addRow("Project", file_row(self.project_edit, lambda: browse_file(
            self, self.project_edit, "Labeling project", "Labeling project (*.gpkg)")
            and self._suggest_outputs()))
        self.split_spin = double_spin(0, 100, 1, 5, " % training")
        f.addRow("Split", self.split_spin)
        self.shuffle_check = QCheckBox("Shuffle rasters")
        f.addRow("", self.shuffle_check)
        self.pad_check = QCheckBox("Pad small features (to 25 px)")
        f.addRow("", self.pad_check)
        self.patch_spin = int_spin(0, 4096, 32, " px", special="Automatic (from the objects)")
        f.addRow("Patch size", self.patch_spin)
        self.feature_spin = double_spin(0, 1, 2, 0.05)
        f.addRow("Feature patch percentage", self.feature_spin)
        self.background_spin = double_spin(0, 100, 2, 0.05)
        f.addRow("Background patch ratio", self.background_spin)
        self.summary_status = QLabel()
        self.summary_view = QTextBrowser()
        self.summary_view.setMinimumHeight(150)
        f.addRow(self.summary_status)
        f.addRow(self.summary_view)

        model, m = form_group("Model and training")
        self.arch_combo = QComboBox()
        for a in ARCHITECTURE_CHOICES:
            self.arch_combo.addItem(ARCHITECTURE_LABELS[a], a)
        m.addRow("Architecture", self.arch_combo)
        self.start_combo, start_row = start_weights_row(self, TrainObjectDetectionJob)
        m.addRow("Start weights", start_row)
        self.epochs_spin = int_spin(1, 100000)
        m.addRow("Number of epochs", self.epochs_spin)
        self.batch_spin = int_spin(1, 1024)
        m.addRow("Patches per batch", self.batch_spin)
        self.lr_spin = double_spin(1e-7, 1.0, 6, 0.0001)
        m.addRow("Learning rate", self.lr_spin)
        self.rot_check = QCheckBox("Rotation (90° turns)")
        self.scale_check = QCheckBox("Scale (± 20 %)")
        self.flip_check = QCheckBox("Flips")
        aug = QHBoxLayout()
        for c in (self.rot_check, self.scale_check, self.flip_check):
            aug.addWidget(c)
        m.addRow("Augmentation", aug)
        self.device_combo = device_combo()
        m.addRow("Device", self.device_combo)
        self.output_edit = QLineEdit()
        m.addRow("Output model (best)", model_output_row(self, self.output_edit, "Best model"))
        self.last_edit = QLineEdit()
        m.addRow("Output last model", model_output_row(self, self.last_edit, "Last model"))
        self.background_check = QCheckBox("Run in the background (no Training Model window)")
        self.tensorboard_check = QCheckBox("Open TensorBoard")
        m.addRow("", self.background_check)
        m.addRow("", self.tensorboard_check)
        m.addRow("", self.preview_row())

        self.reason_label = problem_label()
        cols = QHBoxLayout()
        cols.addWidget(data, 1)
        cols.addWidget(model, 1)
        lay_out_dialog(self, cols, "Train", self.reason_label)
        fit_to_screen(self, 1000, 600)
        self.project_edit.editingFinished.connect(self._suggest_outputs)
        explain_fields(TrainObjectDetectionJob, {
            "project": self.project_edit, "split": self.split_spin,
            "patch_size": self.patch_spin, "feature_patch_percentage": self.feature_spin,
            "background_patch_ratio": self.background_spin, "architecture": self.arch_combo,
            "epochs": self.epochs_spin, "batch_size": self.batch_spin,
            "learning_rate": self.lr_spin, "device": self.device_combo,
            "output_model": self.output_edit, "output_last_model": self.last_edit})
        on_change(self._changed, self.project_edit, self.output_edit, self.last_edit,
                  self.shuffle_check, self.pad_check, self.rot_check, self.scale_check,
                  self.flip_check, self.split_spin, self.patch_spin, self.feature_spin,
                  self.background_spin, self.epochs_spin, self.batch_spin, self.lr_spin,
                  self.arch_combo, self.device_combo)
        self.start_combo.currentTextChanged.connect(self._changed)

    # -- values <-> job ------------------------------------------------------------------------
    def _fields(self) -> dict:
        """The job fields shown one to one by a widget (field name → widget)."""
        return dict(architecture=self.arch_combo, patch_size=self.patch_spin,
                    split=self.split_spin, shuffle=self.shuffle_check,
                    pad_small_features=self.pad_check, feature_patch_percentage=self.feature_spin,
                    background_patch_ratio=self.background_spin, epochs=self.epochs_spin,
                    batch_size=self.batch_spin, learning_rate=self.lr_spin,
                    augment_rotation=self.rot_check, augment_scale=self.scale_check,
                    augment_flip=self.flip_check)

    def job(self) -> TrainObjectDetectionJob:
        return TrainObjectDetectionJob(
            project=self.project_edit.text().strip(),
            **{name: widget_value(w) for name, w in self._fields().items()},
            device=str(self.device_combo.currentData() or "auto"),
            start_weights=self.start_combo.currentText().strip(),
            output_model=self.output_edit.text().strip(),
            output_last_model=self.last_edit.text().strip())

    def set_job(self, job: TrainObjectDetectionJob) -> None:
        self.output_edit.setText(job.output_model)
        self.last_edit.setText(job.output_last_model)
        self.project_edit.setText(job.project)
        self._suggest_outputs()
        for name, widget in self._fields().items():
            show_value(widget, getattr(job, name))
        select_device(self.device_combo, job.device)
        self.start_combo.setEditText(job.start_weights)
        self._changed()

    def _remembered_job(self) -> TrainObjectDetectionJob:
        job = TrainObjectDetectionJob(device=settings.device())
        if self.remember:
            job = remembered_job(SETTINGS_KEY, job)
        job.output_model = job.output_last_model = ""   # never overwrite a model unasked
        return job

    # -- reactions -----------------------------------------------------------------------------
    def _suggest_outputs(self) -> None:
        """Model names after the project, when the project is chosen or typed and left (never
        from a half-typed path) and the outputs are empty."""
        suggest_model_outputs(self.project_edit.text(), "detector", self.output_edit,
                              self.last_edit)

    def problems(self) -> list[str]:
        out = checked_problems(self.job())
        if self.summary_error:
            out.append(self.summary_error)
        elif self.summary and not self.summary.get("patches", {}).get("train", {}).get("feature"):
            out.append("No training patch holds a box: label more objects or change the split.")
        return list(dict.fromkeys(for_dialog(p, TrainObjectDetectionJob) for p in out))

    def _changed(self, *_args) -> None:
        self._schedule_summary()
        show_problems(self.reason_label, self.ok_button, self.problems())

    # -- pre-flight summary --------------------------------------------------------------------
    def summary_job(self) -> DetectionSummaryJob:
        job = self.job()
        return DetectionSummaryJob(**{k: getattr(job, k) for k in _SUMMARY_FIELDS})

    def set_summary(self, summary: dict | None, error: str = "") -> None:
        self.summary, self.summary_error = summary, error
        if summary is not None:
            self.summary_status.setText("What training will sample:")
            self.summary_view.setHtml(detection_summary_html(summary))
        else:
            self.summary_status.setText("The sampling failed:")
            self.summary_view.setPlainText(error)
        show_problems(self.reason_label, self.ok_button, self.problems())

def open_train_detection(plugin, project_path: str | None = None) -> TrainDetectionDialog:
    """Menu opener, pre-filled with ``project_path`` (or the Labeling Tool's project)."""
    project_path = project_path or getattr(plugin, "labeling_project", None) or None
    return show_dialog(TrainDetectionDialog(main_window(plugin), plugin=plugin,
                                            project_path=project_path))
