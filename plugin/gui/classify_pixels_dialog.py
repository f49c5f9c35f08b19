"""The Classify Pixels dialog: a raster and a trained model → class raster (and polygons).

The model card is read from the file header without torch (:func:`read_model_card`); the input
raster's bands and pixel size are read with GDAL. The job runs in a worker
(``plugin.jobs.start``); on success the outputs are added to the map in the class colours.
"""

from __future__ import annotations

import html
from pathlib import Path

from osgeo import gdal
from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import UserError
from ..core.segmentation.jobs import ARCHITECTURE_LABELS, ClassifyPixelsJob
from ..core.segmentation.modelfile import read_model_card
from ..core.wording import for_dialog, plural
from . import messages, settings
from .job_dialog_support import (
    browse_file,
    browse_save_file,
    counted,
    file_row,
    fill_devices,
    problem_label,
    remember_job,
    remembered_job,
    select_device,
    show_messages,
    show_problems,
)
from .output_layers import add_classification
from .task import JobManager

SETTINGS_KEY = "deep_learning_trainer/classify_pixels/last_job"
MODEL_FILTER = "Deep Learning Trainer model (*.dltmodel.safetensors *.safetensors)"
RASTER_FILTER = "Rasters (*.tif *.tiff *.vrt *.img *.jp2 *.png);;All files (*)"
#: Input pixel size / training pixel size beyond which (or below its inverse) a warning shows.
PIXEL_SIZE_TOLERANCE = 1.5
TILE_AUTO_TEXT = "automatic"


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


def card_html(card: dict) -> str:
    """The model card as rich text: classes with colours, bands, patch and pixel size."""
    arch = card.get("architecture", "?")
    rows = [("Model", f"{ARCHITECTURE_LABELS.get(arch, arch)} / {card.get('encoder', '?')}"),
            ("Bands", str(card.get("bands", "?"))),
            ("Patch size", f"{card.get('patch_size', '?')} px")]
    px = card.get("pixel_size")
    if px:
        rows.append(("Pixel size", f"{float(px[0]):g} × {float(px[-1]):g}"))
    metrics = card.get("metrics") or {}
    if isinstance(metrics.get("mean_iou"), (int, float)):
        rows.append(("Mean IoU", f"{metrics['mean_iou']:.3f} ({metrics.get('split', '')}, "
                                 f"epoch {metrics.get('epoch', '?')})"))
    if card.get("plugin_version"):
        rows.append(("Trained with", f"Deep Learning Trainer {card['plugin_version']}"))
    body = "".join(f"<tr><td><b>{k}</b></td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    classes = "".join(
        f"<tr><td><span style='color:{html.escape(c['color'])}; font-size:large'>■</span></td>"
        f"<td>{int(c['id'])}</td><td>{html.escape(c['name'])}</td></tr>"
        for c in sorted(card.get("classes", []), key=lambda c: int(c["id"])))
    return (f"<table cellpadding='2'>{body}</table><p><b>Classes</b></p>"
            f"<table cellpadding='1'>{classes}</table>")


