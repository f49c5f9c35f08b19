"""The Detect Objects dialog: a raster and a trained detector → a GeoPackage of boxes.

The model card is read from the file header without torch; the job runs in a worker and the
boxes are added to the map outlined in the class colours (score labels as an option). What it
shares with Classify Pixels is in :mod:`.raster_model_dialog`.
"""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtWidgets import QCheckBox, QGroupBox, QLineEdit

from ..core.detection.jobs import ARCHITECTURE_LABELS, TASK, DetectObjectsJob
from . import settings
from .job_dialog_support import (
    browse_save_file,
    device_combo,
    double_spin,
    file_row,
    form_group,
    int_spin,
)
from .model_card import card_html, size_rows
from .output_layers import add_detections
from .raster_model_dialog import RasterModelDialog, open_raster_model_dialog

SETTINGS_KEY = "deep_learning_trainer/detect_objects/last_job"


def detector_card_html(card: dict) -> str:
    """The detector's card as rich text: architecture, classes, thresholds, patch, mAP50."""
    arch = card.get("architecture", "?")
    rows = [("Model", ARCHITECTURE_LABELS.get(arch, arch)), *size_rows(card),
            ("Largest trained box", f"{float(card.get('max_box_px') or 0):.0f} px"),
            ("Score threshold", f"{float(card.get('score_threshold', 0.3)):g}"),
            ("NMS IoU", f"{float(card.get('nms_iou', 0.5)):g}")]
    m = card.get("metrics") or {}
    if isinstance(m.get("val_map50"), (int, float)):
        rows.append(("Validation mAP50", f"{m['val_map50']:.3f} (mAP {m.get('val_map', 0):.3f})"))
    return card_html(rows, [c for c in card.get("classes", []) if int(c["id"])], mark="□")


class DetectObjectsDialog(RasterModelDialog):
    """Detect Objects. ``job()`` gives the job the values describe."""

    job_cls = DetectObjectsJob
    object_name = "DetectObjectsDialog"
    settings_key = SETTINGS_KEY
    ok_text = "Detect"
    card_task = TASK
    card_hint = "classes, bands and thresholds."
    bands_advice = "use a raster with the same bands."
    model_placeholder = "A model trained with Train Object Detection"
    grid_placeholder = "Optional: search only the cells a grid model flags"
    browse_title = "Raster to search"
    running = "Detecting"
    pixel_size_advice = ("objects will look larger or smaller than in training. Resample the "
                         "raster first.")
    output_fields = ("output", "output_points")

    # -- layout --------------------------------------------------------------------------------
    def _output_group(self) -> QGroupBox:
        outputs, out = form_group("Output")
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
        return outputs

    def _run_group(self) -> QGroupBox:
        run, rf = form_group("Detection")
        self.score_spin = double_spin(-1, 1, 2, 0.05)
        self.score_spin.setSpecialValueText("model's")
        rf.addRow("Score threshold", self.score_spin)
        self.nms_spin = double_spin(-1, 1, 2, 0.05)
        self.nms_spin.setSpecialValueText("model's")
        rf.addRow("NMS IoU", self.nms_spin)
        self.max_spin = int_spin(1, 100000)
        rf.addRow("Maximum detections per tile", self.max_spin)
        self.tile_spin = int_spin(0, 8192, 32, special="automatic")
        rf.addRow("Tile size", self.tile_spin)
        self.overlap_spin = int_spin(-1, 8192, suffix=" px",
                                     special="automatic (largest box + 10 %)")
        rf.addRow("Tile overlap", self.overlap_spin)
        self.tta_check = QCheckBox("Test-time augmentation (flips: better recall, 3 × slower)")
        rf.addRow("", self.tta_check)
        self.batch_spin = int_spin(1, 256)
        rf.addRow("Tiles per batch", self.batch_spin)
        self.device_combo = device_combo()
        rf.addRow("Device", self.device_combo)
        return run

    def _field_widgets(self) -> dict:
        return {"output": self.output_edit, "output_points": self.points_edit,
                "score_threshold": self.score_spin, "nms_iou": self.nms_spin,
                "max_detections": self.max_spin, "tile_size": self.tile_spin,
                "overlap": self.overlap_spin, "batch_size": self.batch_spin,
                "device": self.device_combo}

    def _value_widgets(self) -> list:
        return [self.output_edit, self.points_edit, self.points_check, self.tta_check,
                self.score_spin, self.nms_spin, self.max_spin, self.tile_spin,
                self.overlap_spin, self.batch_spin, self.device_combo]

    # -- values <-> job ------------------------------------------------------------------------
    def job(self) -> DetectObjectsJob:
        return DetectObjectsJob(
            **self.shared_values(), output=self.output_edit.text().strip(),
            output_points=(self.points_edit.text().strip() if self.points_check.isChecked()
                           else ""),
            score_threshold=self.score_spin.value(), nms_iou=self.nms_spin.value(),
            max_detections=self.max_spin.value(), overlap=self.overlap_spin.value())

    def set_job(self, job: DetectObjectsJob) -> None:
        self.show_shared_values(job)
        self.output_edit.setText(job.output)
        self.points_check.setChecked(bool(job.output_points))
        self.points_edit.setText(job.output_points)
        self.score_spin.setValue(job.score_threshold)
        self.nms_spin.setValue(job.nms_iou)
        self.max_spin.setValue(job.max_detections)
        self.overlap_spin.setValue(job.overlap)
        self._model_changed()

    # -- reactions -----------------------------------------------------------------------------
    def _input_read(self, path: str) -> None:
        if not self.output_edit.text().strip():
            base = settings.output_base(path)
            self.output_edit.setText(f"{base}_objects.gpkg")
            self.points_edit.setText(f"{base}_object_centres.gpkg")

    def card_html(self, card: dict) -> str:
        return detector_card_html(card)

    def output_problems(self, job: DetectObjectsJob) -> list[str]:
        if self.points_check.isChecked() and not job.output_points:
            return ["Choose a file for the centre points, or untick them."]
        return []

    def _changed(self, *_args) -> None:
        self.points_edit.setEnabled(self.points_check.isChecked())
        super()._changed()

    # -- running -------------------------------------------------------------------------------
    def task_title(self, job: DetectObjectsJob) -> str:
        return f"Detecting objects in {Path(job.input).name}"

    def _output_adder(self, job: DetectObjectsJob, card: dict):
        classes, name = card.get("classes") or [], Path(job.output).stem
        scores = self.scores_check.isChecked()
        return lambda result, project: add_detections(result, classes, name, project, scores)


def open_detect_objects(plugin, model_path: str | None = None) -> DetectObjectsDialog:
    """Menu opener (``model_path`` pre-fills the model, e.g. after training)."""
    return open_raster_model_dialog(DetectObjectsDialog, plugin, model_path)
