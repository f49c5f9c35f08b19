"""The Classify Pixels dialog: a raster and a trained model → class raster (and polygons).

The model card is read from the file header without torch (:func:`read_model_card`); the input
raster's bands and pixel size are read with GDAL. The job runs in a worker
(``plugin.jobs.start``); on success the outputs are added to the map in the class colours.
What it shares with Detect Objects is in :mod:`.raster_model_dialog`.
"""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtWidgets import QCheckBox, QDoubleSpinBox, QGroupBox, QLineEdit

from ..core.segmentation.jobs import ARCHITECTURE_LABELS, ClassifyPixelsJob
from ..core.segmentation.modelfile import TASK
from . import settings
from .job_dialog_support import (
    MODEL_FILTER,
    browse_save_file,
    counted,
    device_combo,
    file_row,
    form_group,
    int_spin,
)
from .model_card import card_html as model_card_html
from .model_card import size_rows
from .output_layers import add_classification
from .raster_model_dialog import (
    PIXEL_SIZE_TOLERANCE,
    RASTER_FILTER,
    RasterModelDialog,
    open_raster_model_dialog,
    raster_info,
)

__all__ = ["MODEL_FILTER", "PIXEL_SIZE_TOLERANCE", "RASTER_FILTER", "ClassifyPixelsDialog",
           "card_html", "open_classify_pixels", "raster_info"]

SETTINGS_KEY = "deep_learning_trainer/classify_pixels/last_job"
TILE_AUTO_TEXT = "automatic"


def card_html(card: dict) -> str:
    """The model card as rich text: classes with colours, bands, patch and pixel size."""
    arch = card.get("architecture", "?")
    rows = [("Model", f"{ARCHITECTURE_LABELS.get(arch, arch)} / {card.get('encoder', '?')}"),
            *size_rows(card)]
    metrics = card.get("metrics") or {}
    if isinstance(metrics.get("mean_iou"), (int, float)):
        rows.append(("Mean IoU", f"{metrics['mean_iou']:.3f} ({metrics.get('split', '')}, "
                                 f"epoch {metrics.get('epoch', '?')})"))
    if card.get("plugin_version"):
        rows.append(("Trained with", f"Deep Learning Trainer {card['plugin_version']}"))
    return model_card_html(rows, card.get("classes", []))


