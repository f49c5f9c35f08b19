"""Parameter fields every train job has, as factories: each job calls them where the field
belongs in its own parameter order, so the same parameter has the same name, label, range and
help in every family (dialogs, Processing, ``dltrain``).
"""

from __future__ import annotations

from ..params import spec

MODEL_FILTER = "Deep Learning Trainer model (*.dltmodel.safetensors *.safetensors)"


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
