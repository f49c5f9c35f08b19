"""The model file: one pickle-free safetensors file with the model card in its metadata.

Layout (format version 1):

- tensors: the network's ``state_dict`` (smp key names, float32);
- metadata ``"format"``: ``"dltrainer-model"``, ``"format_version"``: ``"1"``,
  ``"card"``: the model card as JSON (see :func:`make_card`).

Loading reads the JSON card and the raw tensors only; it never unpickles or executes anything from
the file. The optimizer state of a *last* model (for resuming) lives beside it in
``<model>.optim.safetensors``: flattened AdamW moment tensors, the rest as JSON metadata.

ONNX export (:func:`export_onnx`): the graph contains the normalisation and a softmax. Input
``image``: float32 (N, bands, H, W) raw pixel values in the training rasters' band order and scale
(nodata pixels should be set to the band means); H and W are dynamic, multiples of 32. Output
``probabilities``: float32 (N, classes, H, W), channel k = class id k (0 = background). The model
card is in the ONNX ``metadata_props`` (key ``dltrainer_card``) together with Deepness-style keys
(``model_type`` = ``Segmentor``, ``class_names``, ``resolution`` in cm/px, ``tiles_size``,
``tiles_overlap``).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from ..errors import UserError

FORMAT = "dltrainer-model"
FORMAT_VERSION = 1
TASK = "pixel_segmentation"


def plugin_version() -> str:
    """The plugin version from metadata.txt (``unknown`` if it cannot be read)."""
    here = Path(__file__).resolve().parent.parent.parent
    for base in (here, here.parent):
        meta = base / "metadata.txt"
        if meta.is_file():
            for line in meta.read_text(encoding="utf-8").splitlines():
                if line.startswith("version="):
                    return line.split("=", 1)[1].strip()
    return "unknown"


def make_card(*, architecture: str, encoder: str, classes: list[dict], bands: int,
              mean: list[float], std: list[float], nodata: float | None, patch_size: int,
              pixel_size: tuple[float, float] | None, crs: str | None,
              training: dict | None = None, metrics: dict | None = None,
              state: dict | None = None) -> dict:
    """A model card (JSON-serialisable). ``classes``: [{id, name, color}] incl. 0 background;
    ``state``: resume state (epoch, global step, best loss, history)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": TASK,
        "architecture": architecture, "encoder": encoder,
        "classes": classes, "num_outputs": max(int(c["id"]) for c in classes) + 1,
        "bands": int(bands), "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "nodata": nodata, "patch_size": int(patch_size),
        "pixel_size": list(pixel_size) if pixel_size else None, "crs": crs,
        "training": training or {}, "metrics": metrics or {}, "state": state or {},
        "plugin_version": plugin_version(),
    }


def _atomic_target(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.name}.{os.getpid()}.tmp")


def save_model(path: str | Path, network, card: dict) -> Path:
    """Write ``network``'s weights and ``card`` to ``path`` atomically (tmp file + replace)."""
    from safetensors.torch import save_file

    path, tmp = _atomic_target(path)
    state = {k: v.detach().to("cpu", copy=True).contiguous().float()
             if v.is_floating_point() else v.detach().to("cpu", copy=True).contiguous()
             for k, v in network.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "card": json.dumps(card, default=_json_default)}
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _safetensors_metadata(path: Path) -> dict | None:
    """The ``__metadata__`` of a safetensors file, parsed by hand (8-byte little-endian header
    length + JSON header), or None when the file is not safetensors. No dependency: the QGIS
    process reads model cards with it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(size - 8, 100 * 2**20):
                return None
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else None


def read_model_card(path: str | Path, task: str | None = TASK) -> dict:
    """The model card of ``path`` (standard library only, nothing from the file is executed);
    UserError for anything that is not a model (of ``task``, when given)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"The model file {p} does not exist.", "Check the path.")
    meta = _safetensors_metadata(p)
    if meta is None:
        raise UserError(f"{p.name} is not a Deep Learning Trainer model file.",
                        "Choose a model written by Train Pixel Segmentation.")
    if meta.get("format") != FORMAT or "card" not in meta:
        raise UserError(f"{p.name} is a safetensors file but not a Deep Learning Trainer model.",
                        "Choose a model written by Train Pixel Segmentation.")
    try:
        card = json.loads(meta["card"])
    except (json.JSONDecodeError, TypeError):
        raise UserError(f"The model card of {p.name} is damaged.",
                        "Train the model again or use another copy.") from None
    if int(card.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{p.name} was written by a newer plugin (model format "
                        f"{card.get('format_version')}).", "Update Deep Learning Trainer.")
    if task and card.get("task") != task:
        raise UserError(f"{p.name} is a {card.get('task', 'unknown')!r} model, not a "
                        f"{task!r} model.", "Choose a model trained for this tool.")
    return card


read_card = read_model_card


def load_network(path: str | Path, card: dict | None = None):
    """(smp network with the file's weights, card). Tensors are read with safetensors only."""
    import torch
    from safetensors.torch import load_file

    from .models import build_network

    card = card or read_card(path)
    with torch.device("meta"):   # no random initialisation: every tensor comes from the file
        network = build_network(card["architecture"], card["encoder"], int(card["bands"]),
                                int(card["num_outputs"]))
    state = load_file(str(path))
    missing, unexpected = network.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise UserError(f"The weights in {Path(path).name} do not fit a {card['architecture']} "
                        f"/ {card['encoder']} network ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected).", "The file is damaged; train again.")
    return network, card


def load_model(path: str | Path):
    """(:class:`Predictor` in eval mode on the CPU, card) for inference."""
    from .models import Predictor

    network, card = load_network(path)
    predictor = Predictor(network, card["mean"], card["std"]).eval()
    return predictor, card


# -- optimizer state beside a last model --------------------------------------------------------
def optimizer_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".optim.safetensors")


