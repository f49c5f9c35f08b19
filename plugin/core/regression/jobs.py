"""Pixel regression jobs: Train Pixel Regression and Predict Values.

Nothing heavy at import time: the engine modules (torch, rasterio, smp) are imported when a job
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..job_fields import (
    TILE_SIZE_LABEL,
    device_field,
    engine_field,
    model_file_name,
    overlap_field,
    tta_field,
)
from ..jobs import Job, JobContext, register_job
from ..params import spec
from ..patchsize import patch_size_problem
from ..raster_model_job import RasterModelJob
from ..smp_networks import ENCODERS, SMP_NAMES
from ..training import fields as trainer
from ..training.job import TrainingJob
from ..training.start_weights import start_weights_field

ARCHITECTURES = ("auto", *SMP_NAMES)
ARCHITECTURE_LABELS = {"auto": "Automatic (U-Net on CPU, U-Net++ on GPU)",
                       "unetplusplus": "U-Net++", "unet": "U-Net", "deeplabv3plus": "DeepLabV3+"}
LOSSES = ("huber", "l1", "mse")
LOSS_LABELS = {"huber": "Huber (smooth L1)", "l1": "L1 (mean absolute error)",
               "mse": "MSE (mean squared error)"}
_RASTER_FILTER = "GeoTIFF (*.tif *.tiff)"


@register_job
@dataclass
class TrainPixelRegressionJob(TrainingJob):
    """Train a pixel regression model (a number per pixel) from a target raster or from points
    with a value."""

    kind = "train_pixel_regression"
    title = "Train Pixel Regression"
    legacy_params = {"encoder_weights": "ENCODER_WEIGHTS"}
    group = "Pixel regression"

    project: str = spec("", "PROJECT", "Labeling project (its training rasters)", "project_in",
                        optional=True, file_filter="Labeling project (*.gpkg)",
                        help="The labeling project whose training rasters are the inputs (their "
                             "roles train/validation are kept); or give INPUT_RASTERS.")
    rasters: list = spec([], "INPUT_RASTERS", "Input rasters", "raster_list", optional=True,
                         help="The rasters to learn from (when no labeling project is given).")
    targets: list = spec([], "TARGETS", "Target rasters", "raster_list", optional=True,
                         help="One single-band raster of the value per input raster, in the "
                              "same order, on exactly its grid (CRS, extent, pixel size); its "
                              "nodata pixels are not learnt. Or give POINTS.")
    points: str = spec("", "POINTS", "Target points", "vector_in", optional=True,
                       help="Points with a measured value (VALUE_FIELD) instead of target "
                            "rasters: the loss counts only at the points, widened by RADIUS.")
    value_field: str = spec("", "VALUE_FIELD", "Value field of the points", "str",
                            optional=True, help="The numeric field of POINTS to learn.")
    radius: int = spec(1, "RADIUS", "Point radius (px)", "int", minimum=0, maximum=50,
                       help="Pixels within this distance of a point take its value (0: the "
                            "point's pixel only).")
    target_name: str = spec("value", "TARGET_NAME", "Target name", "str",
                            help="What the value is, e.g. canopy height (model card, report).")
    target_unit: str = spec("", "TARGET_UNIT", "Target unit", "str", optional=True,
                            help="The value's unit, e.g. m (model card, report).")
    architecture: str = spec("auto", "ARCHITECTURE", "Model architecture", "enum",
                             choices=ARCHITECTURES, choice_labels=ARCHITECTURE_LABELS,
                             help="auto: U-Net on the CPU, U-Net++ on a GPU; or U-Net++, U-Net, "
                                  "DeepLabV3+ (segmentation-models-pytorch, one output).")
    encoder: str = spec("auto", "ENCODER", "Encoder (backbone)", "enum", choices=ENCODERS,
                        help="The network that extracts features. auto: ResNet-18 on the CPU, "
                             "ResNet-34 on a GPU.")
    start_weights: str = start_weights_field(
        "pixel_regression", "segmentation-models-pytorch's ImageNet weights of the encoder "
                            "(the decoder starts random)")
    init_model: str = trainer.init_model_field("pixel regression model")
    patch_size: int = spec(128, "PATCH_SIZE", "Patch size (px)", "int", minimum=32,
                           maximum=4096,
                           help="Edge of the square windows the model learns from; a multiple "
                                "of 32.")
    split: float = trainer.split_field()
    epochs: int = trainer.epochs_field(25)
    batch_size: int = trainer.batch_size_field(8)
    learning_rate: float = trainer.learning_rate_field(0.001)
    augment_rotation: bool = trainer.augment_rotation_field("Random 90° turns.")
    augment_flip: bool = trainer.augment_flip_field()
    augment_photometric: bool = spec(False, "AUGMENT_PHOTOMETRIC", "Augment: contrast", "bool",
                                     help="Random contrast (×0.8–1.25) per patch; off by "
                                          "default: a value computed from the bands (an index) "
                                          "changes with contrast.")
    loss: str = spec("huber", "LOSS", "Loss", "enum", choices=LOSSES, choice_labels=LOSS_LABELS,
                     help="On the normalised target: huber (L1 beyond 1 std, squared below; "
                          "robust to outliers), l1 or mse.")
    steps_per_epoch: int = trainer.steps_per_epoch_field(
        "Batches per epoch (0 = automatic)",
        "Each epoch draws this many batches of new random windows centred on pixels with a "
        "target. 0: enough for about two passes over the target area, at least 12.")
    max_patches: int = trainer.max_patches_field()
    output_model: str = trainer.output_model_field(
        "the lowest validation RMSE (without validation: the last model)")
    save_optimizer: bool = spec(True, "SAVE_OPTIMIZER", "Save optimizer state beside the last "
                                "model", "bool", advanced=True,
                                help="Writes <last model>.optim.safetensors so RESUME_FROM "
                                     "continues exactly.")

    def __post_init__(self) -> None:
        self.output_model = model_file_name(self.output_model)
        self.output_last_model = model_file_name(self.output_last_model)

    def problems(self) -> list[str]:
        return super().problems() + self.input_problems()

    def input_problems(self) -> list[str]:
        """The patch size, the input rasters and the targets (what the summary needs too)."""
        out = patch_size_problem(self.patch_size)
        if bool(self.project) == bool(self.rasters):
            out.append("Give the input rasters either as a labeling project (PROJECT) or as "
                       "INPUT_RASTERS (one of the two).")
        if bool(self.targets) == bool(self.points):
            out.append("Give the target either as target rasters (TARGETS) or as points "
                       "(POINTS with VALUE_FIELD) (one of the two).")
        if self.points and not self.value_field:
            out.append("Points need the field holding their value: set VALUE_FIELD.")
        if self.rasters and self.targets and len(self.rasters) != len(self.targets):
            out.append(f"{len(self.targets)} target raster(s) for {len(self.rasters)} input "
                       "raster(s): give one target per input raster, in the same order.")
        from pathlib import Path

        for path in [*self.rasters, *self.targets, *([self.points] if self.points else [])]:
            if not Path(path).is_file():
                out.append(f"The file {path} does not exist: check the path.")
        return out


@register_job
@dataclass
class RegressionSummaryJob(TrainPixelRegressionJob):
    """What Train Pixel Regression would learn from (the dialog's live pre-flight summary):
    target pixels for training, validation blocks and the training length in optimiser steps,
    with the warning below a few hundred. It takes a train job's values; only those of
    ``summary_inputs`` change the summary."""

    kind = "regression_summary"
    title = "Pixel regression summary"
    summary_inputs: ClassVar[tuple[str, ...]] = (
        "project", "rasters", "targets", "points", "value_field", "radius", "patch_size",
        "split", "seed", "epochs", "batch_size", "steps_per_epoch", "max_patches")

    def problems(self) -> list[str]:
        """Only the inputs must be right (the outputs of a training are not needed)."""
        return Job.problems(self) + self.input_problems()

    def run(self, ctx: JobContext) -> dict:
        import tempfile
        from pathlib import Path

        from ..training.length import length_summary, training_length
        from .data import read_sources, split_windows

        with tempfile.TemporaryDirectory(prefix="dltrainer-regsummary-") as work:
            sources = read_sources(self, Path(work))
            split = split_windows(sources, self.patch_size, self.split, self.seed)
        per_epoch = training_length(self, sum(h * w for h, w in split.shapes.values()))[0]
        length = length_summary(self.epochs, per_epoch, self.batch_size)
        return {"rows": [["Target pixels", split.train_pixels, ""],
                         ["Validation blocks", "", len(split.validation)]],
                "note": f"Windows of {self.patch_size} px from {len(sources)} raster(s).",
                "length": length, "warnings": [length["warning"]] if length["warning"] else []}


@register_job
@dataclass
class PredictValuesJob(RasterModelJob):
    """Predict a value for every pixel of a raster with a pixel regression model."""

    kind = "predict_values"
    output_missing = "Output value raster (OUTPUT) is required: choose a file name."
    model_task = "pixel_regression"
    title = "Predict Values"
    runner = "predict:predict_values"
    group = "Pixel regression"
    progress_phases = (("tile", 1.0),)

    input: str = spec("", "INPUT", "Input raster", "raster_in",
                      help="The raster to predict (same bands as the training rasters).")
    model: str = spec("", "MODEL", "Model", "model_in", file_filter=trainer.MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output value raster", "raster_out",
                       file_filter=_RASTER_FILTER,
                       help="Float32 GeoTIFF on the input's grid: the predicted value, nodata "
                            "where the input has no valid pixel.")
    overlap: float = overlap_field()
    tta: bool = tta_field(False, "Averages 8 turned/flipped predictions: smoother, 8 × "
                                 "slower.")
    batch_size: int = spec(4, "BATCH_SIZE", "Tiles per batch", "int", minimum=0, maximum=1024,
                           help="Tiles predicted at once; more is faster on a GPU and needs "
                                "more memory. 0: chosen from the free GPU memory (4 on the "
                                "CPU).")
    tile_size: int = spec(0, "TILE_SIZE", TILE_SIZE_LABEL, "int", minimum=0, maximum=8192,
                          advanced=True,
                          help="Pixels per forward pass (windows of the model's patch size); "
                               "larger tiles only use more memory per batch.")
    engine: str = engine_field()
    rescale: str = spec("none", "RESCALE", "Rescale input values", "enum",
                        choices=("none", "dtype"), advanced=True,
                        help="none: the input must hold values like the training rasters. "
                             "dtype: map the input data type's range onto the training data "
                             "type's.")
    device: str = device_field()

    def problems(self) -> list[str]:
        return super().problems() + patch_size_problem(self.tile_size, "Tile size",
                                                       "TILE_SIZE")
