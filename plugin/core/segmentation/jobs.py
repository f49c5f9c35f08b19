"""Pixel segmentation jobs: Train Pixel Segmentation, Classify Pixels and Export Model to ONNX.

Nothing heavy at import time: the engine modules (torch, rasterio, smp) are imported in ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..job_fields import (
    TILE_SIZE_LABEL,
    device_field,
    engine_field,
    grid_model_field,
    grid_threshold_field,
    model_file_name,
    overlap_field,
    tta_field,
)
from ..jobs import register_job
from ..params import spec
from ..patchsize import PATCH_MULTIPLE, nearest_patch_size, patch_size_problem  # noqa: F401
from ..raster_model_job import RasterModelJob
from ..smp_networks import ENCODERS
from ..training import fields as trainer
from ..training.job import TrainingJob
from ..training.start_weights import start_weights_field
from .losses import LOSS_CHOICES, loss_for
from .modelfile import NETWORKS

ARCHITECTURES = ("auto", *NETWORKS)
ARCHITECTURE_LABELS = {"auto": "Automatic (U-Net on CPU, U-Net++ on GPU)",
                       "unetplusplus": "U-Net++", "unet": "U-Net", "deeplabv3plus": "DeepLabV3+"}
LOSS_LABELS = {"auto": "Automatic (by unlabelled pixels)",
               "gce_dice": "Generalized cross-entropy + Dice", "ce_dice": "Cross-entropy + Dice",
               "ce": "Cross-entropy", "focal": "Focal", "tversky": "Tversky"}
UNLABELLED = ("background", "unknown")
_PROJECT_FILTER = "Labeling project (*.gpkg)"
_MODEL_FILTER = trainer.MODEL_FILTER
_RASTER_FILTER = "GeoTIFF (*.tif *.tiff)"
_TRAINING_DATA_FILTER = ("Labeling project (*.gpkg);;Segmentation chips folder (its manifest.json) "
                         "(manifest.json)")


def _per_class_problem(value, name: str) -> list[str]:
    from ..errors import UserError
    from ..perclass import parse_per_class

    try:
        parse_per_class(value, name)
    except UserError as exc:
        return [str(exc)]
    return []


@register_job
@dataclass
class TrainPixelSegmentationJob(TrainingJob):
    """Train a pixel segmentation model (U-Net++, U-Net, DeepLabV3+) from a labeling project."""

    kind = "train_pixel_segmentation"
    legacy_params = {"encoder_weights": "ENCODER_WEIGHTS",
                     "encoder_weights_file": "ENCODER_WEIGHTS_FILE"}
    chips_folder_kinds = "a segmentation chips folder"
    previous_defaults = {"loss": "ce_dice"}   # before LOSS auto (issue 19)
    title = "Train Pixel Segmentation"
    group = "Pixel segmentation"

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        help="The labeling project (GeoPackage) with the training rasters and "
                             "their labels, or a folder of chips exported in the segmentation "
                             "format (choose its manifest.json).",
                        file_filter=_TRAINING_DATA_FILTER)
    architecture: str = spec("auto", "ARCHITECTURE", "Model architecture", "enum",
                             choices=ARCHITECTURES, choice_labels=ARCHITECTURE_LABELS,
                             help="auto: U-Net on the CPU (about 3 × cheaper per step), U-Net++ "
                                  "on a GPU; or U-Net++, U-Net, DeepLabV3+.")
    encoder: str = spec("auto", "ENCODER", "Encoder (backbone)", "enum", choices=ENCODERS,
                        help="The network that extracts features; larger encoders learn more "
                             "but train slower. auto: ResNet-18 on the CPU, ResNet-34 on a "
                             "GPU.")
    start_weights: str = start_weights_field(
        "pixel_segmentation", "segmentation-models-pytorch's ImageNet weights of the encoder "
                              "(the decoder starts random)")
    init_model: str = trainer.init_model_field("pixel segmentation model")
    patch_size: int = spec(128, "PATCH_SIZE", "Patch size (px)", "int", minimum=32,
                           maximum=4096,
                           help="Edge of the square patches the model learns from; a multiple "
                                "of 32, smaller than the rasters.")
    split: float = trainer.split_field()
    shuffle: bool = trainer.shuffle_field()
    feature_patch_percentage: float = trainer.feature_patch_percentage_field()
    background_patch_ratio: float = trainer.background_patch_ratio_field(0.15)
    epochs: int = trainer.epochs_field(25)
    batch_size: int = trainer.batch_size_field(8)
    learning_rate: float = trainer.learning_rate_field(0.001)
    augment_rotation: bool = trainer.augment_rotation_field(
        "Random 90° turns plus small rotations.")
    augment_scale: bool = trainer.augment_scale_field("Random zoom in/out by up to 20 %.")
    augment_flip: bool = trainer.augment_flip_field()
    augment_photometric: bool = spec(True, "AUGMENT_PHOTOMETRIC",
                                     "Augment: contrast", "bool",
                                     help="Random contrast (×0.8–1.25) per patch, the same for "
                                          "all bands: lighting and exposure differ across a "
                                          "scene.")
    solid_distances: dict | list = spec({}, "SOLID_DISTANCES", "Solid distance per class (px)",
                                        "dict", optional=True, advanced=True,
                                 help="Pixels around point and line labels taken as the "
                                      "feature: 1=2, 3=0.5 (class id = px), one value for all "
                                      "(2), or a list by class id (2, 0, 1); empty uses the "
                                      "project's.")
    blur_distances: dict | list = spec({}, "BLUR_DISTANCES", "Blur distance per class (px)", "dict",
                                optional=True, advanced=True,
                                help="Soft label margin beyond the solid distance around point "
                                     "and line labels, shrinking to zero during training; "
                                     "same forms as SOLID_DISTANCES; empty uses the project's.")
    class_weight_min: float = spec(0.0, "CLASS_WEIGHT_MIN", "Class weight min", "float",
                                   minimum=0, maximum=10,
                                   help="Rare-class sampling weight at the end of training.")
    class_weight_max: float = spec(1.0, "CLASS_WEIGHT_MAX", "Class weight max", "float",
                                   minimum=0, maximum=10,
                                   help="Rare-class sampling weight at the start of training "
                                        "(useful range 1–6; 2–3 when features are sparse).")
    loss: str = spec("auto", "LOSS", "Loss", "enum", choices=LOSS_CHOICES,
                     choice_labels=LOSS_LABELS,
                     help="auto (default): gce_dice where unlabelled pixels are background, "
                          "ce_dice where they are unknown. gce_dice: generalized cross-entropy "
                          "(q 0.7) + Dice (good on sparse features; pixels whose label the "
                          "image contradicts, such as an old map's, pull less, and after the "
                          "first fifth of the epochs not at all: truncated loss), ce_dice: "
                          "cross-entropy + Dice, ce: cross-entropy, focal: focal loss, tversky: "
                          "Tversky loss (α 0.3, β 0.7: misses cost more than false alarms).")
    unlabelled_pixels: str = spec("background", "UNLABELLED_PIXELS", "Unlabelled pixels",
                                  "enum", choices=UNLABELLED,
                                  help="background: every pixel without a label is learnt as "
                                       "background (labels cover the features completely); "
                                       "unknown: only labelled pixels are learnt (sparse "
                                       "labels such as land-cover polygons).")
    loss_weight: float = spec(0.0, "LOSS_WEIGHT", "Loss weight", "float", minimum=0, maximum=1,
                              help="0 treats feature and background pixels equally; higher "
                                   "values weigh feature pixels more in the loss.")
    steps_per_epoch: int = trainer.steps_per_epoch_field(
        "Batches per epoch (0 = automatic)",
        "Each epoch draws this many batches of new random windows (up to half centred on "
        "labelled pixels). 0: enough for about two passes over the training area, at least 12.")
    max_patches: int = trainer.max_patches_field()
    output_model: str = trainer.output_model_field(
        "the best mean validation IoU of the classes (background included when it is learnt; "
        "without validation: the last model)")
    save_optimizer: bool = spec(True, "SAVE_OPTIMIZER", "Save optimizer state beside the last "
                                "model", "bool", advanced=True,
                                help="Writes <last model>.optim.safetensors (the AdamW moments "
                                     "and the training weights, about three times the model's "
                                     "size) so RESUME_FROM continues exactly; without it a "
                                     "resumed run restarts the optimizer from the averaged "
                                     "weights.")

    def __post_init__(self) -> None:
        self.output_model = model_file_name(self.output_model)
        self.output_last_model = model_file_name(self.output_last_model)

    def extra_outputs(self) -> list[tuple[str, str, bool]]:
        from ..modelfile import optimizer_path

        out = super().extra_outputs()
        if self.output_last_model and self.save_optimizer:
            out.append(("Optimizer state beside the last model",
                        str(optimizer_path(self.output_last_model)), False))
        return out

    def concrete_choice(self, name: str, value):
        """LOSS auto is the loss :func:`.losses.loss_for` picks for UNLABELLED_PIXELS."""
        return loss_for(value, self.unlabelled_pixels) if name == "loss" else value

    def problems(self) -> list[str]:
        out = super().problems()
        out += patch_size_problem(self.patch_size)
        if self.class_weight_min > self.class_weight_max:
            out.append(f"Class weight min ({self.class_weight_min:g}) is above max "
                       f"({self.class_weight_max:g}): swap them.")
        if self.architecture == "deeplabv3plus" and self.batch_size < 2:
            out.append("DeepLabV3+ needs at least 2 patches per batch (BATCH_SIZE): use 2 or "
                       "more.")
        out += _per_class_problem(self.solid_distances, "Solid distances (SOLID_DISTANCES)")
        out += _per_class_problem(self.blur_distances, "Blur distances (BLUR_DISTANCES)")
        return out


@register_job
@dataclass
class ClassifyPixelsJob(RasterModelJob):
    """Classify every pixel of a raster with a trained pixel segmentation model."""

    kind = "classify_pixels"
    output_missing = "Output class raster (OUTPUT) is required: choose a file name."
    model_task = "pixel_segmentation"
    title = "Classify Pixels"
    runner = "predict:classify_pixels"
    group = "Pixel segmentation"
    progress_phases = (("tile", 0.9), ("polygons", 0.1))

    input: str = spec("", "INPUT", "Input raster", "raster_in",
                      help="The raster to classify (same bands as the training rasters).")
    model: str = spec("", "MODEL", "Model", "model_in", file_filter=_MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output class raster", "raster_out",
                       file_filter=_RASTER_FILTER,
                       help="GeoTIFF of class ids with the model's class colours.")
    output_probabilities: str = spec("", "OUTPUT_PROBABILITIES", "Output probabilities",
                                     "raster_out", optional=True, file_filter=_RASTER_FILTER,
                                     help="Optional GeoTIFF with one band per class "
                                          "(probability scaled to 0–255).")
    output_vector: str = spec("", "OUTPUT_VECTOR", "Output polygons", "vector_out",
                              optional=True, file_filter="GeoPackage (*.gpkg)",
                              help="Optional GeoPackage of class polygons with class id, name "
                                   "and area.")
    output_vector_layer: str = spec("classes", "OUTPUT_VECTOR_LAYER",
                                    "Layer name of the polygons", "str", advanced=True,
                                    help="The layer written (or replaced) in OUTPUT_VECTOR; its "
                                         "other layers are kept.")
    min_area: float = spec(0.0, "MIN_AREA", "Minimum polygon area (m²)", "float",
                           minimum=0, help="Smaller polygons are left out of OUTPUT_VECTOR. "
                                           "Areas are in m² (on the ellipsoid for a "
                                           "geographic CRS such as EPSG:4326).")
    min_pixels: int = spec(4, "MIN_PIXELS", "Minimum polygon size (pixels)", "int", minimum=0,
                           maximum=10**9,
                           help="Polygons of fewer pixels are left out of the polygons (ENVI's "
                                "aggregate minimum size); 0 keeps single pixels.")
    overlap: float = overlap_field()
    tta: bool = tta_field(True, "Averages the predictions of the turned and flipped tiles the "
                                "model learnt to answer alike (8 with rotation and flip "
                                "augmentation): better (DeepForest OSBS_029 trees: tree IoU "
                                "+0.008 to +0.013), up to 8 × slower. Off: fastest.")
    batch_size: int = spec(4, "BATCH_SIZE", "Tiles per batch", "int", minimum=0, maximum=1024,
                           help="Tiles classified at once; more is faster on a GPU and needs "
                                "more memory. 0: chosen from the free GPU memory (4 on the "
                                "CPU).")
    tile_size: int = spec(0, "TILE_SIZE", TILE_SIZE_LABEL, "int",
                          minimum=0, maximum=8192, advanced=True,
                          help="Pixels per forward pass: tiles of this size are predicted as "
                               "windows of the model's patch size (the size it learnt on), so "
                               "the answer does not depend on it; larger tiles only use more "
                               "memory per batch.")
    grid_model: str = grid_model_field(
        "only the grid cells this grid model flags are classified; the others "
        "come out as background.")
    grid_threshold: float = grid_threshold_field("classified")
    engine: str = engine_field()
    rescale: str = spec("none", "RESCALE", "Rescale input values", "enum",
                        choices=("none", "dtype"), advanced=True,
                        help="none: the input must hold values like the training rasters (a "
                             "raster of another data type whose values do not fit is refused). "
                             "dtype: map the input data type's range onto the training data "
                             "type's (uint16 0–65535 or float 0–1 → uint8 0–255).")
    device: str = device_field()

    def problems(self) -> list[str]:
        out = super().problems()
        out += patch_size_problem(self.tile_size, "Tile size", "TILE_SIZE")
        return out


