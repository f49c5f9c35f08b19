"""Parameter fields every train job has, as factories: each job calls them where the field
belongs in its own parameter order, so the same parameter has the same name, label, range and
help in every family (dialogs, Processing, ``dltrain``).
"""

from __future__ import annotations

from ..job_fields import MODEL_FILTER
from ..params import spec


def seed_field():
    """SEED: the random seed of sampling, augmentation and weight initialisation."""
    return spec(0, "SEED", "Random seed", "int", minimum=0, advanced=True,
                help="The same seed, data and settings give the same patches and "
                     "augmentations.")


def patience_field():
    """PATIENCE: epochs without a better validation score before training stops."""
    return spec(0, "PATIENCE", "Early stopping patience (epochs, 0 = off)", "int", minimum=0,
                advanced=True,
                help="Stop after this many epochs without a better validation score.")


def trials_field():
    """TRIALS: trials of the hyperparameter search (0: no search, train once as set)."""
    return spec(0, "TRIALS", "Hyperparameter search trials (0 = off)", "int", minimum=0,
                maximum=500, advanced=True,
                help="Train this many short trials, each with other learning rate, loss, "
                     "architecture or patch size (Optuna), stop weak ones early and keep the "
                     "best model. The first trial uses the settings as given.")


def search_minutes_field():
    """SEARCH_MINUTES: the time budget of the whole search (minutes of wall-clock time)."""
    return spec(10.0, "SEARCH_MINUTES", "Search time budget (minutes)", "float", minimum=0.1,
                maximum=10080.0, advanced=True,
                help="Wall-clock minutes for all trials together; each trial gets an equal "
                     "share and stops when it is used up. Only with TRIALS.")


def num_workers_field():
    """NUM_WORKERS: data loader processes (-1: chosen from the cores available)."""
    return spec(-1, "NUM_WORKERS", "Data loader workers (-1 = automatic)", "int", minimum=-1,
                maximum=64, advanced=True,
                help="Processes preparing batches; automatic picks from the cores available.")


def init_model_field(model_kind: str, advanced: bool = False):
    """INIT_MODEL: a model of the same family to fine-tune; ``model_kind`` names the family
    and what is taken from the model (e.g. "pixel segmentation model ... encoder")."""
    return spec("", "INIT_MODEL", "Start from model (fine-tune)", "model_in", optional=True,
                advanced=advanced, file_filter=MODEL_FILTER,
                help=f"An existing {model_kind} to fine-tune; its architecture and "
                     "normalisation are used.")


def resume_from_field():
    """RESUME_FROM: a last model of an earlier run to continue."""
    return spec("", "RESUME_FROM", "Resume from last model", "model_in", optional=True,
                advanced=True, file_filter=MODEL_FILTER,
                help="A last model written by an earlier run: training continues after its "
                     "epoch.")


def output_last_model_field(advanced: bool = False):
    """OUTPUT_LAST_MODEL: the model after the last epoch (optional)."""
    return spec("", "OUTPUT_LAST_MODEL", "Output last model", "model_out", optional=True,
                advanced=advanced, file_filter=MODEL_FILTER,
                help="The model after the last epoch (to resume from).")


def log_folder_field():
    """LOG_FOLDER: TensorBoard, CSV and report (empty: next to the output model)."""
    return spec("", "LOG_FOLDER", "Log folder (TensorBoard, CSV, report)", "folder_out",
                optional=True, advanced=True,
                help="Empty: <output model>_logs next to the model.")


def split_field():
    """SPLIT: percent of the training data used for training; the rest validates."""
    return spec(80.0, "SPLIT", "Training/validation split (% training)", "float", minimum=0,
                maximum=100, decimals=0,
                help="Percent of the rasters (or patches, chips) used for training; the rest "
                     "validates.")


def shuffle_field():
    """SHUFFLE: draw the training/validation split with the seed."""
    return spec(False, "SHUFFLE", "Shuffle rasters", "bool",
                help="Draw the training/validation split with the seed; off gives the same "
                     "split every run.")


def epochs_field(default: int, label: str = "Number of epochs"):
    """EPOCHS with the family's ``default``."""
    return spec(default, "EPOCHS", label, "int", minimum=1, maximum=100000,
                help="Passes over the training data; the best model is kept whatever the "
                     "number.")


def batch_size_field(default: int, items: str = "Patches"):
    """BATCH_SIZE of a trainer: ``items`` (patches, chips) per optimiser step."""
    return spec(default, "BATCH_SIZE", f"{items} per batch", "int", minimum=1, maximum=4096,
                help=f"{items} per optimisation step; limited by GPU memory.")


def learning_rate_field(default: float, label: str = "Learning rate"):
    """LEARNING_RATE with the family's ``default`` (AdamW, warm-up then cosine decay)."""
    return spec(default, "LEARNING_RATE", label, "float", minimum=1e-7, maximum=1.0,
                help="Initial step size of the optimiser (it decays over training); lower it "
                     "when fine-tuning.")