class ClassifyPixelsDialog(RasterModelDialog):
    """Classify Pixels. ``job()`` gives the job the values describe."""

    job_cls = ClassifyPixelsJob
    object_name = "ClassifyPixelsDialog"
    settings_key = SETTINGS_KEY
    ok_text = "Classify"
    card_task = TASK
    card_hint = "classes, bands and patch size."
    model_placeholder = "A model trained with Train Pixel Segmentation"
    model_tooltip = ("A model file (.dltmodel.safetensors); its card below shows its classes, "
                     "bands and patch size.")
    input_tooltip = "A raster layer, or a file (…): the same bands as the training rasters."
    grid_placeholder = "Optional: classify only the cells a grid model flags"
    browse_title = "Raster to classify"
    running = "Classifying"
    pixel_size_advice = ("results may be poor. Resample the raster to the training pixel "
                         "size.")
    bands_advice = "classify a raster with the same bands as the training rasters."
    output_fields = ("output", "output_probabilities", "output_vector")

    # -- layout --------------------------------------------------------------------------------
    def _output_group(self) -> QGroupBox:
        outputs, out = form_group("Output")
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
        self.min_pixels_spin = int_spin(
            0, 10**9, suffix=" px", special="keep single pixels",
            tooltip="Polygons of fewer pixels are left out (ENVI's aggregate minimum size): "
                    "removes the speckle of single pixels.")
        out.addRow("Minimum polygon size", self.min_pixels_spin)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0, 1e12)
        self.min_area_spin.setDecimals(2)
        self.min_area_spin.setSpecialValueText("no limit")
        self.min_area_spin.setToolTip("Polygons with a smaller area are left out (in the unit "
                                      "shown; 0: no area limit).")
        out.addRow("Minimum polygon area", self.min_area_spin)
        return outputs

    def _run_group(self) -> QGroupBox:
        run, rf = form_group("Processing")
        self.overlap_spin = int_spin(
            0, 75, 5, " %", tooltip="Share of a tile (0–75 %) that overlaps its neighbours; "
                                    "overlaps are blended smoothly so no seams show.")
        rf.addRow("Tile overlap", self.overlap_spin)
        self.tta_check = QCheckBox("Test-time augmentation (8 rotations and flips: better, "
                                   "8 × slower)")
        self.tta_check.setToolTip("Averages the predictions of the turned and flipped copies "
                                  "of each tile that the model learnt to answer alike (8 when "
                                  "it learnt with rotation and flip augmentation): better "
                                  "results, up to 8 × the time. Off: fastest.")
        rf.addRow("", self.tta_check)
        self.batch_spin = int_spin(0, 1024, special="automatic",
                                   tooltip="Tiles the model classifies at once; more is faster "
                                           "on a GPU and needs more memory. Automatic: from "
                                           "the free GPU memory (4 on the CPU).")
        counted(self.batch_spin, "tile")
        rf.addRow("Tiles per batch", self.batch_spin)
        self.tile_spin = int_spin(
            0, 8192, 32, " px", TILE_AUTO_TEXT,
            f"Edge of the square tiles the raster is cut into (a multiple of 32); "
            f"{TILE_AUTO_TEXT}: the model's patch size, at least 256 px.")
        rf.addRow("Tile size", self.tile_spin)
        self.device_combo = device_combo("Where the model runs; Automatic uses the first CUDA "
                                         "GPU when there is one.")
        rf.addRow("Device", self.device_combo)
        return run

    def _value_widgets(self) -> list:
        return [self.output_edit, self.prob_edit, self.vector_edit, self.prob_check,
                self.vector_check, self.tta_check, self.min_area_spin, self.min_pixels_spin,
                self.overlap_spin, self.batch_spin, self.tile_spin, self.device_combo]

    # -- values <-> job ------------------------------------------------------------------------
    def job(self) -> ClassifyPixelsJob:
        return ClassifyPixelsJob(
            **self.shared_values(), output=self.output_edit.text().strip(),
            output_probabilities=(self.prob_edit.text().strip() if self.prob_check.isChecked()
                                  else ""),
            output_vector=self.vector_edit.text().strip() if self.vector_check.isChecked() else "",
            min_area=self.min_area_spin.value(), min_pixels=self.min_pixels_spin.value(),
            overlap=self.overlap_spin.value() / 100.0)

    def set_job(self, job: ClassifyPixelsJob) -> None:
        self.output_edit.setText(job.output)
        self.prob_check.setChecked(bool(job.output_probabilities))
        self.prob_edit.setText(job.output_probabilities)
        self.vector_check.setChecked(bool(job.output_vector))
        self.vector_edit.setText(job.output_vector)
        self.show_shared_values(job)   # the input fills the output names still empty
        self.min_area_spin.setValue(job.min_area)
        self.min_pixels_spin.setValue(job.min_pixels)
        self.overlap_spin.setValue(int(round(job.overlap * 100)))
        self._model_changed()

    # -- reactions -----------------------------------------------------------------------------
    def _input_read(self, path: str) -> None:
        self.min_area_spin.setSuffix(f" {self.input_info['area_unit']}²")
        self._suggest_outputs(path)

    def _suggest_outputs(self, path: str) -> None:
        """Output names after the input raster, numbered past the outputs of earlier runs (so a
        second run does not replace the first); names suggested for an earlier input (not typed
        by the user) follow the new one."""
        base = settings.output_base(path)
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

    def card_html(self, card: dict) -> str:
        return card_html(card)

    def output_problems(self, job: ClassifyPixelsJob) -> list[str]:
        out = []
        if self.prob_check.isChecked() and not job.output_probabilities:
            out.append("Choose a file for the probabilities, or untick them.")
        if self.vector_check.isChecked() and not job.output_vector:
            out.append("Choose a file for the polygons, or untick them.")
        return out

    def _changed(self, *_args) -> None:
        self.prob_edit.setEnabled(self.prob_check.isChecked())
        self.vector_edit.setEnabled(self.vector_check.isChecked())
        self.min_area_spin.setEnabled(self.vector_check.isChecked())
        self.min_pixels_spin.setEnabled(self.vector_check.isChecked())
        super()._changed()

    # -- running -------------------------------------------------------------------------------
    def _output_adder(self, job: ClassifyPixelsJob, card: dict):
        classes, name = card.get("classes") or [], Path(job.output).stem
        return lambda result, project: add_classification(result, classes, name, project)


def open_classify_pixels(plugin, model_path: str | None = None) -> ClassifyPixelsDialog:
    """Menu opener (``model_path`` pre-fills the model, e.g. after training)."""
    return open_raster_model_dialog(ClassifyPixelsDialog, plugin, model_path)
