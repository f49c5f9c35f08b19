"""The model file every family writes: one pickle-free safetensors file with the model card in
its metadata.

Layout (format version 1):

- tensors: the network's ``state_dict`` (float32 for floating-point tensors);
- metadata ``"format"``: ``"dltrainer-model"``, ``"format_version"``: ``"1"``,
  ``"card"``: the model card as JSON (see :func:`make_card`; ``task`` names the family, see
  ``plugin/core/families.py``; ``dtype``, the training rasters' data type, is optional: older
  cards lack it).

Loading reads the JSON card and the raw tensors only; it never unpickles or executes anything from
the file. :func:`load_model` builds the network of any family through the loader its row of the
family table names; :func:`load_weights` is the one strict weight loader every family uses. The
optimizer state of a *last* model (for resuming) lives beside it in ``<model>.optim.safetensors``:
flattened AdamW moment tensors and the training weights (``network.<name>``; the model file holds
their moving average), the rest as JSON metadata. See ``docs/model_file.md``; each family's ONNX
conventions are in its ``export`` module.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .errors import UserError

FORMAT = "dltrainer-model"
FORMAT_VERSION = 1


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


def feature_classes(card: dict) -> list[dict]:
    """The card's classes without the background (id 0): what object families detect."""
    return [c for c in card["classes"] if int(c["id"]) != 0]


def make_card(*, classes: list[dict], bands: int, mean: list[float], std: list[float],
              nodata: float | None, pixel_size: tuple[float, float] | None, crs: str | None,
              training: dict | None = None, metrics: dict | None = None,
              state: dict | None = None, dtype: str | None = None, task: str,
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


def write_safetensors(tensors: dict, target: str | Path, meta: dict) -> Path:
    """Write ``tensors`` with string ``meta`` to ``target`` atomically
    (:func:`.atomic.atomic_write`: temporary file beside it, mode 0644, then replace)."""
    from safetensors.torch import save_file

    from .atomic import atomic_write

    with atomic_write(target) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(target)


def save_model(path: str | Path, network, card: dict) -> Path:
    """Write ``network``'s weights and ``card`` to ``path`` atomically (tmp file + replace)."""
    state = {k: v.detach().to("cpu", copy=True).contiguous().float()
             if v.is_floating_point() else v.detach().to("cpu", copy=True).contiguous()
             for k, v in network.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "card": json.dumps(card, default=json_default)}
    return write_safetensors(state, path, meta)


def json_default(value: Any) -> Any:
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
    {id 0…254, name} objects with unique ids, ``num_outputs`` above every id (≤ 255)
    ``num_outputs`` = the highest id + 1, as :func:`make_card` writes it (ids below may be
    unnamed: the ONNX export names such outputs ``unused_k``),
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
    if outputs != max(ids) + 1:   # as make_card writes it: the highest class was removed
        return (f"the network has {int(outputs)} outputs but the classes end at id {max(ids)} "
                "(a class was removed from the card)")
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


def read_model_card(path: str | Path, task: str | None = None) -> dict:
    """The model card of ``path`` (standard library only, nothing from the file is executed),
    validated against the card schema (:func:`card_problem`) and the tensor layout.

    ``task``: the family the caller needs (None: any). Raises UserError for a file that is no
    valid model ("not a valid model file", with the Train tool to use), a model of a newer
    format, a model of another ``task`` (naming both families), or a card whose family fields
    do not fit (the ``card_check`` of the family's row: architecture, thresholds …)."""
    from .families import card_check_function, family, task_title

    p = Path(path)
    if not p.is_file():
        raise UserError(f"The model file {p} does not exist.", "Check the path.")
    tool = f"Train {task_title(task)}" if task else "one of the Deep Learning ▸ Train tools"
    fix = f"Choose a model written by {tool} (train it again if this one was damaged)."
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
    if isinstance(card, dict):
        card.setdefault("task", "pixel_segmentation")   # the one family before cards named it
    problem = card_problem(card)
    if problem and problem.startswith("future"):
        raise UserError(f"{p} was written by a newer plugin (model format "
                        f"{card.get('format_version')}), which this version cannot read.",
                        "Update Deep Learning Trainer.")
    if problem:
        raise UserError(f"{p} is not a valid model file: {problem}.", fix)
    if family(card["task"]) is None:
        raise UserError(f"{p.name} holds a model for task {card['task']!r}, which this version "
                        "of Deep Learning Trainer does not know.",
                        "Update Deep Learning Trainer, or choose another model.")
    if task and card.get("task") != task:
        raise UserError(f"{p.name} was trained for {task_title(card.get('task'))} (task "
                        f"{card.get('task', 'unknown')!r}); this tool needs "
                        f"{task_title(task)} (task {task!r}).",
                        "Choose a model trained for this tool.")
    check = card_check_function(card["task"])
    problem = check(card) if check else None
    if problem:
        raise UserError(f"The model card of {p.name} does not describe a "
                        f"{task_title(card['task'])} model this plugin can use: {problem}.",
                        "Use the model file as training wrote it (an edited card does not "
                        "change the network), or train again.")
    return card


def is_model_file(path: str | Path) -> bool:
    """True when ``path`` holds a Deep Learning Trainer model (by content, any file name)."""
    p = Path(path)
    if not p.is_file():
        return False
    meta = _safetensors_metadata(p)
    return bool(meta) and meta.get("format") == FORMAT



def load_built(path: str | Path, card: dict, build, kind: str, what: str):
    """The network ``build(card)`` makes, with the weights of the model file ``path`` loaded
    strictly (:func:`load_weights`), in eval mode on the CPU. ``kind`` names the network in
    the message when the card names one this plugin cannot build (UserError: KeyError,
    ValueError or TypeError from ``build``); ``what`` names it when the weights do not fit."""
    try:
        network = build(card)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"The model card of {Path(path).name} names {kind} this plugin "
                        f"cannot build ({exc}).", "Use the model file as training wrote it, "
                        "or train again.") from None
    load_weights(network, path, what)
    return network.eval()


