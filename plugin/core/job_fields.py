"""Job fields and checks that jobs of every family share: the device, the model file name and
filters, the tile size label. Nothing heavy at import time.
"""

from __future__ import annotations

from pathlib import Path

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
