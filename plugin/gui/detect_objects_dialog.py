"""The Detect Objects dialog: a raster and a trained detector → a GeoPackage of boxes.

The model card is read from the file header without torch; the job runs in a worker and the
boxes are added to the map outlined in the class colours (score labels as an option).
"""

from __future__ import annotations

import html
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
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

from ..core.detection.jobs import ARCHITECTURE_LABELS, TASK, DetectObjectsJob
from ..core.errors import UserError
from ..core.segmentation.modelfile import read_model_card
from ..core.wording import for_dialog
from . import messages, settings
from .classify_pixels_dialog import PIXEL_SIZE_TOLERANCE, RASTER_FILTER, raster_info
from .job_dialog_support import (
    browse_file,
    browse_save_file,
    double_spin,
    file_row,
    fill_devices,
    fit_to_screen,
    problem_label,
    remember_job,
    remembered_job,
    select_device,
    show_messages,
    show_problems,
)
from .output_layers import add_detections
from .task import JobManager

SETTINGS_KEY = "deep_learning_trainer/detect_objects/last_job"
MODEL_FILTER = "Deep Learning Trainer model (*.dltmodel.safetensors *.safetensors)"


def detector_card_html(card: dict) -> str:
    """The detector's card as rich text: architecture, classes, thresholds, patch, mAP50."""
    arch = card.get("architecture", "?")
    rows = [("Model", ARCHITECTURE_LABELS.get(arch, arch)),
            ("Bands", str(card.get("bands", "?"))),
            ("Patch size", f"{card.get('patch_size', '?')} px"),
            ("Largest trained box", f"{float(card.get('max_box_px') or 0):.0f} px"),
            ("Score threshold", f"{float(card.get('score_threshold', 0.3)):g}"),
            ("NMS IoU", f"{float(card.get('nms_iou', 0.5)):g}")]
    px = card.get("pixel_size")
    if px:
        rows.append(("Pixel size", f"{float(px[0]):g} × {float(px[-1]):g}"))
    m = card.get("metrics") or {}
    if isinstance(m.get("val_map50"), (int, float)):
        rows.append(("Validation mAP50", f"{m['val_map50']:.3f} (mAP {m.get('val_map', 0):.3f})"))
    body = "".join(f"<tr><td><b>{k}</b></td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    classes = "".join(
        f"<tr><td><span style='color:{html.escape(c['color'])}; font-size:large'>□</span></td>"
        f"<td>{int(c['id'])}</td><td>{html.escape(c['name'])}</td></tr>"
        for c in sorted(card.get("classes", []), key=lambda c: int(c["id"])) if int(c["id"]))
    return (f"<table cellpadding='2'>{body}</table><p><b>Classes</b></p>"
            f"<table cellpadding='1'>{classes}</table>")


