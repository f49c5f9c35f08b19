"""The model file: one pickle-free safetensors file with the model card in its metadata.

Layout (format version 1):

- tensors: the network's ``state_dict`` (smp key names, float32);
- metadata ``"format"``: ``"dltrainer-model"``, ``"format_version"``: ``"1"``,
  ``"card"``: the model card as JSON (see :func:`make_card`; ``dtype``, the training rasters'
  data type, is optional: older cards lack it).

Loading reads the JSON card and the raw tensors only; it never unpickles or executes anything from
the file. The optimizer state of a *last* model (for resuming) lives beside it in
``<model>.optim.safetensors``: flattened AdamW moment tensors and the training weights
(``network.<name>``; the model file holds their moving average), the rest as JSON metadata.

ONNX export (:func:`export_onnx`): the graph contains the normalisation and a softmax. Input
``image``: float32 (N, bands, H, W) in the training rasters' band order; output
``probabilities``: float32 (N, classes, H, W), channel k = class id k (0 = background; ids the
model never learnt get a channel too). With ``input_scale`` s the graph takes ``pixel / s``
(``s`` = 255: 8-bit imagery scaled to 0–1, as Deepness and GeoDeep feed it); the factor is
folded into the normalisation constants, ``(s·x − mean) / std = (x − mean/s) / (std/s)``, so
it costs nothing. s = 1 (raw pixel values) is what Classify Pixels uses. ``tile_size`` fixes
H = W (Deepness and GeoDeep read the tile size from the input shape); None leaves them dynamic
(multiples of 32). Nodata pixels should be set to the band means (× 1/s).

ONNX ``metadata_props``: every value is JSON text (Deepness ``json.loads`` each one):

- ``model_type`` ``"Segmentor"``; ``class_names`` ``{"0": "background", "1": …}`` with
  consecutive ids 0…classes−1 (Deepness refuses gaps; unlearnt ids are named ``unused_k``);
- ``resolution``: training pixel size in cm/px (left out when unknown); ``tiles_size`` and
  ``tile_size`` (both spellings are read by Deepness versions): the patch size in px;
  ``tiles_overlap``: percent; ``seg_thresh`` 0.0 (plain argmax, as Classify Pixels);
  ``seg_small_segment`` 0 (no sieve);
- ``standardization_mean`` / ``standardization_std``: what Deepness applies after dividing by
  255 — 0 / 1 (nothing) for scale 255, 0 / (1/255) for raw exports (undoes its division);
- ``dltrainer_input_scale`` (s), ``input_convention`` (a sentence) and ``dltrainer_card``
  (the full model card).
See ``docs/model_file.md``.
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


def make_card(*, classes: list[dict], bands: int, mean: list[float], std: list[float],
              nodata: float | None, pixel_size: tuple[float, float] | None, crs: str | None,
              training: dict | None = None, metrics: dict | None = None,
              state: dict | None = None, dtype: str | None = None, task: str = TASK,
              **fields: Any) -> dict:
    """A model card (JSON-serialisable). ``classes``: [{id, name, color}] incl. 0 background;
    ``state``: resume state (epoch, global step, best score, history); ``dtype``: the training
    rasters' data type (``uint8`` …), used by the ONNX export to check the input scale;
    ``task``: the model family (see ``plugin/core/families.py``); ``fields``: the family's own
    entries (pixel segmentation: ``architecture``, ``encoder``, ``patch_size``)."""
    card = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": task,
        **fields,
        "classes": classes, "num_outputs": max(int(c["id"]) for c in classes) + 1,
        "bands": int(bands), "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "nodata": nodata,
        "pixel_size": list(pixel_size) if pixel_size else None, "crs": crs,
        "training": training or {}, "metrics": metrics or {}, "state": state or {},
        "plugin_version": plugin_version(),
    }
    if "patch_size" in card:
        card["patch_size"] = int(card["patch_size"])
    if dtype:
        card["dtype"] = str(dtype)
    return card


def _atomic_target(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _usual_mode(path: Path) -> None:
    """Give ``path`` the mode a new file of the user gets (0644 under the usual umask 022);
    the safetensors writer creates files 0600, unlike every other output."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _write_safetensors(tensors: dict, target: str | Path, meta: dict) -> Path:
    """Write ``tensors`` with string ``meta`` to ``target`` atomically (tmp file + replace)."""
    from safetensors.torch import save_file

    path, tmp = _atomic_target(target)
    try:
        save_file(tensors, str(tmp), metadata=meta)
        _usual_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_model(path: str | Path, network, card: dict) -> Path:
    """Write ``network``'s weights and ``card`` to ``path`` atomically (tmp file + replace)."""
    state = {k: v.detach().to("cpu", copy=True).contiguous().float()
             if v.is_floating_point() else v.detach().to("cpu", copy=True).contiguous()
             for k, v in network.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "card": json.dumps(card, default=_json_default)}
    return _write_safetensors(state, path, meta)


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file, parsed by hand (8-byte little-endian header
    length + JSON header), or None when the file is not safetensors or its tensors do not fit
    in the file (truncated, offsets past the end). No dependency: the QGIS process reads model
    cards with it."""
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
    data_size = size - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            return None
    return header


def _safetensors_metadata(path: Path) -> dict | None:
    """The ``__metadata__`` of a valid safetensors file (see :func:`_safetensors_header`)."""
    header = _safetensors_header(path)
    if header is None:
        return None
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else None


MAX_CLASSES = 255          # class ids 0…254; 255 is the class rasters' nodata
MAX_BANDS = 1000
MAX_PATCH = 8192


def card_problem(card) -> str | None:
    """What is wrong with a model card's shape (a phrase), or None. The schema: an object with
    ``format_version`` ≤ :data:`FORMAT_VERSION`, ``task`` text, ``classes`` a list of
    {id 0…254, name} objects with unique ids, ``num_outputs`` above every id (≤ 255),
    ``bands`` 1…1000, ``mean`` and ``std`` lists of ``bands`` finite numbers (std > 0),
    ``patch_size`` (when present) 32…8192 px, ``nodata`` a number or null."""
    import math

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(card, dict):
        return f"the model card is a {type(card).__name__}, not an object"
    version = card.get("format_version", 1)
    if not number(version) or int(version) != version:
        return f"format_version {version!r} is not a whole number"
    if int(version) > FORMAT_VERSION:
        return f"future format_version {version}"
    if not isinstance(card.get("task", ""), str):
        return "task is not text"
    classes = card.get("classes")
    if not isinstance(classes, list) or not classes:
        return "classes is not a list of classes"
    if len(classes) > MAX_CLASSES:
        return f"{len(classes)} classes (at most {MAX_CLASSES})"
    ids = []
    for c in classes:
        if not isinstance(c, dict) or not number(c.get("id")) or int(c["id"]) != c["id"] \
                or not 0 <= c["id"] < MAX_CLASSES or not isinstance(c.get("name"), str):
            return f"class {c!r} is not {{id 0–{MAX_CLASSES - 1}, name}}"
        ids.append(int(c["id"]))
    if len(set(ids)) != len(ids):
        return "class ids repeat"
    outputs = card.get("num_outputs", max(ids) + 1)
    if not number(outputs) or int(outputs) != outputs or not max(ids) < outputs <= MAX_CLASSES:
        return f"num_outputs {outputs!r} does not fit the class ids"
    bands = card.get("bands")
    if not number(bands) or int(bands) != bands or not 1 <= bands <= MAX_BANDS:
        return f"bands {bands!r} is not a number of bands (1–{MAX_BANDS})"
    for key in ("mean", "std"):
        values = card.get(key)
        if not isinstance(values, list) or len(values) != bands \
                or not all(number(v) for v in values):
            return f"{key} is not a list of {int(bands)} numbers"
    if any(v <= 0 for v in card["std"]):
        return "std holds 0 or a negative value (normalising would divide by zero)"
    patch = card.get("patch_size")
    if patch is not None and (not number(patch) or int(patch) != patch
                              or not 32 <= patch <= MAX_PATCH):
        return f"patch_size {patch!r} is not 32–{MAX_PATCH} px"
    if card.get("nodata") is not None and not isinstance(card["nodata"], (int, float)):
        return f"nodata {card['nodata']!r} is not a number"
    for key in ("architecture", "encoder"):
        if key in card and not isinstance(card[key], str):
            return f"{key} is not text"
    return None


def read_model_card(path: str | Path, task: str | None = TASK) -> dict:
    """The model card of ``path`` (standard library only, nothing from the file is executed),
    validated against the card schema (:func:`card_problem`) and the tensor layout;
    UserError ("not a valid model file") for anything else, or a model of another ``task``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"The model file {p} does not exist.", "Check the path.")
    fix = ("Choose a model written by Train Pixel Segmentation (train it again if this one was "
           "damaged).")
    meta = _safetensors_metadata(p)
    if meta is None:
        raise UserError(f"{p} is not a valid model file: it is not a Deep Learning Trainer "
                        "model file (truncated, damaged, or another kind of file).", fix)
    if meta.get("format") != FORMAT or "card" not in meta:
        raise UserError(f"{p} is not a valid model file: a safetensors file but not a Deep "
                        "Learning Trainer model.", fix)
    try:
        card = json.loads(meta["card"])
    except (json.JSONDecodeError, TypeError):
        raise UserError(f"{p} is not a valid model file: its model card is not JSON.",
                        fix) from None
    problem = card_problem(card)
    if problem and problem.startswith("future"):
        raise UserError(f"{p} was written by a newer plugin (model format "
                        f"{card.get('format_version')}), which this version cannot read.",
                        "Update Deep Learning Trainer.")
    if problem:
        raise UserError(f"{p} is not a valid model file: {problem}.", fix)
    if task and card.get("task") != task:
        from ..families import task_title

        raise UserError(f"{p.name} was trained for {task_title(card.get('task'))} (task "
                        f"{card.get('task', 'unknown')!r}); this tool needs "
                        f"{task_title(task)} (task {task!r}).",
                        "Choose a model trained for this tool.")
    return card


