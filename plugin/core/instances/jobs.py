"""Instance segmentation jobs: Train Instance Segmentation and Segment Objects.

Nothing heavy at import time: torch, torchvision and rasterio are imported in ``run``. The
training controls are those of Train Object Detection (patch size, split, feature patch
percentage, background patch ratio, steps, augmentation), read by the one training engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..job_fields import device_field, grid_model_field, grid_threshold_field
from ..jobs import Job, JobContext, register_job
from ..params import spec
from ..patchsize import PATCH_MULTIPLE, nearest_patch_size
from ..raster_model_job import RasterModelJob, threshold_problems
from ..training import fields as trainer
from ..training.job import TrainingJob
from ..training.start_weights import start_weights_field
from .modelfile import ARCHITECTURES, TASK

ARCHITECTURE_LABELS = {"maskrcnn": "Mask R-CNN (ResNet-50 FPN)",
                       "maskrcnn_resnet18": "Mask R-CNN (ResNet-18 FPN, light: trains on a CPU)"}
MIN_PATCH_SIZE = 64
_GPKG_FILTER = "GeoPackage (*.gpkg)"


def _multiple_problem(name: str, value: int) -> list[str]:
    if value and value % PATCH_MULTIPLE:
        return [f"{name} {value} is not a multiple of {PATCH_MULTIPLE}: use "
                f"{nearest_patch_size(value)}."]
    return []


@register_job
@dataclass
class TrainInstanceSegmentationJob(TrainingJob):
    """Train Mask R-CNN to outline each object (one polygon per object) from the polygon labels
    of a labeling project."""

    kind = "train_instance_segmentation"
    title = "Train Instance Segmentation"
    group = "Instance segmentation"

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        help="The labeling project (GeoPackage): each polygon label is one "
                             "object. Point and line labels have no outline and are refused.",
                        file_filter="Labeling project (*.gpkg)")
    architecture: str = spec("maskrcnn", "ARCHITECTURE", "Model architecture", "enum",
                             choices=ARCHITECTURES, choice_labels=ARCHITECTURE_LABELS,
                             help="Mask R-CNN on a ResNet-50 FPN (default), or on a light "
                                  "ResNet-18 FPN that trains usefully on a CPU.")
    init_model: str = trainer.init_model_field("instance segmentation model")
    start_weights: str = start_weights_field(
        TASK, "torchvision's COCO Mask R-CNN (box and mask predictors re-sized for the "
              "project's classes; ImageNet ResNet-18 backbone for the light variant); the "
              "backbone's batch norms then stay fixed")
    patch_size: int = spec(256, "PATCH_SIZE", "Patch size (px)", "int", minimum=MIN_PATCH_SIZE,
                           maximum=4096,
                           help="Edge of the square patches the model learns from; a multiple "
                                "of 32. The model never resizes them (the pixel size stays the "
                                "raster's); objects cut by a patch edge teach their visible "
                                "part.")
    split: float = trainer.split_field()
    shuffle: bool = trainer.shuffle_field()
    feature_patch_percentage: float = trainer.feature_patch_percentage_field(features="objects")
    background_patch_ratio: float = trainer.background_patch_ratio_field(0.15,
                                                                         features="objects")
    epochs: int = trainer.epochs_field(100)
    batch_size: int = trainer.batch_size_field(4)
    learning_rate: float = trainer.learning_rate_field(0.0005)
    augment_rotation: bool = trainer.augment_rotation_field(
        "Random 90° turns (masks turned with the image).")
    augment_scale: bool = trainer.augment_scale_field(
        "Random zoom in/out by up to 20 % (masks scaled with it).")
    augment_flip: bool = trainer.augment_flip_field()
    score_threshold: float = spec(0.5, "SCORE_THRESHOLD", "Score threshold", "float",
                                  minimum=0, maximum=1, advanced=True,
                                  help="Stored in the model as the default of Segment Objects.")
    nms_iou: float = spec(0.5, "NMS_IOU", "NMS IoU", "float", minimum=0.05, maximum=1,
                          advanced=True,
                          help="Overlap (box IoU) above which the weaker of two objects of a "
                               "class in a tile is suppressed; stored in the model.")
    steps_per_epoch: int = trainer.steps_per_epoch_field("Batches per epoch (0 = one pass)")
    max_patches: int = trainer.max_patches_field()
    output_model: str = trainer.output_model_field("the highest validation mask mAP50")

    def problems(self) -> list[str]:
        out = super().problems()
        if self.patch_size >= MIN_PATCH_SIZE:
            out += _multiple_problem("Patch size", self.patch_size)
        return out


@register_job
@dataclass
class InstanceSummaryJob(TrainInstanceSegmentationJob):
    """What Train Instance Segmentation would sample (the dialog's live pre-flight summary):
    patches and objects per class per split and the training length in optimiser steps, with
    the warning below a few hundred. It takes a train job's values; only those of
    ``summary_inputs`` change the summary."""

    kind = "instance_summary"
    title = "Instance segmentation summary"
    summary_inputs: ClassVar[tuple[str, ...]] = (
        "project", "patch_size", "split", "shuffle", "seed", "feature_patch_percentage",
        "background_patch_ratio", "epochs", "batch_size", "steps_per_epoch", "max_patches")

    def problems(self) -> list[str]:
        """Only the project and the patch size must be right (no training outputs needed)."""
        out = Job.problems(self) + self.project_problems()
        return out + _multiple_problem("Patch size", self.patch_size)

    def run(self, ctx: JobContext) -> dict:
        import tempfile
        from pathlib import Path

        from ..training.length import length_summary
        from .data import prepare_instance_data
        from .task import InstanceSegmentationTask

        with tempfile.TemporaryDirectory(prefix="dltrainer-instsummary-") as work:
            data = prepare_instance_data(self, ctx, Path(work))
        task = InstanceSegmentationTask()   # its length rule, on the planned patches
        task.train_patches = data.plan.split("train")
        length = length_summary(self.epochs, task.steps_per_epoch(self), self.batch_size)
        patches = data.plan.summary()["patches"]
        objects = {s: data.object_counts(s) for s in ("train", "validation")}
        rows = [["Patches with objects", patches["train"]["feature"],
                 patches["validation"]["feature"]],
                ["Background patches", patches["train"]["background"],
                 patches["validation"]["background"]]]
        rows += [[f"Objects: {c['name']}", objects["train"].get(c["id"], 0),
                  objects["validation"].get(c["id"], 0)] for c in data.classes]
        warnings = data.plan.warnings + ([length["warning"]] if length["warning"] else [])
        return {"rows": rows, "note": f"Patches of {self.patch_size} px.", "length": length,
                "warnings": warnings}


@register_job
@dataclass
class SegmentObjectsJob(RasterModelJob):
    """Outline every object of a raster with a trained Mask R-CNN: one polygon per object
    (objects cut by tile edges merged) in a GeoPackage, with class, score, area and
    perimeter."""

    kind = "segment_objects"
    output_missing = "Output objects (OUTPUT) is required: choose a GeoPackage file name."
    model_task = TASK
    title = "Segment Objects"
    runner = "predict:segment_objects"
    group = "Instance segmentation"

    input: str = spec("", "INPUT", "Input raster", "raster_in",
                      help="The raster to search (same bands as the training rasters).")
    model: str = spec("", "MODEL", "Model", "model_in", file_filter=trainer.MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output objects (GeoPackage)", "file_out",
                       file_filter=_GPKG_FILTER,
                       help="One polygon per object in the raster's CRS with class id, class "
                            "name, score, area (m²) and perimeter (m).")
    output_layer: str = spec("objects", "OUTPUT_LAYER", "Layer name in the GeoPackage", "str",
                             advanced=True,
                             help="The layer written (or replaced) in OUTPUT; its other layers "
                                  "are kept.")
    score_threshold: float = spec(-1.0, "SCORE_THRESHOLD",
                                  "Score threshold (-1 = the model's)", "float",
                                  minimum=-1, maximum=1,
                                  help="Objects scoring lower are dropped (0 to 1); -1 uses the "
                                       "value stored in the model.")
    nms_iou: float = spec(-1.0, "NMS_IOU", "NMS IoU (-1 = the model's)", "float", minimum=-1,
                          maximum=1, advanced=True,
                          help="Within a tile, the weaker of two objects of a class whose boxes "
                               "overlap more than this (IoU, 0 to 1) is dropped; -1 uses the "
                               "value stored in the model.")
    simplify: float = spec(1.0, "SIMPLIFY", "Simplification tolerance (px)", "float",
                           minimum=0, maximum=100,
                           help="Outlines are simplified (Douglas-Peucker) by up to this many "
                                "pixels; 0 keeps the pixel staircase.")
    max_detections: int = spec(100, "MAX_DETECTIONS", "Maximum objects per tile", "int",
                               minimum=1, maximum=100000, advanced=True,
                               help="Mask R-CNN pastes a full-tile mask per object (tile² × 4 "
                                    "bytes each): raise it for tiles crowded with objects.")
    tile_size: int = spec(0, "TILE_SIZE", "Tile size (px, 0 = automatic)", "int",
                          minimum=0, maximum=8192,
                          help="Edge of the square tiles searched; automatic: the model's "
                               "patch size, at least three tile overlaps.")
    overlap: int = spec(-1, "OVERLAP", "Tile overlap (px, -1 = automatic)", "int",
                        minimum=-1, maximum=8192,
                        help="Pixels shared by neighbouring tiles; at least the largest "
                             "trained object (automatic: that plus a margin). Objects cut by a "
                             "tile edge are merged with their other part.")
    batch_size: int = spec(2, "BATCH_SIZE", "Tiles per batch", "int", minimum=1, maximum=256)
    grid_model: str = grid_model_field(
        "only the tiles holding a grid cell this grid model flags are searched.")
    grid_threshold: float = grid_threshold_field("searched")
    device: str = device_field()

    def problems(self) -> list[str]:
        out = super().problems()
        out += threshold_problems(SCORE_THRESHOLD=self.score_threshold, NMS_IOU=self.nms_iou)
        return out + _multiple_problem("Tile size", self.tile_size)