def load_weights(network, path: str | Path, what: str, *, assign: bool = False):
    """Load the tensors of the model file ``path`` into ``network`` strictly (every key present,
    none left over, every shape equal) and return ``network``; ``what`` names the network in the
    message (e.g. "a unet / resnet18 network"); ``assign``: take the file's tensors as they are
    (for a network built on the meta device). Raises UserError naming the file when they do not
    fit (a damaged or edited file)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshapen:
        raise UserError(f"The weights in {Path(path).name} do not fit {what} ({len(missing)} "
                        f"missing, {len(unexpected)} unexpected, {len(misshapen)} of another "
                        "shape): the file or its model card was damaged or edited.",
                        "Use the model file as training wrote it, or train again.")
    network.load_state_dict(state, strict=True, assign=assign)
    return network


def load_model(path: str | Path, task: str | None = None):
    """(predictor in eval mode on the CPU, card) of the model file ``path`` of any family, built
    by the loader its family's row names (:data:`..families.FAMILIES`); ``task`` as in
    :func:`read_model_card`. The predictor maps raw pixels (N, bands, H, W) float32 to the
    family's outputs. Raises UserError for an invalid file or a task no family knows."""
    from .families import load_function

    card = read_model_card(path, task)
    return load_function(card["task"], path)(path, card)


# -- optimizer state beside a last model --------------------------------------------------------
def optimizer_path(model_path: str | Path) -> Path:
    """``<model>.optim.safetensors`` beside the last model ``model_path``; for a path without a
    file name ("/", "." while a name is typed) the file inside that folder."""
    p = Path(model_path)
    return p.with_name(p.name + ".optim.safetensors") if p.name else p / ".optim.safetensors"


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
    meta = {"param_groups": json.dumps(sd["param_groups"], default=json_default),
            "scalars": json.dumps(scalars, default=json_default)}
    return write_safetensors(tensors, optimizer_path(model_path), meta)


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




def field_problem(card: dict, key: str, low: float, high: float, *, whole: bool = False,
                  optional: bool = False) -> str | None:
    """What is wrong with the card's number ``key`` (a phrase) or None: it must be a finite
    number in [``low``, ``high``] (a whole number with ``whole``); absent is fine when
    ``optional``. For the families' card checks."""
    import math

    if key not in card and optional:
        return None
    value = card.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not low <= value <= high \
            or (whole and int(value) != value):
        kind = "a whole number" if whole else "a number"
        return f"{key} {value!r} is not {kind} from {low:g} to {high:g}"
    return None


def choice_problem(card: dict, key: str, choices) -> str | None:
    """What is wrong with the card's text ``key`` (a phrase) or None: it must be one of
    ``choices``."""
    if card.get(key) not in choices:
        return f"{key} {card.get(key)!r} is not one of {', '.join(choices)}"
    return None
