"""Dialogs of the grid model and chip classifier tools, built from the jobs' parameter specs
(the same specs Processing uses), with the shared job dialog support: file rows, the reason
label that keeps OK disabled, the device list and the remembered last job. Training opens the
Training Model window (unless run in the background); classifying adds the output to the map
styled by class.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qgis.core import QgsProject
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..core.classification.jobs import (
    ClassifyChipsJob,
    ClassifyGridJob,
    TrainChipClassifierJob,
    TrainGridModelJob,
)
from ..core.errors import UserError
from ..core.jobs import Job
from ..core.params import ParamSpec, param_fields
from ..core.wording import for_dialog
from . import messages, settings
from .job_dialog_support import (
    browse_file,
    browse_folder,
    browse_save_file,
    checked_problems,
    file_row,
    fill_devices,
    fit_to_screen,
    form_group,
    labeling_tool_project,
    lay_out_dialog,
    layer_picker,
    main_window,
    pick_path,
    picked_path,
    problem_label,
    remembered_job,
    scrolled,
    select_device,
    show_dialog,
    show_problems,
    single_shot_timer,
    spec_tooltip,
)
from .map_preview import PREVIEW_FIELDS
from .model_card import card_html
from .task import JobManager
from .training_dialog_parts import (
    SUMMARY_WAITING,
    TrainingDialog,
    chip_summary_html,
    confirm_replacing,
    rows_summary_html,
    start_weights_row,
    suggest_model_outputs,
    summary_html,
)

_FILE_KINDS = ("file_in", "raster_in", "vector_in", "vector_or_file_in", "project_in",
               "model_in")
_SAVE_KINDS = ("file_out", "model_out")
#: The field whose file the outputs are named after, and the word or ending added to its stem.
NAMED_AFTER = {"train_grid_model": ("project", "grid"),
               "train_chip_classifier": ("input", "chip_classifier"),
               "classify_grid": ("input", "_grid_cells.gpkg"),
               "classify_chips": ("input", "_chip_classes"),
               "train_instance_segmentation": ("project", "instances"),
               "segment_objects": ("input", "_objects.gpkg"),
               "train_pixel_regression": ("project", "regression"),
               "predict_values": ("input", "_values.tif")}


def classify_output_ending(kind: str, source: Path) -> str:
    """The output name ending a classify form suggests after ``source`` (Classify Chips: a CSV
    for a chips folder, a GeoPackage for a vector file)."""
    ending = NAMED_AFTER[kind][1]
    if kind == "classify_chips":
        ending += ".gpkg" if source.is_file() else ".csv"
    return ending


def _summary_of(kind: str):
    """``train job → the summary job of kind`` (a subclass of the train job taking its
    values)."""
    def make(job):
        from ..core.jobs import job_class

        return job_class(kind)(**{f.name: getattr(job, f.name)
                                  for f in dataclasses.fields(job)})

    return make


#: Train forms with a live pre-flight summary: job kind → (the summary job of a train job,
#: the line above the summary, the summary as rich text).
SUMMARIES = {
    "train_grid_model": (_summary_of("grid_summary"),
                         "What training will sample (each grid cell is one patch):",
                         summary_html),
    "train_chip_classifier": (_summary_of("chip_summary"), "What training will use:",
                              chip_summary_html),
    "train_instance_segmentation": (_summary_of("instance_summary"),
                                    "What training will sample:", rows_summary_html),
    "train_pixel_regression": (_summary_of("regression_summary"),
                               "What training will learn from:", rows_summary_html),
}


def ok_text(job_cls: type[Job]) -> str:
    """The OK button of a job's form: "Train" for training, else the verb of its title
    ("Classify" for Classify Grid), as Classify Pixels and Detect Objects say theirs."""
    return "Train" if job_cls.kind.startswith("train_") else job_cls.title.split()[0]


def model_card_html(card: dict) -> str:
    """A model card of any family as rich text: its family, bands, sizes, classes in their
    colours and the validation figures it was saved with."""
    from ..core.families import task_title

    rows = [("Trained for", task_title(card.get("task"))),
            ("Architecture", card.get("architecture", "")),
            ("Bands", card.get("bands", "?"))]
    for key, label in (("grid_size", "Grid size"), ("patch_size", "Patch size"),
                       ("max_side", "Chip size")):
        if card.get(key):
            rows.append((label, f"{card[key]} px"))
    metrics = {k: v for k, v in (card.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    rows += [(k.replace("_", " "), f"{v:.3g}") for k, v in list(metrics.items())[:4]]
    return card_html(rows, card.get("classes", []))


class JobFormDialog(TrainingDialog):
    """A form for one job class, built from its parameter specs: a widget per parameter
    (advanced ones in a group), layer pickers for layers, the model card under a model to
    apply, tooltips with units and ranges, Save/Load job, and for training the Training Model
    window and TensorBoard as in the other train dialogs."""

    def __init__(self, job_cls: type[Job], parent: QWidget | None = None, plugin=None,
                 remember: bool = True, project: QgsProject | None = None) -> None:
        super().__init__(parent)
        self.job_cls, self.plugin, self.remember = job_cls, plugin, remember
        self.project = project or QgsProject.instance()
        self.jobs = getattr(plugin, "jobs", None) or JobManager(None, self)
        self.live_summary = True
        self.task = self.window = None
        self.card: dict | None = None
        self.card_view: QTextBrowser | None = None
        self.settings_key = f"deep_learning_trainer/{job_cls.kind}/last_job"
        self.setWindowTitle(job_cls.title)
        self.setObjectName(f"{job_cls.kind}_dialog")
        self.widgets: dict[str, tuple[ParamSpec, QWidget]] = {}
        outer = QVBoxLayout()
        form_widget = QWidget()
        layout = QVBoxLayout(form_widget)
        top = QHBoxLayout()   # the form; beside it the pre-flight summary when there is one
        top.addWidget(scrolled(form_widget), 3)
        outer.addLayout(top, 1)
        main, advanced = QFormLayout(), QFormLayout()
        self.training = job_cls.kind.startswith("train_")
        for f, ps in param_fields(job_cls):
            if f.name in PREVIEW_FIELDS:   # "Preview on the map" below sets them
                continue
            widget, row = self._widget(f.name, ps)
            self.widgets[f.name] = (ps, widget)
            said = any(w in ps.label.lower() for w in ("optional", "empty", "0 ="))
            label = ps.label + (" (optional)" if ps.optional and not said else "")
            (advanced if ps.advanced else main).addRow(label, row)
            if ps.kind == "model_in" and f.name == "model" and not self.training:
                self.card_view = QTextBrowser()   # what the model to apply was trained for
                self.card_view.setMaximumHeight(150)
                self.card_view.setToolTip("The model's card: its classes, bands and sizes.")
                main.addRow("Model card", self.card_view)
                widget.textChanged.connect(self._model_changed)
        layout.addLayout(main)
        self.summary_status = self.summary_view = None
        if job_cls.kind in SUMMARIES:   # what training will sample, computed in a worker
            group, summary_form = form_group("Pre-flight summary")
            self.summary_status = QLabel(SUMMARY_WAITING)
            self.summary_view = QTextBrowser()
            self.summary_view.setMinimumHeight(170)
            summary_form.addRow(self.summary_status)
            summary_form.addRow(self.summary_view)
            top.addWidget(group, 2)
            summary = SUMMARIES[job_cls.kind][0](job_cls())
            self.summary_fields = getattr(summary, "summary_inputs", None) or tuple(
                f.name for f in dataclasses.fields(summary))
            self._timer = single_shot_timer(self, 600, self._start_summary)
        box = QGroupBox("Advanced")
        box.setCheckable(True)
        box.setChecked(False)
        inner = QWidget()
        inner.setLayout(advanced)
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(inner)
        box.toggled.connect(inner.setVisible)
        inner.setVisible(False)
        layout.addWidget(box)
        layout.addStretch(1)
        self.background_check = QCheckBox("Run in the background (no Training Model window)")
        self.tensorboard_check = QCheckBox("Open TensorBoard")
        self.background_check.setToolTip("Train without the Training Model window; the task "
                                         "manager shows the progress.")
        self.tensorboard_check.setToolTip("Follow the losses and metrics in TensorBoard (in "
                                          "the browser) while it trains.")
        if self.training:
            checks = QHBoxLayout()
            checks.addWidget(self.background_check)
            checks.addWidget(self.tensorboard_check)
            checks.addStretch(1)
            outer.addLayout(checks)
            outer.addWidget(self.preview_row(self.project, job_cls.kind))
        self.reason_label = problem_label()
        lay_out_dialog(self, outer, ok_text(job_cls), self.reason_label)
        fit_to_screen(self, 1060 if self.summary_view is not None else 640,
                      form_widget.sizeHint().height() + 140)
        job = job_cls(device=settings.device())
        if remember:
            job = remembered_job(self.settings_key, job)
        for name in self.output_fields():   # never reuse outputs
            setattr(job, name, "")
        self.set_job(job)
        source = NAMED_AFTER.get(job_cls.kind, ("",))[0]
        if source in self.widgets:   # a typed path once left, a layer once chosen
            widget = self.widgets[source][1]
            (widget.editingFinished if isinstance(widget, QLineEdit)
             else widget.layerChanged).connect(self.suggest_outputs)
        self.suggest_outputs()
        if self.card_view is not None:
            self._model_changed()
        self._changed()

    def output_fields(self) -> list[str]:
        """The job fields that name files or folders this job writes."""
        return [name for name, (ps, _w) in self.widgets.items()
                if ps.kind in _SAVE_KINDS or ps.kind == "folder_out"]

    def suggest_outputs(self) -> None:
        """Output names after the source file (project, chips folder, raster) when that file
        exists and the outputs are empty: on leaving the source field or choosing a file,
        never per keystroke."""
        if self.job_cls.kind not in NAMED_AFTER:
            return
        field, word = NAMED_AFTER[self.job_cls.kind]
        text = str(getattr(self.job(), field) or "")
        if self.training:
            last = self.widgets.get("output_last_model", (None, None))[1]
            suggest_model_outputs(text, word, self.widgets["output_model"][1], last)
            return
        source, out = Path(text.strip()), self.widgets["output"][1]
        if text.strip() and source.name and source.exists() and not out.text().strip():
            ending = classify_output_ending(self.job_cls.kind, source)
            out.setText(f"{settings.output_base(source)}{ending}")

    def confirm(self, job: Job) -> bool:
        """Ask before replacing output files that exist."""
        return confirm_replacing(self, [getattr(job, name) for name in self.output_fields()
                                        if self.widgets[name][0].kind in _SAVE_KINDS])

    # -- widgets -------------------------------------------------------------------------------
    def _widget(self, name: str, ps: ParamSpec):
        tip = spec_tooltip(ps)
        if name == "start_weights":
            w, row = start_weights_row(self, self.job_cls)
            w.currentTextChanged.connect(self._changed)
            return w, row
        if ps.kind in ("raster_in", "vector_in"):
            w = layer_picker(ps.kind, self.project)
            w.currentIndexChanged.connect(self._changed)
            w.setToolTip(tip)
            return w, file_row(w, lambda p=ps, c=w: self._browse_layer(c, p),
                               tooltip="Choose a file")
        if name == "device":
            w = QComboBox()
            fill_devices(w, [], "auto")
            w.currentTextChanged.connect(self._changed)
            row = w
        elif ps.kind == "bool":
            w = QCheckBox()
            w.toggled.connect(self._changed)
            row = w
        elif ps.kind == "enum":
            w = QComboBox()
            labels = dict(zip(ps.choices, ps.choice_labels or ps.choices))
            for choice in ps.choices:
                w.addItem(labels[choice], choice)
            w.currentIndexChanged.connect(self._changed)
            row = w
        elif ps.kind == "int":
            w = QSpinBox()
            w.setRange(int(ps.minimum if ps.minimum is not None else -10**9),
                       int(ps.maximum if ps.maximum is not None else 10**9))
            w.valueChanged.connect(self._changed)
            row = w
        elif ps.kind == "float":
            w = QDoubleSpinBox()
            w.setDecimals(6 if (ps.minimum or 0) and ps.minimum < 1e-3 else
                          0 if ps.maximum == 100 else 3)   # a percentage: whole numbers
            w.setRange(float(ps.minimum if ps.minimum is not None else -1e12),
                       float(ps.maximum if ps.maximum is not None else 1e12))
            w.valueChanged.connect(self._changed)
            row = w
        else:
            w = QLineEdit()
            w.textChanged.connect(self._changed)
            row = w
            if ps.kind in _FILE_KINDS:
                row = file_row(w, lambda e=w, p=ps: self._browse_in(e, p))
            elif ps.kind in _SAVE_KINDS:
                row = file_row(w, lambda e=w, p=ps: self._browse_out(e, p))
            elif ps.kind in ("folder_in", "folder_out"):
                row = file_row(w, lambda e=w, p=ps: browse_folder(self, e, p.label)
                               and self.suggest_outputs(), "Folder…")
                if ps.kind == "folder_in":   # chips folder, or a project / vector file
                    button = QPushButton("File…")
                    button.clicked.connect(lambda _=False, e=w, p=ps: browse_file(
                        self, e, p.label, "Labeling project or vector (*.gpkg *.shp "
                        "*.geojson);;All files (*)") and self.suggest_outputs())
                    row.addWidget(button)
        w.setToolTip(tip)
        return w, row

    def _browse_layer(self, combo, ps: ParamSpec) -> None:
        path, _ = QFileDialog.getOpenFileName(self, ps.label, picked_path(combo),
                                              ps.file_filter or "All files (*)")
        if path:
            self._pick(combo, path)
            self.suggest_outputs()

    def _pick(self, combo, path: str) -> None:
        pick_path(combo, path, self.project.mapLayers().values())
        self._changed()

    def _model_changed(self) -> None:
        """Show the card of the model to apply (or why it cannot be read)."""
        from ..core.errors import UserError
        from ..core.modelfile import read_model_card

        path = self.widgets["model"][1].text().strip()
        self.card = None
        if not path:
            self.card_view.setPlainText("Choose a model file to see its classes and bands.")
            return
        try:
            self.card = read_model_card(path, task=None)
        except UserError as exc:
            self.card_view.setPlainText(f"{exc.message} {exc.fix}".strip())
            return
        self.card_view.setHtml(model_card_html(self.card))

    def _browse_in(self, edit: QLineEdit, ps: ParamSpec) -> None:
        if browse_file(self, edit, ps.label, ps.file_filter or "All files (*)"):
            self.suggest_outputs()

    def _browse_out(self, edit: QLineEdit, ps: ParamSpec) -> None:
        if ps.kind == "model_out":
            suffix = ".dltmodel.safetensors"
        elif self.job_cls.kind == "classify_chips":   # the format follows the input
            suffix = ".gpkg" if Path(self.job().input).is_file() else ".csv"
        else:
            suffix = ".gpkg" if "gpkg" in ps.file_filter else ".csv"
        browse_save_file(self, edit, ps.label, ps.file_filter or "All files (*)", suffix)

    def set_job(self, job: Job) -> None:
        for name, (ps, w) in self.widgets.items():
            value = getattr(job, name)
            if ps.kind in ("raster_in", "vector_in"):
                self._pick(w, str(value or ""))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif name == "device":
                select_device(w, str(value))
            elif name == "start_weights":
                w.setEditText(str(value))
            elif isinstance(w, QComboBox):
                w.setCurrentIndex(max(w.findData(value), 0))
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                w.setValue(value)
            elif ps.kind == "str_list":
                w.setText(", ".join(str(v) for v in value or []))
            elif ps.kind == "raster_list":   # paths: ";" (a file name may hold a comma)
                w.setText("; ".join(str(v) for v in value or []))
            else:
                w.setText(str(value or ""))

    def job(self) -> Job:
        values = {}
        for name, (ps, w) in self.widgets.items():
            if ps.kind in ("raster_in", "vector_in"):
                values[name] = picked_path(w)
            elif isinstance(w, QCheckBox):
                values[name] = w.isChecked()
            elif name == "device":
                values[name] = (w.currentData() or w.currentText() or "auto")
            elif name == "start_weights":
                values[name] = w.currentText().strip()
            elif isinstance(w, QComboBox):
                values[name] = w.currentData()
            elif isinstance(w, QSpinBox):
                values[name] = int(w.value())
            elif isinstance(w, QDoubleSpinBox):
                values[name] = float(w.value())
            elif ps.kind in ("str_list", "raster_list"):
                sep = ";" if ps.kind == "raster_list" else ","
                values[name] = [t.strip() for t in w.text().split(sep) if t.strip()]
            else:
                values[name] = w.text().strip()
        return dataclasses.replace(self.job_cls(), **values)

    def problems(self) -> list[str]:
        return [for_dialog(p, self.job_cls) for p in checked_problems(self.job())]

    def _changed(self, *_args) -> None:
        if hasattr(self, "reason_label"):
            show_problems(self.reason_label, self.ok_button, self.problems())
            if self.summary_view is not None:
                self._schedule_summary()

    # -- pre-flight summary (grid model: the cells as patches of the sampling summary) -------
    def summary_job(self) -> Job:
        return SUMMARIES[self.job_cls.kind][0](self.job())

    def summary_ready(self, job: Job) -> bool:
        source = (getattr(job, "project", "") or getattr(job, "input", "")
                  or next(iter(getattr(job, "rasters", None) or []), ""))
        return bool(source) and Path(source).exists() and super().summary_ready(job)

    def set_summary(self, summary: dict | None, error: str = "") -> None:
        self.summary, self.summary_error = summary, error
        if summary is not None:
            self.summary_status.setText(SUMMARIES[self.job_cls.kind][1])
            self.summary_view.setHtml(SUMMARIES[self.job_cls.kind][2](summary))
        else:
            self.summary_status.setText("The sampling failed:")
            self.summary_view.setPlainText(str(error))

    # -- running -------------------------------------------------------------------------------
    def start(self, job: Job):
        if self.plugin is None:
            raise UserError(f"{self.job_cls.title} needs the plugin's job manager.",
                            "Open the dialog from the Deep Learning menu.")
        if self.training:   # the Training Model window and TensorBoard as chosen
            return TrainingDialog.start(self, job)
        self.task = self.plugin.jobs.start(job, f"Classifying {Path(job.output).name}")
        project = self.project

        def done(result: dict) -> None:
            out = result.get("output", "")
            if out.lower().endswith(".gpkg") and not sip.isdeleted(project):
                from .output_layers import add_class_layer

                add_class_layer(out, result.get("classes") or [], Path(out).stem, project,
                                result.get("output_layer"))
            elif out.lower().endswith((".tif", ".tiff")) and not sip.isdeleted(project):
                from .output_layers import add_value_raster

                add_value_raster(out, Path(out).stem, project)
            elif out:
                messages.log(f"{self.job_cls.title}: wrote {out}.")

        self.task.succeeded.connect(done)
        return self.task


def open_form(job_cls: type[Job], plugin, field: str = "",
              value: str | None = None) -> JobFormDialog:
    """The form of ``job_cls`` with the remembered values, ``field`` set to ``value`` if any."""
    dialog = JobFormDialog(job_cls, main_window(plugin), plugin=plugin)
    if value:   # outputs named after this source, not the remembered one
        dialog.set_job(dataclasses.replace(dialog.job(), **{field: value},
                                           **dict.fromkeys(dialog.output_fields(), "")))
        dialog.suggest_outputs()
        dialog._changed()
    return show_dialog(dialog)


def project_or_labeling_tool(plugin, path: str | None) -> str | None:
    """``path``, else the Labeling Tool's project (:func:`labeling_tool_project`), as the
    other train dialogs start."""
    return path or labeling_tool_project(plugin)


def open_train_grid_model(plugin, project_path: str | None = None) -> JobFormDialog:
    return open_form(TrainGridModelJob, plugin, "project",
                     project_or_labeling_tool(plugin, project_path))


def open_classify_grid(plugin, model_path: str | None = None) -> JobFormDialog:
    return open_form(ClassifyGridJob, plugin, "model", model_path)


def open_train_chip_classifier(plugin, input_path: str | None = None) -> JobFormDialog:
    return open_form(TrainChipClassifierJob, plugin, "input",
                     project_or_labeling_tool(plugin, input_path))


def open_classify_chips(plugin, model_path: str | None = None) -> JobFormDialog:
    return open_form(ClassifyChipsJob, plugin, "model", model_path)


def open_train_pixel_regression(plugin, project_path: str | None = None) -> JobFormDialog:
    from ..core.regression.jobs import TrainPixelRegressionJob

    return open_form(TrainPixelRegressionJob, plugin, "project",
                     project_or_labeling_tool(plugin, project_path))


def open_predict_values(plugin, model_path: str | None = None) -> JobFormDialog:
    from ..core.regression.jobs import PredictValuesJob

    return open_form(PredictValuesJob, plugin, "model", model_path)