class DetectObjectsDialog(QDialog):
    """Detect Objects. ``job()`` gives the job the values describe."""

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
        self.setWindowTitle("Detect Objects")
        self.setObjectName("DetectObjectsDialog")
        self._build()
        self.set_job(self._remembered_job())

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        inputs = QGroupBox("Input")
        form = QFormLayout(inputs)
        self.input_combo = QgsMapLayerComboBox()
        self.input_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.input_combo.setAllowEmptyLayer(True)
        if hasattr(self.input_combo, "setProject"):
            self.input_combo.setProject(self.project)
        form.addRow("Input raster", file_row(self.input_combo, self._browse_input,
                                             tooltip="Choose a raster file"))
        self.input_label = QLabel()
        self.input_label.setStyleSheet("color: #555;")
        form.addRow("", self.input_label)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("A model trained with Train Object Detection")
        form.addRow("Model", file_row(self.model_edit, self._browse_model))
        self.card_view = QTextBrowser()
        self.card_view.setMinimumHeight(150)
        form.addRow("Model card", self.card_view)
        self.grid_edit = QLineEdit()
        self.grid_edit.setPlaceholderText("Optional: search only the cells a grid model flags")
        self.grid_edit.setToolTip(DetectObjectsJob.__dataclass_fields__["grid_model"]
                                  .metadata["param"].help)
        form.addRow("Grid model", file_row(self.grid_edit, lambda: browse_file(
            self, self.grid_edit, "Grid model", MODEL_FILTER)))

        outputs = QGroupBox("Output")
        out = QFormLayout(outputs)
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("Boxes (GeoPackage)")
        out.addRow("Boxes", file_row(self.output_edit, lambda: browse_save_file(
            self, self.output_edit, "Boxes", "GeoPackage (*.gpkg)", ".gpkg")))
        self.points_check = QCheckBox("Centre points")
        self.points_edit = QLineEdit()
        self.points_edit.setPlaceholderText("One point per box (GeoPackage)")
        out.addRow(self.points_check, file_row(self.points_edit, lambda: browse_save_file(
            self, self.points_edit, "Centre points", "GeoPackage (*.gpkg)", ".gpkg")))
        self.scores_check = QCheckBox("Label boxes with their score")
        out.addRow("", self.scores_check)

        run = QGroupBox("Detection")
        rf = QFormLayout(run)
        self.score_spin = double_spin(-1, 1, 2, 0.05)
        self.score_spin.setSpecialValueText("model's")
        rf.addRow("Score threshold", self.score_spin)
        self.nms_spin = double_spin(-1, 1, 2, 0.05)
        self.nms_spin.setSpecialValueText("model's")
        rf.addRow("NMS IoU", self.nms_spin)
        self.max_spin = QSpinBox()
        self.max_spin.setRange(1, 100000)
        rf.addRow("Maximum detections per tile", self.max_spin)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSpecialValueText("automatic")
        rf.addRow("Tile size", self.tile_spin)
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(-1, 8192)
        self.overlap_spin.setSpecialValueText("automatic (largest box + 10 %)")
        self.overlap_spin.setSuffix(" px")
        rf.addRow("Tile overlap", self.overlap_spin)
        self.tta_check = QCheckBox("Test-time augmentation (flips: better recall, 3 × slower)")
        rf.addRow("", self.tta_check)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        rf.addRow("Tiles per batch", self.batch_spin)
        self.device_combo = QComboBox()
        from . import train_segmentation_dialog as train_dialog

        fill_devices(self.device_combo, train_dialog.known_devices(), "auto")
        rf.addRow("Device", self.device_combo)

        self.warning_label = problem_label("#a05a00")
        self.reason_label = problem_label()
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Detect")
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
        fit_to_screen(self, 1000, 560)

        self.input_combo.layerChanged.connect(lambda _layer: self._input_changed())
        self.model_edit.textChanged.connect(self._model_changed)
        for e in (self.output_edit, self.points_edit, self.grid_edit):
            e.textChanged.connect(self._changed)
        for c in (self.points_check, self.tta_check):
            c.toggled.connect(self._changed)
        for s in (self.score_spin, self.nms_spin, self.max_spin, self.tile_spin,
                  self.overlap_spin, self.batch_spin):
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
        for layer in self.project.mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.source() == path:
                self.input_combo.setLayer(layer)
                if self.input_combo.currentLayer() is layer:
                    return
        if path:
            items = list(self.input_combo.additionalItems())
            if path not in items:
                self.input_combo.setAdditionalItems(items + [path])
            self.input_combo.setCurrentIndex(self.input_combo.findText(path))
        self._input_changed()

    def job(self) -> DetectObjectsJob:
        return DetectObjectsJob(
            input=self.input_path(), model=self.model_edit.text().strip(),
            output=self.output_edit.text().strip(),
            output_points=(self.points_edit.text().strip() if self.points_check.isChecked()
                           else ""),
            score_threshold=self.score_spin.value(), nms_iou=self.nms_spin.value(),
            max_detections=self.max_spin.value(), tile_size=self.tile_spin.value(),
            overlap=self.overlap_spin.value(), tta=self.tta_check.isChecked(),
            batch_size=self.batch_spin.value(), grid_model=self.grid_edit.text().strip(),
            device=str(self.device_combo.currentData() or "auto"))

    def set_job(self, job: DetectObjectsJob) -> None:
        self.set_input(job.input)
        self.model_edit.setText(job.model)
        self.output_edit.setText(job.output)
        self.points_check.setChecked(bool(job.output_points))
        self.points_edit.setText(job.output_points)
        self.score_spin.setValue(job.score_threshold)
        self.nms_spin.setValue(job.nms_iou)
        self.max_spin.setValue(job.max_detections)
        self.tile_spin.setValue(job.tile_size)
        self.overlap_spin.setValue(job.overlap)
        self.tta_check.setChecked(job.tta)
        self.batch_spin.setValue(job.batch_size)
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
            self.input_label.setText(f"{i['width']} × {i['height']} px, {i['bands']} band(s)"
                                     + (f", pixel size {px[0]:g}" if px else ""))
            if not self.output_edit.text().strip():
                stem = Path(path).with_suffix("")
                folder = Path(settings.output_folder()) if settings.output_folder() else None
                base = (folder / stem.name) if folder else stem
                self.output_edit.setText(f"{base}_objects.gpkg")
                self.points_edit.setText(f"{base}_object_centres.gpkg")
        else:
            self.input_label.setText("Choose a raster layer or file." if not path
                                     else "GDAL cannot read this raster.")
        self._changed()

    def _model_changed(self, *_args) -> None:
        path = self.model_edit.text().strip()
        self.card, self.card_error = None, ""
        if path:
            try:
                self.card = read_model_card(path, TASK)
            except UserError as exc:
                self.card_error = f"{exc.message} {exc.fix}".strip()
        if self.card:
            self.card_view.setHtml(detector_card_html(self.card))
        else:
            self.card_view.setPlainText(self.card_error or "Choose a model file to see its "
                                                           "classes, bands and thresholds.")
        self._changed()

    def warnings(self) -> list[str]:
        out = []
        if self.card and self.input_info:
            px, tpx = self.input_info.get("pixel_size"), self.card.get("pixel_size")
            if px and tpx and tpx[0]:
                ratio = px[0] / float(tpx[0])
                if ratio > PIXEL_SIZE_TOLERANCE or ratio < 1 / PIXEL_SIZE_TOLERANCE:
                    out.append(f"The input pixel size ({px[0]:g}) is far from the training "
                               f"pixel size ({float(tpx[0]):g}): objects will look larger or "
                               "smaller than in training. Resample the raster first.")
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
            out.append(f"The input raster has {self.input_info['bands']} band(s) but the model "
                       f"was trained on {self.card['bands']}: use a raster with the same bands.")
        if self.points_check.isChecked() and not job.output_points:
            out.append("Choose a file for the centre points, or untick them.")
        own = [p for p in job.problems() if not self.card_error or p != self.card_error]
        if not job.input:
            own = [p for p in own if "(INPUT) is required" not in p]
        if not job.model:
            own = [p for p in own if "(MODEL) is required" not in p]
            out.append("Choose a model file.")
        return list(dict.fromkeys(for_dialog(p, DetectObjectsJob) for p in out + own))

    def _changed(self, *_args) -> None:
        self.points_edit.setEnabled(self.points_check.isChecked())
        show_problems(self.reason_label, self.ok_button, self.problems())
        show_messages(self.warning_label, self.warnings())

    def _browse_input(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Raster to search", "", RASTER_FILTER)
        if path:
            self.set_input(path)

    def _browse_model(self) -> None:
        browse_file(self, self.model_edit, "Model", MODEL_FILTER)

    def _remembered_job(self) -> DetectObjectsJob:
        job = DetectObjectsJob(device=settings.device())
        if self.remember:
            job = remembered_job(SETTINGS_KEY, job)
        job.output = job.output_points = ""   # never reuse outputs
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

    def start(self, job: DetectObjectsJob):
        if self.plugin is None:
            raise UserError("Detecting needs the plugin's job manager.",
                            "Open the dialog from the Deep Learning menu.")
        card = dict(self.card or {})
        for w in self.warnings():
            messages.log(w, "warning")
        self.task = self.plugin.jobs.start(job, f"Detecting objects in {Path(job.input).name}")
        project, scores = self.project, self.scores_check.isChecked()

        def done(result: dict) -> None:
            if not sip.isdeleted(project):
                add_detections(result, card.get("classes") or [], Path(job.output).stem,
                               project, scores)

        self.task.succeeded.connect(done)
        return self.task


def open_detect_objects(plugin, model_path: str | None = None) -> DetectObjectsDialog:
    """Menu opener (``model_path`` pre-fills the model, e.g. after training)."""
    parent = plugin.iface.mainWindow() if getattr(plugin, "iface", None) else None
    dialog = DetectObjectsDialog(parent, plugin=plugin)
    layer = plugin.iface.activeLayer() if getattr(plugin, "iface", None) else None
    if isinstance(layer, QgsRasterLayer):
        dialog.input_combo.setLayer(layer)
    if model_path:
        dialog.model_edit.setText(model_path)
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    dialog.show()
    return dialog
