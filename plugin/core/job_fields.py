"""Job fields and checks that jobs of every family share: the device, the model file name and
filters, the tile size label. Nothing heavy at import time.
"""

from __future__ import annotations

from pathlib import Path

MODEL_FILTER = "Deep Learning Trainer model (*.dltmodel.safetensors *.safetensors)"

MODEL_SUFFIX = ".dltmodel.safetensors"


#: Devices a job can run on (Processing shows them as a drop-down; the dialogs list the GPUs).
DEVICES = ("auto", "cpu", "cuda") + tuple(f"cuda:{i}" for i in range(8))


DEVICE_LABELS = {"auto": "Automatic (first GPU if available)", "cpu": "CPU",
                 "cuda": "CUDA (first GPU)", **{f"cuda:{i}": f"CUDA GPU {i}" for i in range(8)}}


TILE_SIZE_LABEL = "Tile size (px, 0 = automatic: the model's patch size)"


def model_file_name(path: str) -> str:
    """``path`` ending in ``.dltmodel.safetensors``: a word suffix is replaced (``best.model``
    → ``best.dltmodel.safetensors``), other names get it appended (``run.v2`` → ``run.v2.
    dltmodel.safetensors``); names already ending in ``.safetensors`` are kept."""
    if not path or path.lower().endswith(".safetensors"):
        return path
    p = Path(path)
    replace = p.suffix[1:].isalpha() and len(p.suffix) <= 9    # best.model, scene.tif → best, scene
    stem = p.name[:-len(p.suffix)] if replace else p.name
    return str(p.with_name(stem + MODEL_SUFFIX)) if stem else path


def device_field(what: str = "the model"):
    """DEVICE: where ``what`` runs (one of :data:`DEVICES`)."""
    from .params import spec

    return spec("auto", "DEVICE", "Device", "enum", choices=DEVICES, choice_labels=DEVICE_LABELS,
                help=f"Where {what} runs: automatic takes the first CUDA GPU when there is one.")


def grid_model_field(effect: str):
    """GRID_MODEL (ENVI's optimized classification): an optional grid model; ``effect`` says
    what it changes for this tool."""
    from .params import spec

    return spec("", "GRID_MODEL", "Grid model (optimized classification)", "model_in",
                optional=True, file_filter=MODEL_FILTER, help=f"Optional: {effect}")


def grid_threshold_field(verb: str):
    """GRID_THRESHOLD: the grid score from which a cell is ``verb`` (0: the tuned ones)."""
    from .params import spec

    return spec(0.0, "GRID_THRESHOLD", "Grid model threshold (0 = tuned)", "float", minimum=0.0,
                maximum=1.0, advanced=True,
                help=f"A cell is {verb} when a class's grid score reaches this; 0 uses the grid "
                     "model's tuned thresholds.")


def overlap_field():
    """OVERLAP: the share of a tile its neighbours overlap (blended, :mod:`.blend`)."""
    from .params import spec

    return spec(0.25, "OVERLAP", "Tile overlap (share of the tile)", "float", minimum=0,
                maximum=0.75, help="Tiles overlap by this share and are blended smoothly.")


def tta_field(default: bool, help: str, advanced: bool = False):
    """TTA: test-time augmentation, the mean of the model's outputs over turned and flipped
    views of its input (:func:`.inference.dihedral_mean`); ``help`` says which views and what
    it costs for this tool."""
    from .params import spec

    return spec(default, "TTA", "Test-time augmentation (8 rotations/flips)", "bool",
                advanced=advanced, help=help)


def engine_field():
    """ENGINE: torch or onnxruntime for the forward pass (:func:`..inference.make_engine`)."""
    from .params import spec

    return spec("auto", "ENGINE", "Inference engine", "enum",
                choices=("auto", "torch", "onnxruntime"), advanced=True,
                choice_labels=("Automatic", "PyTorch", "ONNX Runtime"),
                help="auto: onnxruntime on the CPU when installed (faster there, and torch is "
                     "not loaded), torch on CUDA.")
