"""Grid model and chip classifier jobs: Train Grid Model, Classify Grid, Train Chip Classifier,
Classify Chips. Nothing heavy at import time (the engines are imported in ``run``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..job_fields import device_field, tta_field
from ..jobs import Job, JobContext, register_job
from ..params import spec
from ..raster_model_job import RasterModelJob
from ..training import fields as trainer
from ..training.job import TrainingJob
from ..training.start_weights import start_weights_field
from .architectures import ARCHITECTURES, AUTO
from .defaults import CHIP_EPOCHS, GRID_EPOCHS
from .gridcells import DEFAULT_MIN_COVER

#: Grid sizes are multiples of this (px). The timm networks pool globally, so any side works;
#: 16 keeps ENVI's sizes (224, multiples of 32) and lets a coarse raster (Landsat's 30 m) have
#: cells of a few hundred metres, hundreds of them on one scene (bench/grid_real_data.py).
GRID_MULTIPLE = 16

_PROJECT_FILTER = "Labeling project (*.gpkg)"
_MODEL_FILTER = trainer.MODEL_FILTER
GROUP = "Image classification"


# -- fields shared by both trainers (factories keep each job's parameter order) ------------------
def _architecture():
    return spec(AUTO, "ARCHITECTURE", "Architecture", "enum", choices=(AUTO, *ARCHITECTURES),
                help="The timm backbone: auto (default: ResNet18 on a CPU, ResNet50 on a GPU, "
                     "as ENVI), ResNet50, ResNet101, ResNet18/34, EfficientNet-B0, "
                     "ConvNeXt-Tiny; any band count.")


def _start_weights(task: str):
    return start_weights_field(task, "timm's ImageNet weights of the architecture (its "
                                     "default pretrained tag)")


def _beta():
    return spec(2.0, "BETA", "F-beta β", "float", minimum=0.1, maximum=10,
                help="β of the F-beta score the multi-label thresholds are tuned for; 2 weighs "
                     "recall 4× precision (Planet).")


def _tta(what: str):
    return tta_field(True, f"A model trained with flips and 90° turns scores each {what} as "
                           "the mean over its 8 flips/turns, as its validation did (its tuned "
                           "thresholds fit these scores): better, 8 × slower. Off: one pass.",
                     advanced=True)


@register_job
@dataclass
class TrainGridModelJob(TrainingJob):
    """Train a grid model (ENVI): a classification network that says which classes each grid
    cell of a raster holds (multi-label)."""

    kind = "train_grid_model"
    legacy_params = {"weights": "WEIGHTS", "weights_file": "WEIGHTS_FILE"}
    title = "Train Grid Model"
    group = GROUP

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        file_filter=_PROJECT_FILTER,
                        help="The labeling project with the training rasters and labels.")
    architecture: str = _architecture()
    grid_size: int = spec(224, "GRID_SIZE", "Grid size (px)", "int", minimum=GRID_MULTIPLE,
                          maximum=4096,
                          help=f"Side of the square grid cells; a multiple of {GRID_MULTIPLE} "
                               "(ENVI: 224).")
    min_cover: float = spec(DEFAULT_MIN_COVER, "MIN_COVER", "Minimum class cover (0–1)",
                            "float", minimum=0.0, maximum=1.0,
                            help="A cell is labelled with a class when the class covers at "
                                 "least this share of the cell's valid pixels; cells with no "
                                 "such class are background cells.")
    split: float = trainer.split_field()
    shuffle: bool = trainer.shuffle_field()
    epochs: int = trainer.epochs_field(GRID_EPOCHS)
    batch_size: int = spec(0, "BATCH_SIZE", "Cells per batch (0 = automatic)", "int",
                           minimum=0, maximum=4096,
                           help="Cells per optimisation step; 0: about the pixels of ENVI's 5 "
                                "cells of 224 px, 5 to 32 cells (32 for cells of 64 px or "
                                "less); limited by GPU memory.")
    learning_rate: float = trainer.learning_rate_field(0.0005)
    feature_patch_percentage: float = trainer.feature_patch_percentage_field("cells")
    background_patch_ratio: float = trainer.background_patch_ratio_field(0.5, "cell")
    class_balance: str = trainer.class_balance_field("sampling", "cells")
    steps_per_epoch: int = trainer.steps_per_epoch_field(
        "Batches per epoch (0 = automatic)",
        "Random cell windows drawn per epoch, in batches; 0: as many as the training cells, "
        "at least 3 batches (300 steps with the default 100 epochs).")
    pad_small_features: bool = spec(True, "PAD_SMALL_FEATURES", "Pad small features", "bool",
                                    help="A class with at least 64 px in a cell labels it "
                                         "even below the minimum cover.")
    augment_rotation: bool = trainer.augment_rotation_field()
    augment_scale: bool = trainer.augment_scale_field()
    augment_flip: bool = trainer.augment_flip_field("Augment: flips and 90° turns")
    start_weights: str = _start_weights("grid")
    beta: float = _beta()
    init_model: str = trainer.init_model_field("model of this kind", advanced=True)
    output_model: str = trainer.output_model_field("the lowest validation loss")

    def problems(self) -> list[str]:
        out = super().problems()
        if self.grid_size % GRID_MULTIPLE:
            near = max(GRID_MULTIPLE, round(self.grid_size / GRID_MULTIPLE) * GRID_MULTIPLE)
            out.append(f"Grid size {self.grid_size} is not a multiple of {GRID_MULTIPLE}: use "
                       f"{near}.")
        return out


@register_job
@dataclass
class ClassifyGridJob(RasterModelJob):
    """Classify a raster cell by cell with a grid model: a GeoPackage of grid cells."""

    kind = "classify_grid"
    output_missing = "Output (OUTPUT) is required: choose a GeoPackage file name."
    model_task = "grid"
    title = "Classify Grid"
    runner = "predict_grid:classify_grid"
    memory_fix = "Use fewer cells per batch (BATCH_SIZE)."
    group = GROUP

    input: str = spec("", "INPUT", "Input raster", "raster_in")
    model: str = spec("", "MODEL", "Grid model", "model_in", file_filter=_MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output grid cells", "file_out",
                       file_filter="GeoPackage (*.gpkg)",
                       help="GeoPackage of cells (the raster's CRS): class (top class, or "
                            "background when no class passes its threshold), score, "
                            "score_<class> per class, classes (those over the threshold).")
    output_layer: str = spec("grid_cells", "OUTPUT_LAYER", "Layer name in the GeoPackage", "str",
                             advanced=True, help="The layer written (or replaced) in OUTPUT; "
                                                 "its other layers are kept.")
    threshold: float = spec(0.0, "THRESHOLD", "Threshold (0 = the model's tuned thresholds)",
                            "float", minimum=0.0, maximum=1.0,
                            help="A class is in a cell when its score reaches this; 0 uses the "
                                 "per-class thresholds tuned on validation.")
    tta: bool = _tta("cell")
    batch_size: int = spec(16, "BATCH_SIZE", "Cells per batch", "int", minimum=1,
                           maximum=4096, advanced=True)
    device: str = device_field()


@register_job
@dataclass
class TrainChipClassifierJob(TrainingJob):
    """Train a chip classifier (GBDX, Planet): one class (softmax) or several tags (sigmoid)
    per chip."""

    kind = "train_chip_classifier"
    legacy_params = {"weights": "WEIGHTS", "weights_file": "WEIGHTS_FILE"}
    title = "Train Chip Classifier"
    runner = "train_chips:train_chip_classifier"
    group = GROUP

    input: str = spec("", "INPUT", "Chips folder or labeling project", "folder_in",
                      help="A chips folder (ImageFolder, GBDX chips + ref.geojson, multi-label "
                           "CSV) or a labeling project, whose features are cut into chips.")
    multi_label: bool = spec(False, "MULTI_LABEL", "Multi-label (several tags per chip)", "bool",
                             help="Off: one class per chip (softmax). On: tags with one "
                                  "sigmoid and one tuned threshold per class.")
    architecture: str = _architecture()
    classes: list = spec([], "CLASSES", "Classes to train on (empty = all)", "str_list",
                         optional=True, help="Class names as in the chips; chips of other "
                                             "classes are ignored.")
    min_side: int = spec(0, "MIN_SIDE", "Minimum chip side (px)", "int", minimum=0,
                         maximum=8192, help="Chips with a shorter side are skipped.")
    max_side: int = spec(0, "MAX_SIDE", "Maximum chip side (px, 0 = largest chip)", "int",
                         minimum=0, maximum=8192,
                         help="Chips with a longer side are skipped, smaller ones zero-padded "
                              "to it (GBDX: 150).")
    resize: int = spec(0, "RESIZE", "Resize chips to (px, 0 = no)", "int", minimum=0,
                       maximum=8192)
    class_balance: str = trainer.class_balance_field("sampling", "chips")
    two_rounds: bool = spec(False, "TWO_ROUNDS", "Train in two rounds", "bool",
                            help="Round 1 on balanced classes; round 2 on the original "
                                 "distribution, training only the last layer (GBDX).")
    epochs: int = trainer.epochs_field(CHIP_EPOCHS, "Epochs (round 1)")
    epochs_2: int = spec(8, "EPOCHS_2", "Epochs (round 2)", "int", minimum=1, maximum=100000)
    learning_rate: float = trainer.learning_rate_field(0.001, "Learning rate (round 1)")
    learning_rate_2: float = spec(0.01, "LEARNING_RATE_2", "Learning rate (round 2)", "float",
                                  minimum=1e-7, maximum=1.0)
    train_size: int = spec(0, "TRAIN_SIZE", "Training chips per epoch (0 = automatic)", "int",
                           minimum=0, help="Chips drawn per epoch of round 1; 0: every "
                                           "training chip once, at least 9 batches (315 "
                                           "steps with the default 35 epochs).")
    train_size_2: int = spec(0, "TRAIN_SIZE_2", "Training chips per epoch, round 2 "
                             "(0 = half of round 1)", "int", minimum=0, advanced=True)
    test_size: int = spec(100, "TEST_SIZE", "Test chips held out", "int", minimum=0,
                          help="Chips kept out of training for the test report (at most a "
                               "third; 0 = no test).")
    split: float = trainer.split_field()
    batch_size: int = trainer.batch_size_field(32, "Chips")
    beta: float = _beta()
    augment: bool = spec(True, "AUGMENT", "Augment: flips and 90° turns", "bool")
    start_weights: str = _start_weights("chip_classification")
    box_size: float = spec(25.0, "BOX_SIZE", "Box size for point labels (px, project input)",
                           "float", minimum=1, maximum=4096, advanced=True)
    init_model: str = trainer.init_model_field("model of this kind", advanced=True)
    output_model: str = trainer.output_model_field(
        "the lowest validation loss (of round 2 with two rounds)", "Output model")
    output_last_model: str = trainer.output_last_model_field(advanced=True)

    def problems(self) -> list[str]:
        out = super().problems()
        p = Path(self.input) if self.input else None
        if p is not None:
            if not p.exists():
                out.append(f"The input {self.input} does not exist: choose a chips folder or "
                           "a labeling project (INPUT).")
            elif p.is_file() and p.suffix.lower() != ".gpkg":
                out.append(f"The input {p.name} is neither a chips folder nor a labeling "
                           "project (.gpkg): check INPUT.")
        if self.max_side and self.min_side > self.max_side:
            out.append("The minimum chip side is larger than the maximum: lower MIN_SIDE.")
        if self.two_rounds and self.resume_from:
            out.append("Resuming (RESUME_FROM) a two-round training is not supported: clear "
                       "one.")
        return out


@register_job
@dataclass
class ClassifyChipsJob(Job):
    """Classify chips with a chip classifier: a chips folder → CSV, or the features of a
    vector layer over a raster → a copy of the layer with the predictions."""

    kind = "classify_chips"
    title = "Classify Chips"
    runner = "predict_chips:classify_chips"
    memory_fix = "Use fewer chips per batch (BATCH_SIZE)."
    group = GROUP

    input: str = spec("", "INPUT", "Chips folder or vector layer", "folder_in",
                      help="A folder of chips, or a vector file whose features are cut from "
                           "RASTER as training did.")
    raster: str = spec("", "RASTER", "Raster (for a vector INPUT)", "raster_in", optional=True)
    model: str = spec("", "MODEL", "Chip classifier", "model_in", file_filter=_MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output (CSV or GeoPackage)", "file_out",
                       file_filter="CSV (*.csv);;GeoPackage (*.gpkg)",
                       help="Folder INPUT: a CSV with chip, class, score and one probability "
                            "per class; vector INPUT: a GeoPackage copy of the layer with "
                            "those fields.")
    output_layer: str = spec("", "OUTPUT_LAYER", "Layer name in the GeoPackage (empty = the "
                             "input layer's)", "str", optional=True, advanced=True,
                             help="Vector INPUT: the layer written (or replaced) in OUTPUT; its "
                                  "other layers are kept.")
    tta: bool = _tta("chip")
    batch_size: int = spec(32, "BATCH_SIZE", "Chips per batch", "int", minimum=1,
                           maximum=4096, advanced=True)
    device: str = device_field()

    def problems(self) -> list[str]:
        out = super().problems()
        p = Path(self.input) if self.input else None
        if p is not None and not p.exists():
            out.append(f"The input {self.input} does not exist: check INPUT.")
        elif p is not None and p.is_file():
            if not self.raster:
                out.append("A vector INPUT needs the raster its chips are cut from (RASTER).")
            elif not Path(self.raster).is_file():
                out.append(f"The raster {self.raster} does not exist: check RASTER.")
        if self.model and not Path(self.model).is_file():
            out.append(f"The model {self.model} does not exist: check MODEL.")
        if not self.output:
            out.append("Output (OUTPUT) is required: choose a file name.")
        elif p is not None and p.exists():   # the format written follows the input
            suffix = ".gpkg" if p.is_file() else ".csv"
            if not self.output.lower().endswith(suffix):
                what = ("a vector INPUT gives a GeoPackage copy of the layer" if p.is_file()
                        else "a chips folder gives a CSV table")
                out.append(f"Output (OUTPUT) {Path(self.output).name} does not end in {suffix}: "
                           f"{what}; name it like {Path(self.output).stem or 'output'}{suffix}.")
        return out


@register_job
@dataclass
class ChipSummaryJob(TrainChipClassifierJob):
    """What Train Chip Classifier would use: chips per class in the training, validation and
    test sets, with the same reading, side filter and split (the dialog's live pre-flight
    summary; a labeling project's features are cut into chips in a temporary folder). It takes
    a train job's values; only those of ``summary_inputs`` change the summary."""

    kind = "chip_summary"
    title = "Chip classifier summary"
    summary_inputs: ClassVar[tuple[str, ...]] = (
        "input", "multi_label", "classes", "min_side", "max_side", "test_size", "split",
        "seed", "box_size", "epochs", "batch_size", "train_size")

    def problems(self) -> list[str]:
        """Only the chips input must exist (the outputs of a training are not needed)."""
        out = Job.problems(self)
        if self.input and not Path(self.input).exists():
            out.append(f"The input {self.input} does not exist: choose a chips folder or a "
                       "labeling project (INPUT).")
        return out

    def run(self, ctx: JobContext) -> dict:
        import tempfile

        from .chipsplit import chip_summary, select_chips

        with tempfile.TemporaryDirectory(prefix="dltrainer-chipsummary-") as work:
            return chip_summary(*select_chips(self, ctx, Path(work)), job=self)


@register_job
@dataclass
class GridSummaryJob(TrainGridModelJob):
    """What Train Grid Model would sample (the dialog's live pre-flight summary): the sampling
    summary of its grid cells (each cell one patch of GRID_SIZE px, no overlap, the same split
    and feature/background shares) and the training length in optimiser steps, with the
    warning below a few hundred steps. It takes a train job's values; only those of
    ``summary_inputs`` change the summary."""

    kind = "grid_summary"
    title = "Grid model summary"
    summary_inputs: ClassVar[tuple[str, ...]] = (
        "project", "grid_size", "split", "shuffle", "seed", "feature_patch_percentage",
        "background_patch_ratio", "pad_small_features", "epochs", "batch_size",
        "steps_per_epoch")

    def problems(self) -> list[str]:
        """Only the project must exist (the outputs of a training are not needed)."""
        return Job.problems(self) + self.project_problems()

    def sampling_job(self):
        """The ``sample_summary`` job of this grid model's cells."""
        from ..sampling.jobs import SampleSummaryJob

        return SampleSummaryJob(project=self.project, patch_size=self.grid_size,
                                stride=self.grid_size, split=self.split, shuffle=self.shuffle,
                                seed=self.seed,
                                feature_patch_percentage=self.feature_patch_percentage,
                                background_patch_ratio=self.background_patch_ratio,
                                pad_small_features=self.pad_small_features)

    def run(self, ctx: JobContext) -> dict:
        from ..training.length import length_summary
        from .gridwindows import grid_batch, grid_steps

        summary = self.sampling_job().run(ctx)
        per_epoch = grid_steps(self, int(summary["patches"]["train"]["total"]))
        summary["length"] = length_summary(self.epochs, per_epoch, grid_batch(self),
                                           "EPOCHS or STEPS_PER_EPOCH")
        if summary["length"]["warning"]:
            summary["warnings"] = [*summary["warnings"], summary["length"]["warning"]]
        return summary
