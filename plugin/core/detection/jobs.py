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
from ..raster_model_job import RasterModelJob, threshold_problems
from ..training import fields as trainer
from ..training.job import TrainingJob
from ..training.start_weights import start_weights_field
from .modelfile import ARCHITECTURES, AUTO

ARCHITECTURE_CHOICES = (AUTO, *ARCHITECTURES)
ARCHITECTURE_LABELS = {AUTO: "Automatic: FCOS (ResNet-18 FPN) on a CPU, RetinaNet (ResNet-50 "
                             "FPN) on a GPU",
                       "retinanet": "RetinaNet (ResNet-50 FPN)",
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
    architecture: str = spec(AUTO, "ARCHITECTURE", "Model architecture", "enum",
                             choices=ARCHITECTURE_CHOICES, choice_labels=ARCHITECTURE_LABELS,
                             help="auto: FCOS on a light ResNet-18 FPN on a CPU (it trains "
                                  "usefully there), RetinaNet on a ResNet-50 FPN on a GPU; the "
                                  "model stores the one trained. Or RetinaNet, Faster R-CNN or "
                                  "FCOS on a ResNet-50 FPN backbone, or the light FCOS.")
    init_model: str = trainer.init_model_field("object detection model")
    start_weights: str = start_weights_field(
        TASK, "torchvision's COCO detector of the same architecture (ImageNet ResNet-18 "
              "backbone for the light FCOS); the backbone's batch norms then stay fixed")
    patch_size: int = spec(0, "PATCH_SIZE", "Patch size (px, 0 = automatic)", "int",
                           minimum=0, maximum=4096,
                           help="Edge of the square patches the detector learns from; a "
                                "multiple of 32, larger than the largest object. The detector "
                                "never resizes them (the pixel size stays the raster's). 0: "
                                "four median objects across (128 to 512 px, within the "
                                "smallest raster, larger than the largest object).")
    split: float = trainer.split_field()
    shuffle: bool = trainer.shuffle_field()
    pad_small_features: bool = spec(True, "PAD_SMALL_FEATURES", "Pad small features", "bool",
                                    help="Grow boxes smaller than 25 px in x or y to 25 px "
                                         "around their centre (ENVI).")
    feature_patch_percentage: float = trainer.feature_patch_percentage_field(features="boxes")
    background_patch_ratio: float = trainer.background_patch_ratio_field(0.15, features="boxes")
    epochs: int = trainer.epochs_field(30)
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
    steps_per_epoch: int = trainer.steps_per_epoch_field(
        "Batches per epoch (0 = automatic)",
        "Each epoch draws this many batches of new random windows (up to half holding a whole "
        "object, fewer the more area the objects cover). 0: enough for about two passes over "
        "the training area, at least 12.")
    max_patches: int = trainer.max_patches_field()
    output_model: str = trainer.output_model_field(
        "the highest validation mAP50 (the last epoch's when fewer than 25 whole objects "
        "validate: too few to rank epochs)")

    def problems(self) -> list[str]:
        out = super().problems()
        if 0 < self.patch_size < MIN_PATCH_SIZE:
            out.append(f"Patch size {self.patch_size} is below {MIN_PATCH_SIZE} px: use "
                       f"{MIN_PATCH_SIZE} or more, or 0 (automatic).")
        elif self.patch_size and self.patch_size % PATCH_MULTIPLE:
            out.append(f"Patch size {self.patch_size} is not a multiple of {PATCH_MULTIPLE}: "
                       f"use {nearest_patch_size(self.patch_size)}.")
        return out


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
        out += threshold_problems(SCORE_THRESHOLD=self.score_threshold, NMS_IOU=self.nms_iou)
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
    patch_size: int = spec(0, "PATCH_SIZE", "Patch size (px, 0 = automatic)", "int", minimum=0,
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
    epochs: int = spec(30, "EPOCHS", "Number of epochs", "int", minimum=1)
    batch_size: int = spec(4, "BATCH_SIZE", "Patches per batch", "int", minimum=1)
    steps_per_epoch: int = spec(0, "STEPS_PER_EPOCH", "Batches per epoch (0 = automatic)", "int",
                                minimum=0)
    max_patches: int = spec(0, "MAX_PATCHES", "Max training patches per epoch (0 = all)", "int",
                            minimum=0)

    def run(self, ctx: JobContext) -> dict:
        import tempfile

        from ..training.length import training_length
        from .data import TrainingArea, prepare_detection_data

        with tempfile.TemporaryDirectory(prefix="dltrainer-detsummary-") as work:
            data = prepare_detection_data(self, ctx, Path(work))
            summary = data.plan.summary()
            names = {c["id"]: c["name"] for c in data.classes}
            summary["boxes"] = {s: {names.get(k, str(k)): n
                                    for k, n in data.box_counts(s).items()}
                                for s in ("train", "validation")}
            summary["largest_box_px"] = round(data.largest_box(), 1)
            summary["classes"] = data.classes
            per_epoch, total, warning = training_length(self, TrainingArea.of(data).open_px(),
                                                        data.patch_size)
            summary["steps"] = {"per_epoch": per_epoch, "total": total, "epochs": self.epochs,
                                "batch_size": self.batch_size}
            if warning:
                summary.setdefault("warnings", []).append(warning)
        return summary