def is_model_file(path: str | Path) -> bool:
    """True when ``path`` holds a Deep Learning Trainer model (by content, any file name)."""
    p = Path(path)
    if not p.is_file():
        return False
    meta = _safetensors_metadata(p)
    return bool(meta) and meta.get("format") == FORMAT


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


NETWORK_PREFIX = "network."   # training weights in the optimizer file


def save_optimizer(model_path: str | Path, optimizer, network=None) -> Path:
    """The optimizer state as tensors + JSON (no pickle), written atomically; with ``network``
    its weights too (``network.<name>``: the training weights, when the model file holds their
    moving average)."""
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    if network is not None:
        tensors.update({f"{NETWORK_PREFIX}{k}": v.detach().to("cpu", copy=True).contiguous()
                        for k, v in network.state_dict().items()})
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{idx}.{key}"] = val
    meta = {"param_groups": json.dumps(sd["param_groups"], default=_json_default),
            "scalars": json.dumps(scalars, default=_json_default)}
    return _write_safetensors(tensors, optimizer_path(model_path), meta)


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
            if key.startswith(NETWORK_PREFIX):
                continue
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = f.get_tensor(key)
    for key, val in json.loads(meta.get("scalars", "{}")).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    groups = json.loads(meta["param_groups"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return True


def load_training_weights(model_path: str | Path, network) -> bool:
    """Load the training weights saved beside ``model_path`` (:func:`save_optimizer` with a
    network) into ``network``; False (nothing changed) when there are none or they do not fit."""
    from safetensors import safe_open

    path = optimizer_path(model_path)
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        weights = {k[len(NETWORK_PREFIX):]: f.get_tensor(k) for k in f.keys()
                   if k.startswith(NETWORK_PREFIX)}
    own = network.state_dict()
    if not weights or weights.keys() != own.keys() or any(
            weights[k].shape != own[k].shape for k in own):
        return False
    network.load_state_dict(weights)
    return True


# -- ONNX ---------------------------------------------------------------------------------------
ONNX_TILES_OVERLAP = 25      # percent, the default overlap written for ONNX consumers


def export_onnx(model_path: str | Path, onnx_path: str | Path, opset: int = 17, *,
                input_scale: float = 1.0, tile_size: int | None = None,
                tiles_overlap: int = ONNX_TILES_OVERLAP) -> Path:
    """Export the model (normalisation + network + softmax) to ONNX with the card and the
    Deepness/GeoDeep keys in its metadata (see the module docstring for the conventions).

    ``input_scale``: the graph takes ``pixel / input_scale``; ``tile_size``: fixed square
    input size (None: dynamic height and width)."""
    import torch

    from .models import Predictor

    if not input_scale > 0:
        raise UserError(f"The input scale {input_scale:g} is not positive.",
                        "Use the value that stands for 1.0 in the data, e.g. 255.")
    network, card = load_network(model_path)
    scale = float(input_scale)
    predictor = Predictor(network, [m / scale for m in card["mean"]],
                          [s / scale for s in card["std"]]).eval()
    onnx_path, tmp = _atomic_target(onnx_path)
    size = int(tile_size or card.get("patch_size") or 256)
    dummy = torch.zeros(1, int(card["bands"]), size, size)
    if tile_size:
        axes = {"image": {0: "batch"}, "probabilities": {0: "batch"}}
    else:
        axes = {"image": {0: "batch", 2: "height", 3: "width"},
                "probabilities": {0: "batch", 2: "height", 3: "width"}}
    try:
        with torch.no_grad():
            torch.onnx.export(predictor, (dummy,), str(tmp), input_names=["image"],
                              output_names=["probabilities"], opset_version=opset,
                              dynamic_axes=axes, dynamo=False)
        out_dims = ["batch", int(card["num_outputs"])] + (
            [size, size] if tile_size else ["height", "width"])
        _finish_onnx(tmp, onnx_metadata(card, input_scale=scale, tile_size=size,
                                        tiles_overlap=tiles_overlap), out_dims)
        os.replace(tmp, onnx_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return onnx_path


def onnx_class_names(card: dict) -> dict[str, str]:
    """``{"0": name, …}`` for every output channel (consecutive ids; gaps named ``unused_k``)."""
    names = {int(c["id"]): str(c["name"]) for c in card["classes"]}
    n = int(card.get("num_outputs") or max(names) + 1)
    return {str(k): names.get(k, f"unused_{k}") for k in range(n)}


def resolution_cm(card: dict) -> float | None:
    """The training pixel size in cm/px (CRS units converted to metres; degrees at the
    equator), or None when the card has none."""
    px = card.get("pixel_size") or [None]
    if not px[0]:
        return None
    metres = 1.0
    crs = card.get("crs")
    if crs:
        try:
            from rasterio.crs import CRS

            parsed = CRS.from_user_input(crs)
            if parsed.is_geographic:
                metres = 111_320.0
            else:
                metres = float(parsed.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - an unreadable CRS keeps map units as metres
            metres = 1.0
    return round(float(px[0]) * metres * 100.0, 6)


def onnx_metadata(card: dict, *, input_scale: float = 1.0, tile_size: int | None = None,
                  tiles_overlap: int = ONNX_TILES_OVERLAP) -> dict[str, str]:
    """The ONNX ``metadata_props`` for ``card`` (every value JSON text)."""
    bands = int(card["bands"])
    size = int(tile_size or card.get("patch_size") or 256)
    # Deepness computes (x / 255 - mean) / std; our graph normalises itself
    deepness_std = 1.0 if input_scale != 1.0 else 1.0 / 255.0
    props: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": onnx_class_names(card),
        "tiles_size": size,
        "tile_size": size,
        "tiles_overlap": int(tiles_overlap),
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
        "standardization_mean": [0.0] * bands,
        "standardization_std": [deepness_std] * bands,
        "dltrainer_input_scale": float(input_scale),
        "input_convention": (
            f"float32 (N, {bands}, H, W) = pixel values / {input_scale:g} in the training "
            "band order; normalisation and softmax inside; output (N, classes, H, W) "
            "probabilities, channel k = class id k"),
    }
    res = resolution_cm(card)
    if res is not None:
        props["resolution"] = res
    out = {key: json.dumps(value) for key, value in props.items()}
    out["dltrainer_card"] = json.dumps(card, default=_json_default)
    return out


def _finish_onnx(path: Path, props: dict[str, str], out_dims: list) -> None:
    """Write ``props`` as metadata and declare the output shape (the exporter loses it
    through the decoder's upsampling; Deepness checks that height equals width)."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    del dims[:]
    for value in out_dims:
        dim = dims.add()
        if isinstance(value, int):
            dim.dim_value = value
        else:
            dim.dim_param = value
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "Deep Learning Trainer"
    model.producer_version = plugin_version()
    onnx.save(model, str(path))
