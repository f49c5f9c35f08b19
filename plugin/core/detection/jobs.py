"""Object detection jobs: Train Object Detection and Detect Objects.

Nothing heavy at import time: torch, torchvision and rasterio are imported in ``run``.
Parameter names follow ENVI's Train Object Detection / Object Classification tools where ENVI
has one (patch size, pad small features, feature patch percentage, background patch ratio).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..job_fields import device_field, engine_field, grid_model_field, grid_threshold_field
from ..jobs import Job, JobContext, register_job
from ..params import spec
from ..patchsize import PATCH_MULTIPLE, nearest_patch_size
from ..raster_model_job import RasterModelJob
from ..training import fields as trainer
from ..training.job import TrainingJob
from .modelfile import ARCHITECTURES

ARCHITECTURE_LABELS = {"retinanet": "RetinaNet (ResNet-50 FPN)",
                       "fasterrcnn": "Faster R-CNN (ResNet-50 FPN)",
                       "fcos": "FCOS (ResNet-50 FPN)",
                       "fcos_resnet18": "FCOS (ResNet-18 FPN, light: trains on a CPU)"}
TASK = "object_detection"
_PROJECT_FILTER = "Labeling project (*.gpkg)"
_MODEL_FILTER = trainer.MODEL_FILTER
_GPKG_FILTER = "GeoPackage (*.gpkg)"
MIN_PATCH_SIZE = 64


@register_job
@dataclass
class TrainObjectDetectionJob(TrainingJob):
    """Train an object detector (RetinaNet, Faster R-CNN, FCOS) from box, polygon, point or
    line labels of a labeling project, or from a COCO / VOC / YOLO chips folder."""

    kind = "train_object_detection"
    chips_folder_kinds = "a COCO, VOC or YOLO chips folder"
    title = "Train Object Detection"
    group = "Object detection"

    project: str = spec("", "PROJECT", "Labeling project or chips folder", "project_in",
                        help="The labeling project (GeoPackage): polygons give their bounding "
                             "box, points a square of twice the class's solid distance, lines "
                             "their extent. Or a folder written by Export Training Chips in the "
                             "COCO, VOC or YOLO format.", file_filter=_PROJECT_FILTER)
    architecture: str = spec("retinanet", "ARCHITECTURE", "Model architecture", "enum",
                             choices=ARCHITECTURES, choice_labels=ARCHITECTURE_LABELS,
                             help="RetinaNet (default), Faster R-CNN or FCOS on a ResNet-50 FPN "
                                  "backbone, or FCOS on a light ResNet-18 FPN that trains "
                                  "usefully on a CPU.")
    init_model: str = trainer.init_model_field("object detection model")
    patch_size: int = spec(512, "PATCH_SIZE", "Patch size (px)", "int", minimum=MIN_PATCH_SIZE,
                           maximum=4096,
                           help="Edge of the square patches the detector learns from; a "
                                "multiple of 32, larger than the largest object. The detector "
                                "never resizes them (the pixel size stays the raster's).")
    split: float = trainer.split_field()
    shuffle: bool = trainer.shuffle_field()
    pad_small_features: bool = spec(True, "PAD_SMALL_FEATURES", "Pad small features", "bool",
                                    help="Grow boxes smaller than 25 px in x or y to 25 px "
                                         "around their centre (ENVI).")
    feature_patch_percentage: float = trainer.feature_patch_percentage_field(features="boxes")
    background_patch_ratio: float = trainer.background_patch_ratio_field(0.15, features="boxes")
    epochs: int = trainer.epochs_field(100)
    batch_size: int = trainer.batch_size_field(4)
    learning_rate: float = trainer.learning_rate_field(0.0005)
    augment_rotation: bool = trainer.augment_rotation_field(
        "Random 90° turns (boxes turned with the image).")
    augment_scale: bool = trainer.augment_scale_field(
        "Random zoom in/out by up to 20 % (boxes scaled with it).")
    augment_flip: bool = trainer.augment_flip_field()
    score_threshold: float = spec(0.3, "SCORE_THRESHOLD", "Score threshold", "float",
                                  minimum=0, maximum=1, advanced=True,
                                  help="Stored in the model as the default of Detect Objects; "
                                       "precision, recall and F1 are measured at it.")
    nms_iou: float = spec(0.5, "NMS_IOU", "NMS IoU", "float", minimum=0.05, maximum=1,
                          advanced=True,
                          help="Overlap (IoU) above which the weaker of two boxes of a class is "
                               "suppressed; stored in the model.")
    steps_per_epoch: int = trainer.steps_per_epoch_field("Batches per epoch (0 = one pass)")
    max_patches: int = trainer.max_patches_field()
    output_model: str = trainer.output_model_field("the highest validation mAP50")

    def problems(self) -> list[str]:
        out = super().problems()
        if self.patch_size >= MIN_PATCH_SIZE and self.patch_size % PATCH_MULTIPLE:
            out.append(f"Patch size {self.patch_size} is not a multiple of {PATCH_MULTIPLE}: "
                       f"use {nearest_patch_size(self.patch_size)}.")
        return out


MODEL_VALUE = -1.0   # SCORE_THRESHOLD / NMS_IOU of Detect Objects: "the value stored in the model"


@register_job
@dataclass
class DetectObjectsJob(RasterModelJob):
    """Detect objects over a whole raster with a trained detector; boxes to a GeoPackage."""

    kind = "detect_objects"
    output_missing = "Output boxes (OUTPUT) is required: choose a GeoPackage file name."
    model_task = TASK
    title = "Detect Objects"
    runner = "predict:detect_objects"
    group = "Object detection"

    input: str = spec("", "INPUT", "Input raster", "raster_in",
                      help="The raster to search (same bands as the training rasters).")
    model: str = spec("", "MODEL", "Model", "model_in", file_filter=_MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output boxes (GeoPackage)", "file_out",
                       file_filter=_GPKG_FILTER,
                       help="Box polygons in the raster's CRS with class id, class name, score "
                            "and area.")
    output_points: str = spec("", "OUTPUT_POINTS", "Output centre points", "file_out",
                              optional=True, file_filter=_GPKG_FILTER,
                              help="Optional GeoPackage with one point per box centre.")
    output_layer: str = spec("detections", "OUTPUT_LAYER", "Layer name in the GeoPackage(s)",
                             "str", advanced=True,
                             help="The layer written (or replaced) in OUTPUT and "
                                  "OUTPUT_POINTS; their other layers are kept.")
    score_threshold: float = spec(-1.0, "SCORE_THRESHOLD",
                                  "Score threshold (-1 = the model's)", "float",
                                  minimum=-1, maximum=1,
                                  help="Boxes scoring lower are dropped (0 to 1); -1 uses the "
                                       "value stored in the model.")
    nms_iou: float = spec(-1.0, "NMS_IOU", "NMS IoU (-1 = the model's)", "float", minimum=-1,
                          maximum=1,
                          help="Boxes of a class overlapping more than this (IoU, 0 to 1) are "
                               "merged into the best one, within and across tiles; -1 uses "
                               "the value stored in the model.")
    max_detections: int = spec(300, "MAX_DETECTIONS", "Maximum detections per tile", "int",
                               minimum=1, maximum=100000, advanced=True)
    tile_size: int = spec(0, "TILE_SIZE", "Tile size (px, 0 = automatic)", "int",
                          minimum=0, maximum=8192,
                          help="Edge of the square tiles searched; automatic: the model's "
                               "patch size, at least three tile overlaps.")
    overlap: int = spec(-1, "OVERLAP", "Tile overlap (px, -1 = automatic)", "int",
                        minimum=-1, maximum=8192,
                        help="Pixels shared by neighbouring tiles; at least the largest "
                             "trained box (automatic: that plus a margin).")
    tta: bool = spec(False, "TTA", "Test-time augmentation (flips)", "bool",
                     help="Also detects on the flipped tiles and merges the boxes: better "
                          "recall, 3 × slower.")
    batch_size: int = spec(2, "BATCH_SIZE", "Tiles per batch", "int", minimum=1, maximum=256)
    grid_model: str = grid_model_field(
        "only the tiles holding a grid cell this grid model flags are "
        "searched, and boxes centred in other cells are dropped.")
    grid_threshold: float = grid_threshold_field("searched")
    engine: str = engine_field()
    device: str = device_field()

    def problems(self) -> list[str]:
        out = super().problems()
        for name, value in (("SCORE_THRESHOLD", self.score_threshold),
                            ("NMS_IOU", self.nms_iou)):
            if value != MODEL_VALUE and not 0 <= value <= 1:
                out.append(f"{name} {value:g} is neither between 0 and 1 nor {MODEL_VALUE:g} "
                           f"(the model's value): use a value from 0 to 1, or {MODEL_VALUE:g}.")
        if self.tile_size and self.tile_size % PATCH_MULTIPLE:
            out.append(f"Tile size {self.tile_size} is not a multiple of {PATCH_MULTIPLE}: "
                       f"use {nearest_patch_size(self.tile_size)}.")
        return out


@register_job
@dataclass
class DetectionSummaryJob(Job):
    """What Train Object Detection would sample: patches per split and boxes per class (the
    dialog's live pre-flight summary)."""

    kind = "detection_summary"
    title = "Object detection sampling summary"
    group = "Object detection"

    project: str = spec("", "PROJECT", "Labeling project or chips folder", "project_in")
    patch_size: int = spec(512, "PATCH_SIZE", "Patch size (px)", "int", minimum=MIN_PATCH_SIZE,
                           maximum=4096)
    split: float = spec(80.0, "SPLIT", "Training/validation split (% training)", "float",
                        minimum=0, maximum=100)
    shuffle: bool = spec(False, "SHUFFLE", "Shuffle rasters", "bool")
    seed: int = spec(0, "SEED", "Random seed", "int", minimum=0)
    pad_small_features: bool = spec(True, "PAD_SMALL_FEATURES", "Pad small features", "bool")
    feature_patch_percentage: float = spec(1.0, "FEATURE_PATCH_PERCENTAGE",
                                           "Feature patch percentage", "float", minimum=0,
                                           maximum=1)
    background_patch_ratio: float = spec(0.15, "BACKGROUND_PATCH_RATIO",
                                         "Background patch ratio", "float", minimum=0)

    def run(self, ctx: JobContext) -> dict:
        import tempfile

        from .data import prepare_detection_data

        with tempfile.TemporaryDirectory(prefix="dltrainer-detsummary-") as work:
            data = prepare_detection_data(self, ctx, Path(work))
            summary = data.plan.summary()
            names = {c["id"]: c["name"] for c in data.classes}
            summary["boxes"] = {s: {names.get(k, str(k)): n
                                    for k, n in data.box_counts(s).items()}
                                for s in ("train", "validation")}
            summary["largest_box_px"] = round(data.largest_box(), 1)
            summary["classes"] = data.classes
        return summary