def save_optimizer(model_path: str | Path, optimizer) -> Path:
    """The optimizer state as tensors + JSON (no pickle), written atomically."""
    import torch
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{idx}.{key}"] = val
    path, tmp = _atomic_target(optimizer_path(model_path))
    meta = {"param_groups": json.dumps(sd["param_groups"], default=_json_default),
            "scalars": json.dumps(scalars, default=_json_default)}
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_optimizer(model_path: str | Path, optimizer) -> bool:
    """Restore the optimizer state saved beside ``model_path``; False if there is none."""
    from safetensors import safe_open

    path = optimizer_path(model_path)
    if not path.is_file():
        return False
    state: dict[int, dict] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = f.get_tensor(key)
    for key, val in json.loads(meta.get("scalars", "{}")).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    groups = json.loads(meta["param_groups"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return True


# -- ONNX ---------------------------------------------------------------------------------------
def export_onnx(model_path: str | Path, onnx_path: str | Path, opset: int = 17) -> Path:
    """Export the model (normalisation + network + softmax) to ONNX with the card in its
    metadata (see the module docstring for the input convention)."""
    import torch

    predictor, card = load_model(model_path)
    onnx_path, tmp = _atomic_target(onnx_path)
    size = int(card.get("patch_size") or 256)
    dummy = torch.zeros(1, int(card["bands"]), size, size)
    try:
        with torch.no_grad():
            torch.onnx.export(predictor, (dummy,), str(tmp), input_names=["image"],
                              output_names=["probabilities"], opset_version=opset,
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "probabilities": {0: "batch", 2: "height",
                                                              3: "width"}},
                              dynamo=False)
        _add_onnx_metadata(tmp, card)
        os.replace(tmp, onnx_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return onnx_path


def _add_onnx_metadata(path: Path, card: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    px = card.get("pixel_size") or [None]
    props = {
        "dltrainer_card": json.dumps(card, default=_json_default),
        "model_type": "Segmentor",
        "class_names": json.dumps({str(c["id"]): c["name"] for c in card["classes"]}),
        "tiles_size": str(card.get("patch_size")),
        "tiles_overlap": "25",
        "input_convention": "raw pixel values, float32 (N, bands, H, W); normalisation inside",
    }
    if px[0]:
        props["resolution"] = str(float(px[0]) * 100.0)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


# -- card without any third-party library (for the QGIS process) -------------------------------
_MAX_HEADER = 100 * 2**20


def read_model_card(path: str | Path, task: str | None = TASK) -> dict:
    """The model card read from the safetensors header with the standard library only (8-byte
    little-endian length, then JSON): usable in QGIS without torch, numpy or safetensors. Same
    checks and messages as :func:`read_card`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"The model file {p} does not exist.", "Check the path.")
    not_model = UserError(f"{p.name} is not a Deep Learning Trainer model file.",
                          "Choose a model written by Train Pixel Segmentation.")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= size <= min(_MAX_HEADER, p.stat().st_size - 8):
                raise not_model
            header = json.loads(f.read(size).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise not_model from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        meta = {}
    if meta.get("format") != FORMAT or "card" not in meta:
        raise UserError(f"{p.name} is a safetensors file but not a Deep Learning Trainer model.",
                        "Choose a model written by Train Pixel Segmentation.")
    try:
        card = json.loads(meta["card"])
    except (TypeError, json.JSONDecodeError):
        raise UserError(f"The model card of {p.name} is damaged.",
                        "Train the model again or use another copy.") from None
    if int(card.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{p.name} was written by a newer plugin (model format "
                        f"{card.get('format_version')}).", "Update Deep Learning Trainer.")
    if task and card.get("task") != task:
        raise UserError(f"{p.name} is a {card.get('task', 'unknown')!r} model, not a "
                        f"{task!r} model.", "Choose a model trained for this tool.")
    return card