class ClassifyPixelsDialog(QDialog):
    """Classify Pixels. ``job()`` gives the job the values describe."""

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
        self.setWindowTitle("Classify Pixels")
        self.setObjectName("ClassifyPixelsDialog")
        self._build()
        self.set_job(self._remembered_job())

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        inputs = QGroupBox("Input")
        form = QFormLayout(inputs)
        self.input_combo = QgsMapLayerComboBox()
        self.input_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.input_combo.setAllowEmptyLayer(True)
        self.input_combo.setToolTip("A raster layer, or a file (…): the same bands as the "
                                    "training rasters.")
        if hasattr(self.input_combo, "setProject"):  # QGIS ≥ 3.24; before: the main project
            self.input_combo.setProject(self.project)
        form.addRow("Input raster", file_row(self.input_combo, self._browse_input,
                                             tooltip="Choose a raster file"))
        self.input_label = QLabel()
        self.input_label.setStyleSheet("color: #555;")
        form.addRow("", self.input_label)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("A model trained with Train Pixel Segmentation")
        self.model_edit.setToolTip("A model file (.dltmodel.safetensors); its card below shows "
                                   "its classes, bands and patch size.")
        form.addRow("Model", file_row(self.model_edit, self._browse_model))
        self.card_view = QTextBrowser()
        self.card_view.setMinimumHeight(150)
        form.addRow("Model card", self.card_view)
        self.grid_edit = QLineEdit()
        self.grid_edit.setPlaceholderText("Optional: classify only the cells a grid model flags")
        self.grid_edit.setToolTip(ClassifyPixelsJob.__dataclass_fields__["grid_model"]
                                  .metadata["param"].help)
        form.addRow("Grid model", file_row(self.grid_edit, lambda: browse_file(
            self, self.grid_edit, "Grid model", MODEL_FILTER)))

        outputs = QGroupBox("Output")
        out = QFormLayout(outputs)
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("Class raster (GeoTIFF)")
        self.output_edit.setToolTip("GeoTIFF of class ids on the input's grid, with the "
                                    "model's colours (background transparent on the map).")
        out.addRow("Class raster", file_row(self.output_edit, lambda: browse_save_file(
            self, self.output_edit, "Class raster", "GeoTIFF (*.tif)", ".tif")))
        self.prob_check = QCheckBox("Probabilities")
        self.prob_edit = QLineEdit()
        self.prob_edit.setPlaceholderText("One band per class (GeoTIFF)")
        for w in (self.prob_check, self.prob_edit):
            w.setToolTip("Optional GeoTIFF with one band per class: the probability scaled to "
                         "0–255.")
        out.addRow(self.prob_check, file_row(self.prob_edit, lambda: browse_save_file(
            self, self.prob_edit, "Probabilities", "GeoTIFF (*.tif)", ".tif")))
        self.vector_check = QCheckBox("Polygons")
        self.vector_edit = QLineEdit()
        self.vector_edit.setPlaceholderText("Class polygons (GeoPackage)")
        for w in (self.vector_check, self.vector_edit):
            w.setToolTip("Optional GeoPackage of class polygons with class id, name, area (m²) "
                         "and perimeter (m).")
        out.addRow(self.vector_check, file_row(self.vector_edit, lambda: browse_save_file(
            self, self.vector_edit, "Polygons", "GeoPackage (*.gpkg)", ".gpkg")))
        self.min_pixels_spin = QSpinBox()
        self.min_pixels_spin.setRange(0, 10**9)
        self.min_pixels_spin.setSuffix(" px")
        self.min_pixels_spin.setSpecialValueText("keep single pixels")
        self.min_pixels_spin.setToolTip("Polygons of fewer pixels are left out (ENVI's aggregate "
                                        "minimum size): removes the speckle of single pixels.")
        out.addRow("Minimum polygon size", self.min_pixels_spin)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0, 1e12)
        self.min_area_spin.setDecimals(2)
        self.min_area_spin.setSpecialValueText("no limit")
        self.min_area_spin.setToolTip("Polygons with a smaller area are left out (in the unit "
                                      "shown; 0: no area limit).")
        out.addRow("Minimum polygon area", self.min_area_spin)

        run = QGroupBox("Processing")
        rf = QFormLayout(run)
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 75)
        self.overlap_spin.setSingleStep(5)
        self.overlap_spin.setSuffix(" %")
        self.overlap_spin.setToolTip("Share of a tile (0–75 %) that overlaps its neighbours; "
                                     "overlaps are blended smoothly so no seams show.")
        rf.addRow("Tile overlap", self.overlap_spin)
        self.tta_check = QCheckBox("Test-time augmentation (8 rotations and flips: better, "
                                   "8 × slower)")
        self.tta_check.setToolTip("Averages the predictions of 8 turned and flipped copies of "
                                  "each tile: smoother results, 8 × the time.")
        rf.addRow("", self.tta_check)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        counted(self.batch_spin, "tile")
        self.batch_spin.setToolTip("Tiles the model classifies at once; more is faster on a GPU "
                                   "and needs more memory.")
        rf.addRow("Tiles per batch", self.batch_spin)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setSpecialValueText(TILE_AUTO_TEXT)
        self.tile_spin.setToolTip("Edge of the square tiles the raster is cut into (a multiple "
                                  f"of 32); {TILE_AUTO_TEXT}: the model's patch size, at least "
                                  "256 px.")
        rf.addRow("Tile size", self.tile_spin)
        self.device_combo = QComboBox()
        self.device_combo.setToolTip("Where the model runs; Automatic uses the first CUDA GPU "
                                     "when there is one.")
        from . import train_segmentation_dialog as train_dialog

        fill_devices(self.device_combo, train_dialog.known_devices(), "auto")
        rf.addRow("Device", self.device_combo)

        self.warning_label = problem_label("#a05a00")
        self.reason_label = problem_label()
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Classify")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        right = QVBoxLayout()
        right.addWidget(outputs)
        right.addWidget(run)
        right.addStretch(1)
        cols = QHBoxLayout()
        cols.addWidget(inputs, 1)
        cols.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(cols, 1)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.buttons)
        self.resize(1000, 560)

        self.input_combo.layerChanged.connect(lambda _layer: self._input_changed())
        self.model_edit.textChanged.connect(self._model_changed)
        for e in (self.output_edit, self.prob_edit, self.vector_edit, self.grid_edit):
            e.textChanged.connect(self._changed)
        for c in (self.prob_check, self.vector_check, self.tta_check):
            c.toggled.connect(self._changed)
        for s in (self.min_area_spin, self.min_pixels_spin, self.overlap_spin, self.batch_spin,
                  self.tile_spin):
            s.valueChanged.connect(self._changed)
        self.device_combo.currentIndexChanged.connect(self._changed)

    # -- values <-> job ------------------------------------------------------------------------
    def input_path(self) -> str:
        layer = self.input_combo.currentLayer()
        if layer is not None:
            return layer.source()
        text = self.input_combo.currentText().strip()
        return text if text and Path(text).exists() else ""

    def set_input(self, path: str) -> None:
        """Select the map layer with this source, else offer the file as an extra item."""
        for layer in self.project.mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.source() == path:
                self.input_combo.setLayer(layer)
                if self.input_combo.currentLayer() is layer:
                    # no layerChanged when the combo already showed it: read it here
                    self._input_changed()
                    return
        if path:
            items = list(self.input_combo.additionalItems())
            if path not in items:
                self.input_combo.setAdditionalItems(items + [path])
            self.input_combo.setCurrentIndex(self.input_combo.findText(path))
        self._input_changed()

    def job(self) -> ClassifyPixelsJob:
        return ClassifyPixelsJob(
            input=self.input_path(),
            model=self.model_edit.text().strip(),
            output=self.output_edit.text().strip(),
            output_probabilities=(self.prob_edit.text().strip() if self.prob_check.isChecked()
                                  else ""),
            output_vector=self.vector_edit.text().strip() if self.vector_check.isChecked() else "",
            min_area=self.min_area_spin.value(),
            min_pixels=self.min_pixels_spin.value(),
            overlap=self.overlap_spin.value() / 100.0,
            tta=self.tta_check.isChecked(),
            batch_size=self.batch_spin.value(),
            tile_size=self.tile_spin.value(), grid_model=self.grid_edit.text().strip(),
            device=str(self.device_combo.currentData() or "auto"))

    def set_job(self, job: ClassifyPixelsJob) -> None:
        self.output_edit.setText(job.output)
        self.prob_check.setChecked(bool(job.output_probabilities))
        self.prob_edit.setText(job.output_probabilities)
        self.vector_check.setChecked(bool(job.output_vector))
        self.vector_edit.setText(job.output_vector)
        self.set_input(job.input)  # fills the empty output names after the input
        self.model_edit.setText(job.model)
        self.min_area_spin.setValue(job.min_area)
        self.min_pixels_spin.setValue(job.min_pixels)
        self.overlap_spin.setValue(int(round(job.overlap * 100)))
        self.tta_check.setChecked(job.tta)
        self.batch_spin.setValue(job.batch_size)
        self.tile_spin.setValue(job.tile_size)
        self.grid_edit.setText(job.grid_model)
        select_device(self.device_combo, job.device)
        self._model_changed()

    # -- reactions -----------------------------------------------------------------------------
    def _input_changed(self) -> None:
        path = self.input_path()
        self.input_info = raster_info(path)
        if self.input_info:
            i = self.input_info
            px = i["pixel_size"]
            self.input_label.setText(
                f"{i['width']} × {i['height']} px, {plural(i['bands'], 'band')}"
                + (f", pixel size {px[0]:g} {i.get('unit', '')}".rstrip() if px else ""))
            self.min_area_spin.setSuffix(f" {i['area_unit']}²")
            self._suggest_outputs(path)
        else:
            self.input_label.setText("Choose a raster layer or file." if not path
                                     else "GDAL cannot read this raster.")
        self._changed()

    def _suggest_outputs(self, path: str) -> None:
        """Output names after the input raster, numbered past the outputs of earlier runs (so a
        second run does not replace the first); names suggested for an earlier input (not typed
        by the user) follow the new one."""
        stem = Path(path).with_suffix("")
        folder = Path(settings.output_folder()) if settings.output_folder() else None
        base = (folder / stem.name) if folder else stem
        for n in range(1, 1000):
            tag = "" if n == 1 else f"_{n}"
            new = (f"{base}_classes{tag}.tif", f"{base}_probabilities{tag}.tif",
                   f"{base}_classes{tag}.gpkg")
            if not any(Path(p).exists() for p in new):
                break
        old = getattr(self, "_suggested", ("", "", ""))
        for edit, before, after in zip((self.output_edit, self.prob_edit, self.vector_edit),
                                       old, new):
            if edit.text().strip() in ("", before):
                edit.setText(after)
        self._suggested = new

    def _model_changed(self, *_args) -> None:
        path = self.model_edit.text().strip()
        self.card, self.card_error = None, ""
        if path:
            try:
                self.card = read_model_card(path)
            except UserError as exc:
                self.card_error = f"{exc.message} {exc.fix}".strip()
        if self.card:
            self.card_view.setHtml(card_html(self.card))
        else:
            self.card_view.setPlainText(self.card_error or "Choose a model file to see its "
                                                           "classes, bands and patch size.")
        self._changed()

    def warnings(self) -> list[str]:
        """Things that do not stop classifying but may spoil it."""
        out = []
        if self.card and self.input_info:
            px, tpx = self.input_info.get("pixel_size"), self.card.get("pixel_size")
            if px and tpx and tpx[0]:
                ratio = px[0] / float(tpx[0])
                if ratio > PIXEL_SIZE_TOLERANCE or ratio < 1 / PIXEL_SIZE_TOLERANCE:
                    out.append(f"The input pixel size ({px[0]:g}) is far from the training "
                               f"pixel size ({float(tpx[0]):g}): results may be poor. Resample "
                               "the raster to the training pixel size.")
        return out

    def problems(self) -> list[str]:
        job = self.job()
        out = []
        if not job.input:
            out.append("Choose an input raster.")
        elif self.input_info is None:
            out.append(f"GDAL cannot read {job.input}: choose another raster.")
        if self.card_error:
            out.append(self.card_error)
        if self.card and self.input_info and self.input_info["bands"] != int(self.card["bands"]):
            out.append(f"The input raster has {plural(self.input_info['bands'], 'band')} but "
                       f"the model was trained on {self.card['bands']}: classify a raster with "
                       "the same bands as the training rasters.")
        if self.prob_check.isChecked() and not job.output_probabilities:
            out.append("Choose a file for the probabilities, or untick them.")
        if self.vector_check.isChecked() and not job.output_vector:
            out.append("Choose a file for the polygons, or untick them.")
        own = job.problems()
        if not job.input:
            own = [p for p in own if "(INPUT) is required" not in p]
        if not job.model:
            own = [p for p in own if "(MODEL) is required" not in p]
            out.append("Choose a model file.")
        return list(dict.fromkeys(for_dialog(p, ClassifyPixelsJob) for p in out + own))

    def _changed(self, *_args) -> None:
        self.prob_edit.setEnabled(self.prob_check.isChecked())
        self.vector_edit.setEnabled(self.vector_check.isChecked())
        self.min_area_spin.setEnabled(self.vector_check.isChecked())
        self.min_pixels_spin.setEnabled(self.vector_check.isChecked())
        show_problems(self.reason_label, self.ok_button, self.problems())
        show_messages(self.warning_label, self.warnings())

    # -- browsing ------------------------------------------------------------------------------
    def _browse_input(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Raster to classify", "", RASTER_FILTER)
        if path:
            self.set_input(path)

    def _browse_model(self) -> None:
        browse_file(self, self.model_edit, "Model", MODEL_FILTER)

    # -- remembering ---------------------------------------------------------------------------
    def _remembered_job(self) -> ClassifyPixelsJob:
        job = ClassifyPixelsJob(device=settings.device())
        if self.remember:
            job = remembered_job(SETTINGS_KEY, job)
        job.output = job.output_probabilities = job.output_vector = ""  # never reuse outputs
        return job

    # -- running -------------------------------------------------------------------------------
    def accept(self) -> None:
        if self.problems():
            self._changed()
            return
        job = self.job()
        if self.remember:
            remember_job(SETTINGS_KEY, job)
        self.start(job)
        super().accept()

    def start(self, job: ClassifyPixelsJob):
        if self.plugin is None:
            raise UserError("Classifying needs the plugin's job manager.",
                            "Open the dialog from the Deep Learning menu.")
        card = dict(self.card or {})
        for w in self.warnings():
            messages.log(w, "warning")
        self.task = self.plugin.jobs.start(job, f"Classifying {Path(job.input).name}")
        project = self.project

        def done(result: dict) -> None:
            classes = card.get("classes") or []
            if not sip.isdeleted(project):
                add_classification(result, classes, Path(job.output).stem, project)

        self.task.succeeded.connect(done)
        return self.task


def open_classify_pixels(plugin, model_path: str | None = None) -> ClassifyPixelsDialog:
    """Menu opener (``model_path`` pre-fills the model, e.g. after training)."""
    parent = plugin.iface.mainWindow() if getattr(plugin, "iface", None) else None
    dialog = ClassifyPixelsDialog(parent, plugin=plugin)
    layer = plugin.iface.activeLayer() if getattr(plugin, "iface", None) else None
    if isinstance(layer, QgsRasterLayer):
        dialog.set_input(layer.source())
    if model_path:
        dialog.model_edit.setText(model_path)
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    dialog.show()
    return dialog
