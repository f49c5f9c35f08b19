"""What Classify Pixels and Detect Objects share: a dialog that runs a trained model over a raster.

:class:`RasterModelDialog` builds the Input column (raster layer or file, model file and its card
read without torch, optional grid model), puts a subclass's output and run groups beside it,
checks the raster against the model card (bands: a problem; pixel size: a warning), remembers
the last job and starts it in a worker, adding the outputs to the map when it succeeds.
:func:`raster_info` reads a raster's bands, size and pixel size with GDAL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from osgeo import gdal
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import UserError
from ..core.jobs import Job
from ..core.modelfile import read_model_card
from ..core.raster_input import PIXEL_SIZE_TOLERANCE  # the same warning as the job gives
from ..core.wording import for_dialog, plural
from . import messages, settings
from .job_dialog_support import (
    MODEL_FILTER,
    WARNING_COLOR,
    JobDialog,
    browse_file,
    checked_problems,
    explain_fields,
    file_row,
    fit_to_screen,
    form_group,
    lay_out_dialog,
    layer_picker,
    main_window,
    on_change,
    pick_path,
    picked_path,
    problem_label,
    remembered_job,
    select_device,
    show_dialog,
    show_messages,
    show_problems,
    show_value,
    widget_value,
)
from .task import JobManager

RASTER_FILTER = "Rasters (*.tif *.tiff *.vrt *.img *.jp2 *.png);;All files (*)"


def raster_info(path: str) -> dict | None:
    """Bands, size, pixel size and CRS of a raster file (GDAL, cheap), or None if unreadable."""
    if not path:
        return None
    gdal.UseExceptions()
    try:
        ds = gdal.Open(path)
    except RuntimeError:
        return None
    if ds is None:
        return None
    gt = ds.GetGeoTransform()
    info = {"bands": ds.RasterCount, "width": ds.RasterXSize, "height": ds.RasterYSize,
            "pixel_size": (abs(gt[1]), abs(gt[5])) if gt else None, "crs": ds.GetProjection(),
            "unit": "", "area_unit": "map units"}
    srs = ds.GetSpatialRef()
    if srs is not None:
        linear = {"metre": "m", "meter": "m", "foot": "ft", "us survey foot": "ft"}.get(
            (srs.GetLinearUnitsName() or "").lower(), "map units")
        # geographic: pixel sizes in degrees, polygon areas on the ellipsoid in m²
        info["unit"], info["area_unit"] = ("°", "m") if srs.IsGeographic() else (linear, linear)
    ds = None
    return info


class RasterModelDialog(JobDialog):
    """A raster and a trained model → output files. ``job()`` gives the job the values describe.

    A subclass sets the class attributes below and builds its own widgets in
    :meth:`_output_group` and :meth:`_run_group`; it says which widgets change the job
    (:meth:`_value_widgets`), reads and shows the job's own fields (:meth:`job`,
    :meth:`set_job`), which output names to suggest (:meth:`_input_read`) and how the
    outputs reach the map (:meth:`_output_adder`).
    """

    job_cls: type[Job]
    object_name = ""
    settings_key = ""
    ok_text = "OK"
    card_task = ""                      # the model task read_model_card insists on
    card_hint = ""                      # what the card shows, after "Choose a model file to see"
    model_placeholder = ""
    model_tooltip = ""
    input_tooltip = ""
    grid_placeholder = ""
    browse_title = "Raster"
    running = "Running"                 # "Classifying": the verb of the task's name
    pixel_size_advice = ""              # after "… far from the training pixel size (…): "
    bands_advice = ""                   # after "… the model was trained on N: "
    output_fields: tuple[str, ...] = ("output",)   # cleared when reopened: never reused

    def __init__(self, parent: QWidget | None = None, plugin=None, remember: bool = True,
                 project: QgsProject | None = None) -> None:
        super().__init__(parent)
        self.plugin = plugin
        self.remember = remember
        self.project = project or QgsProject.instance()
        self.jobs = getattr(plugin, "jobs", None) or JobManager(None, self)
        self.card: dict | None = None
        self.card_error = ""
        self.input_info: dict | None = None
        self.task = None
        self.setWindowTitle(self.job_cls.title)
        self.setObjectName(self.object_name)
        self._build()
        self.set_job(self._remembered_job())

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        inputs = self._input_group()
        right = QVBoxLayout()
        right.addWidget(self._output_group())
        right.addWidget(self._run_group())
        right.addStretch(1)
        self.warning_label = problem_label(WARNING_COLOR)
        self.reason_label = problem_label()
        cols = QHBoxLayout()
        cols.addWidget(inputs, 1)
        cols.addLayout(right, 1)
        lay_out_dialog(self, cols, self.ok_text, self.warning_label, self.reason_label)
        fit_to_screen(self, 1000, 560)

        explain_fields(self.job_cls, {"input": self.input_combo, "model": self.model_edit,
                                      **self._field_widgets()})
        self.input_combo.layerChanged.connect(lambda _layer: self._input_changed())
        self.model_edit.textChanged.connect(self._model_changed)
        on_change(self._changed, self.grid_edit, *self._value_widgets())

    def _input_group(self) -> QGroupBox:
        inputs, form = form_group("Input")
        self.input_combo = layer_picker("raster_in", self.project)
        self.input_combo.setToolTip(self.input_tooltip)
        form.addRow("Input raster", file_row(self.input_combo, self._browse_input,
                                             tooltip="Choose a raster file"))
        self.input_label = QLabel()
        self.input_label.setStyleSheet("color: #555;")
        form.addRow("", self.input_label)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText(self.model_placeholder)
        self.model_edit.setToolTip(self.model_tooltip)
        form.addRow("Model", file_row(self.model_edit, self._browse_model))
        self.card_view = QTextBrowser()
        self.card_view.setMinimumHeight(150)
        form.addRow("Model card", self.card_view)
        self.grid_edit = QLineEdit()
        self.grid_edit.setPlaceholderText(self.grid_placeholder)
        self.grid_edit.setToolTip(self.job_cls.__dataclass_fields__["grid_model"]
                                  .metadata["param"].help)
        form.addRow("Grid model", file_row(self.grid_edit, lambda: browse_file(
            self, self.grid_edit, "Grid model", MODEL_FILTER)))
        return inputs

    def _output_group(self) -> QGroupBox:
        raise NotImplementedError

    def _run_group(self) -> QGroupBox:
        raise NotImplementedError

    def _field_widgets(self) -> dict:
        """The subclass's widgets by the job field they set (those without a tooltip get
        the field's help)."""
        return {}

    def _value_widgets(self) -> list[QWidget]:
        """The subclass's widgets whose changes re-check the job."""
        return []

    # -- values <-> job ------------------------------------------------------------------------
    def input_path(self) -> str:
        return picked_path(self.input_combo)

    def set_input(self, path: str) -> None:
        """Select the map layer with this source, else offer the file as an extra item."""
        pick_path(self.input_combo, path, [layer for layer in self.project.mapLayers().values()
                                           if isinstance(layer, QgsRasterLayer)])
        self._input_changed()   # also when the combo showed it already (no layerChanged)

    def job(self) -> Job:
        raise NotImplementedError

    def set_job(self, job: Job) -> None:
        raise NotImplementedError

    def confirm(self, job: Job) -> bool:
        """Ask before replacing output files that exist (a GeoPackage output replaces only its
        own layer; the question names the file)."""
        from ..core.outputs import job_outputs
        from .training_dialog_parts import confirm_replacing

        return confirm_replacing(self, [path.partition("|")[0]
                                        for _label, path, folder in job_outputs(job)
                                        if not folder])

    def shared_values(self) -> dict:
        """The fields every apply-a-model dialog shows alike, as the job's keyword arguments:
        INPUT, MODEL, TTA, BATCH_SIZE, TILE_SIZE, GRID_MODEL and DEVICE (a subclass makes the
        widgets ``tta_check``, ``batch_spin``, ``tile_spin``, ``grid_edit``, ``device_combo``)."""
        return {"input": self.input_path(),
                **{name: widget_value(w) for name, w in self._shared_widgets().items()},
                "device": str(self.device_combo.currentData() or "auto")}

    def _shared_widgets(self) -> dict:
        return dict(model=self.model_edit, tta=self.tta_check, batch_size=self.batch_spin,
                    tile_size=self.tile_spin, grid_model=self.grid_edit)

    def show_shared_values(self, job: Job) -> None:
        """Show the fields of :meth:`shared_values` of ``job`` (the input first: it suggests
        the output names that are still empty)."""
        self.set_input(job.input)
        for name, widget in self._shared_widgets().items():
            show_value(widget, getattr(job, name))
        select_device(self.device_combo, job.device)

    # -- reactions -----------------------------------------------------------------------------
    def input_text(self, info: dict) -> str:
        """The line under the input raster: its size, bands and pixel size."""
        px = info["pixel_size"]
        return (f"{info['width']} × {info['height']} px, {plural(info['bands'], 'band')}"
                + (f", pixel size {px[0]:g} {info.get('unit', '')}".rstrip() if px else ""))

    def _input_changed(self) -> None:
        path = self.input_path()
        self.input_info = raster_info(path)
        if self.input_info:
            self.input_label.setText(self.input_text(self.input_info))
            self._input_read(path)
        else:
            self.input_label.setText("Choose a raster layer or file." if not path
                                     else "GDAL cannot read this raster.")
        self._changed()

    def _input_read(self, path: str) -> None:
        """``path`` is a readable raster (:attr:`input_info`): suggest the outputs after it."""

    def card_html(self, card: dict) -> str:
        raise NotImplementedError

    def _model_changed(self, *_args) -> None:
        path = self.model_edit.text().strip()
        self.card, self.card_error = None, ""
        if path:
            try:
                self.card = read_model_card(path, self.card_task)
            except UserError as exc:
                self.card_error = f"{exc.message} {exc.fix}".strip()
        if self.card:
            self.card_view.setHtml(self.card_html(self.card))
        else:
            self.card_view.setPlainText(self.card_error or "Choose a model file to see its "
                                                           f"{self.card_hint}")
        self._changed()

    def warnings(self) -> list[str]:
        """Things that do not stop the run but may spoil it."""
        out = []
        if self.card and self.input_info:
            px, tpx = self.input_info.get("pixel_size"), self.card.get("pixel_size")
            if px and tpx and tpx[0]:
                ratio = px[0] / float(tpx[0])
                if ratio > PIXEL_SIZE_TOLERANCE or ratio < 1 / PIXEL_SIZE_TOLERANCE:
                    out.append(f"The input pixel size ({px[0]:g}) is far from the training "
                               f"pixel size ({float(tpx[0]):g}): {self.pixel_size_advice}")
        return out

    def band_problem(self, bands: int, trained: int) -> str:
        """Why a raster of ``bands`` bands cannot go through a model trained on ``trained``."""
        return (f"The input raster has {plural(bands, 'band')} but the model was trained on "
                f"{trained}: {self.bands_advice}")

    def output_problems(self, job: Job) -> list[str]:
        """Problems of the optional outputs (ticked without a file name)."""
        return []

    def problems(self) -> list[str]:
        """Why the job cannot start (OK is disabled while there is any)."""
        job = self.job()
        out = []
        if not job.input:
            out.append("Choose an input raster.")
        elif self.input_info is None:
            out.append(f"GDAL cannot read {job.input}: choose another raster.")
        if self.card_error:
            out.append(self.card_error)
        if self.card and self.input_info and self.input_info["bands"] != int(self.card["bands"]):
            out.append(self.band_problem(self.input_info["bands"], self.card["bands"]))
        out += self.output_problems(job)
        own = checked_problems(job)
        if not job.input:
            own = [p for p in own if "(INPUT) is required" not in p]
        if not job.model:
            own = [p for p in own if "(MODEL) is required" not in p]
            out.append("Choose a model file.")
        return list(dict.fromkeys(for_dialog(p, self.job_cls) for p in out + own))

    def _changed(self, *_args) -> None:
        show_problems(self.reason_label, self.ok_button, self.problems())
        show_messages(self.warning_label, self.warnings())

    # -- browsing ------------------------------------------------------------------------------
    def _browse_input(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.browse_title, "", RASTER_FILTER)
        if path:
            self.set_input(path)

    def _browse_model(self) -> None:
        browse_file(self, self.model_edit, "Model", MODEL_FILTER)

    # -- remembering ---------------------------------------------------------------------------
    def _remembered_job(self) -> Job:
        job = self.job_cls(device=settings.device())
        if self.remember:
            job = remembered_job(self.settings_key, job)
        for name in self.output_fields:
            setattr(job, name, "")
        return job

    # -- running -------------------------------------------------------------------------------
    def task_title(self, job: Job) -> str:
        return f"{self.running} {Path(job.input).name}"

    def _output_adder(self, job: Job, card: dict) -> Callable[[dict, QgsProject], None]:
        """What adds the outputs of ``job``'s result to a project (called after the dialog may
        be gone: it must not use the dialog)."""
        raise NotImplementedError

    def start(self, job: Job):
        """Run ``job`` in a worker; its outputs are added to the map when it succeeds."""
        if self.plugin is None:
            raise UserError(f"{self.running} needs the plugin's job manager.",
                            "Open the dialog from the Deep Learning menu.")
        add = self._output_adder(job, dict(self.card or {}))
        for w in self.warnings():
            messages.log(w, "warning")
        self.task = self.plugin.jobs.start(job, self.task_title(job))
        project = self.project

        def done(result: dict) -> None:
            if not sip.isdeleted(project):
                add(result, project)

        self.task.succeeded.connect(done)
        return self.task


def open_raster_model_dialog(dialog_cls: type[RasterModelDialog], plugin,
                             model_path: str | None = None) -> RasterModelDialog:
    """Menu opener: the active raster layer as input; ``model_path`` pre-fills the model (e.g.
    after training)."""
    dialog = dialog_cls(main_window(plugin), plugin=plugin)
    layer = plugin.iface.activeLayer() if getattr(plugin, "iface", None) else None
    if isinstance(layer, QgsRasterLayer):
        dialog.set_input(layer.source())
    if model_path:
        dialog.model_edit.setText(model_path)
    return show_dialog(dialog)