def steps_per_epoch_field(label: str, help: str = ""):
    """STEPS_PER_EPOCH: batches drawn per epoch (0: the family's automatic length)."""
    return spec(0, "STEPS_PER_EPOCH", label, "int", minimum=0, advanced=True, help=help)


def max_patches_field():
    """MAX_PATCHES: a cap on the training patches of an epoch."""
    return spec(0, "MAX_PATCHES", "Max training patches per epoch (0 = all)", "int",
                minimum=0, advanced=True)


def output_model_field(best: str, label: str = "Output model (best)"):
    """OUTPUT_MODEL: the model file training writes; ``best`` says which epoch's model it is."""
    return spec("", "OUTPUT_MODEL", label, "model_out", file_filter=MODEL_FILTER,
                help=f"The model with {best}.")


def feature_patch_percentage_field(patches: str = "patches", features: str = "labelled features"):
    """FEATURE_PATCH_PERCENTAGE (ENVI): the share of the ``patches`` holding ``features`` used."""
    return spec(1.0, "FEATURE_PATCH_PERCENTAGE", "Feature patch percentage", "float", minimum=0,
                maximum=1, help=f"Share (0–1) of the {patches} holding {features} that are used.")


def background_patch_ratio_field(default: float, patch: str = "patch",
                                 features: str = "features"):
    """BACKGROUND_PATCH_RATIO (ENVI): background patches (``patch``: "patch" or "cell"; no
    ``features``) per feature patch, with the family's ``default``."""
    plural = "patches" if patch == "patch" else f"{patch}s"
    return spec(default, "BACKGROUND_PATCH_RATIO", "Background patch ratio", "float", minimum=0,
                help=f"Background {plural} (no {features}) per feature {patch}.")



def augment_rotation_field(help: str = ""):
    """AUGMENT_ROTATION: random turns of the training patches (on by default)."""
    return spec(True, "AUGMENT_ROTATION", "Augment: rotation", "bool", help=help)


def augment_scale_field(help: str = ""):
    """AUGMENT_SCALE: random zoom of the training patches (on by default)."""
    return spec(True, "AUGMENT_SCALE", "Augment: scale", "bool", help=help)


def augment_flip_field(label: str = "Augment: flips"):
    """AUGMENT_FLIP: random flips of the training patches (on by default)."""
    return spec(True, "AUGMENT_FLIP", label, "bool")


def preview_raster_field():
    """PREVIEW_RASTER: the raster the model is drawn on while it trains (empty: no preview)."""
    return spec("", "PREVIEW_RASTER", "Preview on the map: raster (empty = off)", "raster_in",
                optional=True, advanced=True,
                help="After each validation the model so far classifies the part of this "
                     "raster the map shows (at most about one megapixel) into a file in "
                     "<log folder>/preview; the desktop shows it as a temporary layer.")


def preview_extent_file_field():
    """PREVIEW_EXTENT_FILE: the JSON file saying which part of the raster to preview."""
    return spec("", "PREVIEW_EXTENT_FILE", "Preview on the map: extent file", "file_in",
                optional=True, advanced=True, file_filter="JSON (*.json)",
                help="{\"extent\": [xmin, ymin, xmax, ymax] in the raster's CRS, \"width\", "
                     "\"height\": canvas pixels}, read again when it changes; empty: the "
                     "whole raster.")


def preview_seconds_field():
    """PREVIEW_SECONDS: the least time between two previews."""
    return spec(30.0, "PREVIEW_SECONDS", "Preview on the map: every (seconds, at least)",
                "float", minimum=0.0, maximum=86400.0, advanced=True,
                help="Previews follow validations, at most this often, and never take more "
                     "than 5 % of the training time.")


CLASS_BALANCE_CHOICES = ("none", "weights", "sampling")


def class_balance_field(default: str = "sampling", samples: str = "samples"):
    """CLASS_BALANCE: how rare classes are made to count during training: "none", "weights"
    (loss weights ∝ 1 / class frequency) or "sampling" (each training ``samples`` drawn with
    probability ∝ 1 / its class frequency, so classes are drawn about equally often).
    Default "sampling": oversampling to balance was the best of the remedies compared for
    convolutional networks by Buda, Maki & Mazurowski (2018), "A systematic study of the class
    imbalance problem in convolutional neural networks", Neural Networks 106."""
    return spec(default, "CLASS_BALANCE", "Class balance", "enum", choices=CLASS_BALANCE_CHOICES,
                help=f"'sampling' (default): {samples} of rare classes are drawn as often as "
                     "common ones (Buda et al. 2018: the best remedy for convolutional "
                     "networks); 'weights': the loss of each class is weighted by 1 / its "
                     f"frequency; 'none': {samples} as they come (a rare class may never be "
                     "predicted).")
