"""START_WEIGHTS, the weights every family's training starts from: one field, one check and one
loader for all of them.

The value is ``random``, the family's pretrained choice (``coco`` for the torchvision detectors
of object detection and instance segmentation, ``imagenet`` for the others: the ``pretrained``
of the family's row in :data:`..families.FAMILIES`) or the path of a local weights file. A
family's network module says which library weights its pretrained choice downloads (through the
library's own cache, so one download serves every later run); this module reads local files,
turns failed downloads into a :class:`~..errors.UserError` naming the cache folder, adapts the
first convolution to the band count (:func:`adapt_first_conv_weight`) and loads what fits
(:func:`load_start_state`).

Learning-rate schedule with a pretrained start: every run already warms up linearly over the
first 5 % of its steps (at most 100; :mod:`.runtime`, after Goyal et al. 2017), which keeps the
first large, noisy updates of the fresh head from wrecking the pretrained features, so the
families keep their LEARNING_RATE defaults for every START_WEIGHTS. The torchvision detectors
keep the batch-norm statistics of a pretrained start fixed (:func:`..fpn.freeze_batch_norm`), as
torchvision's own detectors do with pretrained backbones.

Light at import time (torch is imported inside the functions): the job modules read the field.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import UserError
from ..families import family
from ..params import spec

START_RANDOM = "random"
WEIGHTS_FILTER = "Weights (*.safetensors *.pth *.pt *.bin)"
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: Parameters earlier versions had instead of START_WEIGHTS (job files, Processing calls):
#: field name → Processing name. A file overrides a choice, as it did then.
LEGACY_CHOICES = {"encoder_weights": "ENCODER_WEIGHTS", "weights": "WEIGHTS"}
LEGACY_FILES = {"encoder_weights_file": "ENCODER_WEIGHTS_FILE", "weights_file": "WEIGHTS_FILE"}


def pretrained_choice(task: str) -> str:
    """The START_WEIGHTS value of ``task``'s family for the library's pretrained weights
    ("coco" or "imagenet", from the family table)."""
    fam = family(task)
    return fam.pretrained if fam is not None else "imagenet"


def start_weights_field(task: str, pretrained: str):
    """START_WEIGHTS of the train job of family ``task``; ``pretrained`` says what its
    pretrained choice downloads (e.g. "torchvision's COCO Mask R-CNN")."""
    choice = pretrained_choice(task)
    return spec(START_RANDOM, "START_WEIGHTS", "Start weights", "str", advanced=True,
                file_filter=WEIGHTS_FILTER,
                help=f"random; {choice}: {pretrained} (downloaded once into the library's "
                     "cache; offline, download them on a connected computer first); or a local "
                     ".safetensors / .pth file: a state dict of the same network or of its "
                     "backbone. The first layer is adapted to the band count (the RGB filters "
                     "for the first three bands, their mean for the others); the layers that "
                     "do not fit (the class head) start random. Ignored when starting from a "
                     "model (INIT_MODEL, RESUME_FROM).")


def start_problems(value: str, task: str) -> list[str]:
    """A sentence (problem + fix) when START_WEIGHTS ``value`` is neither random, ``task``'s
    family's pretrained choice nor an existing weights file (an empty value, a folder, a path
    that does not exist, a file that is no weights file: :func:`weights_file_problem`, a word
    misspelt); else none."""
    choice = pretrained_choice(task)
    if value in (START_RANDOM, choice):
        return []
    choose = f"choose {START_RANDOM}, {choice} or the path of a .safetensors or .pth file"
    word = value.strip().lower()
    if not word:
        return [f"Start weights (START_WEIGHTS) is empty: {choose}."]
    if word in (START_RANDOM, choice):
        return [f"Start weights (START_WEIGHTS) {value!r}: write {word} (lower case, no "
                "spaces)."]
    path = Path(value).expanduser()
    if path.is_dir():
        return [f"The start weights {value} (START_WEIGHTS) is a folder: choose a weights file "
                "(.safetensors, .pth)."]
    if path.is_file():
        problem = weights_file_problem(path)
        return [f"The start weights file {path.name} (START_WEIGHTS) {problem}: give a state "
                "dict saved with safetensors or torch.save (.safetensors, .pth), or choose "
                f"{START_RANDOM}."] if problem else []
    if any(sep in value for sep in "/\\") or path.suffix.lower() in WEIGHTS_SUFFIXES:
        return [f"The start weights file {value} (START_WEIGHTS) does not exist: check the "
                f"path, or choose {START_RANDOM} or {choice}."]
    return [f"Start weights (START_WEIGHTS) {value!r} is neither {START_RANDOM}, {choice} nor an "
            f"existing weights file: {choose}."]


def weights_file_problem(path: str | Path) -> str:
    """What makes the file at ``path`` no weights file, "" when it looks like one: a
    ``.safetensors`` file needs safetensors' header (8-byte little-endian length, then a JSON
    table naming at least one tensor), any other file the start of what ``torch.save`` writes
    (a zip archive, or a pickle's protocol byte 0x80 for the legacy format). Reads a few bytes
    with the standard library only (the dialogs check it as the user types); whether the
    tensors fit is checked when the network is built (:func:`load_start_state`)."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
        if size == 0:
            return "is empty"
        with p.open("rb") as f:
            head = f.read(8)
            if p.suffix.lower() != ".safetensors":
                return ("" if head[:1] == b"\x80" or zipfile.is_zipfile(p) else
                        "is neither a safetensors file nor a file saved with torch.save")
            length = int.from_bytes(head, "little") if len(head) == 8 else size
            if length > size - 8:
                return "is not a safetensors file (no safetensors header)"
            header = json.loads(f.read(length))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except ValueError:   # JSON (and Unicode) decoding errors
        return "is not a safetensors file (no safetensors header)"
    if not isinstance(header, dict) or not set(header) - {"__metadata__"}:
        return "holds no tensors"
    return ""


def upgrade_legacy(params: dict, task: str) -> dict:
    """``params`` (field → value) with the START_WEIGHTS of the older fields of
    :data:`LEGACY_CHOICES` / :data:`LEGACY_FILES` (ENCODER_WEIGHTS none/imagenet or 0/1,
    ENCODER_WEIGHTS_FILE, WEIGHTS, WEIGHTS_FILE) in ``start_weights``, those fields removed
    (a ``start_weights`` already in ``params`` is kept). UserError for a choice those settings
    never had (it used to be refused; it must not become random weights unseen)."""
    out = dict(params)
    choice = file = None
    for name, parameter in LEGACY_CHOICES.items():
        if name in out:
            value = out.pop(name)
            word = str(value).strip().lower()
            if word not in ("imagenet", "1", "none", "0", ""):
                raise UserError(f"{parameter} {value!r} (a setting of earlier versions, now "
                                "START_WEIGHTS) is neither none nor imagenet.",
                                f"Write START_WEIGHTS {START_RANDOM}, {pretrained_choice(task)} "
                                "or the path of a weights file instead.")
            choice = pretrained_choice(task) if word in ("imagenet", "1") else START_RANDOM
    for name in LEGACY_FILES:
        if name in out:
            file = out.pop(name) or file
    if "start_weights" not in out and (file or choice):
        out["start_weights"] = file or choice
    return out


# -- torch side ---------------------------------------------------------------------------------
def read_state_file(path: str | Path) -> dict:
    """The tensors of a local weights file: ``.safetensors``, or a state dict saved with
    ``torch.save`` (read with ``weights_only=True``: no pickled code runs), optionally under
    ``state_dict`` or ``model`` (training checkpoints). Raises UserError when it is missing,
    unreadable or holds no tensors."""
    import torch

    p = Path(path).expanduser()
    fix = "Give a state dict saved with safetensors or torch.save (.safetensors, .pth)."
    if not p.is_file():
        raise UserError(f"The start weights file {p} does not exist.",
                        f"Check START_WEIGHTS, or use {START_RANDOM}.")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:   # weights_only refuses pickled code: a whole model, say
        raise UserError(f"The start weights file {p.name} cannot be read: it holds Python "
                        "objects besides tensors (a whole network saved with torch.save("
                        "model)?), and loading those could run any code.",
                        "Save the network's state dict instead: torch.save(model.state_dict(), "
                        "path) or safetensors.") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise UserError(f"The start weights file {p.name} cannot be read ({reason(exc)}).",
                        fix) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    tensors = ({k: v for k, v in state.items() if torch.is_tensor(v)}
               if isinstance(state, dict) else {})
    if not tensors:
        raise UserError(f"The start weights file {p.name} holds no state dict.", fix)
    return tensors


def reason(exc: BaseException) -> str:
    """``exc`` in one short line for a message: its type and the first line of its text
    (a URLError's reason without ``<urlopen error …>``, which rich-text labels would swallow;
    no terminal colour codes; at most 200 characters)."""
    text = str(getattr(exc, "reason", None) or exc)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()[:200]


def offline_error(what: str, cache: str | Path, why: str) -> UserError:
    """The UserError of a library download (``what``) that failed offline (``why``), naming
    the cache folder to fill on a connected machine and the local-file way out."""
    return UserError(f"Offline: {what} could not be downloaded ({why}).",
                     f"Download {what} on a connected machine into {cache} (run a training "
                     "with the same START_WEIGHTS there, then copy that folder here), or give a "
                     "local weights file as START_WEIGHTS.")


def download_state(what: str, cache: str | Path, fetch: Callable[[], dict]) -> dict:
    """``fetch()``: the state dict of a library's pretrained weights (``what``, e.g.
    "torchvision's COCO RetinaNet weights"), which the library downloads into ``cache`` or
    finds there. Raises UserError naming ``cache`` when the download fails (offline)."""
    try:
        return fetch()
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - network failures come in many types
        raise offline_error(what, cache, reason(exc)) from None


def hf_hub_state(what: str, fetch: Callable[[], dict], timeout_s: float = 5.0) -> dict:
    """``fetch()`` for weights the library takes from the Hugging Face hub (timm's, smp's):
    first from the hub's cache alone, in the hub's offline mode (no request); when they are
    not there, one connection to the hub (``timeout_s``) decides: none → the offline
    UserError at once (the hub's own retries take 25–50 s, a warning each); else
    :func:`download_state`. With a proxy configured the connection test is left out."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        return fetch()
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001, S110 - not in the cache: the hub is tried below
        pass
    finally:
        constants.HF_HUB_OFFLINE = offline
    if offline or not reachable(constants.ENDPOINT, timeout_s):
        raise offline_error(what, hf_hub_cache(), f"not in the cache, and {constants.ENDPOINT} "
                            "cannot be reached")
    return download_state(what, hf_hub_cache(), fetch)


def reachable(url: str, timeout_s: float) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout_s`` (True when a
    proxy is configured: the library goes through it, not straight to the host)."""
    import socket
    import urllib.parse
    import urllib.request

    if urllib.request.getproxies():
        return True
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def torch_hub_cache() -> Path:
    """The folder where torchvision (and timm's torch-hub weights) keep downloads."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache (timm's and segmentation-models-pytorch's weights)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def torchvision_state(weights) -> dict:
    """The state dict of the torchvision weights enum member ``weights`` (e.g.
    ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``) from torchvision's cache or its download."""
    return download_state(f"torchvision's {weights} weights", torch_hub_cache(),
                          lambda: weights.get_state_dict(progress=False, check_hash=False))


def adapt_first_conv_weight(weight, bands: int):
    """A first-convolution kernel (out, in, kh, kw) of an RGB network for ``bands`` input
    bands: band i takes RGB kernel i for i < 3 and the mean of the RGB kernels beyond (fewer
    bands: the first ones), all scaled by in / bands so that an input whose bands look alike
    gives activations of the same size (the rule of timm's ``adapt_input_conv`` and smp's
    ``patch_first_conv``, which repeat the RGB kernels instead). Same dtype."""
    import torch

    have = weight.shape[1]
    if have == bands:
        return weight
    extra = weight.mean(dim=1, keepdim=True).expand(-1, max(bands - have, 0), -1, -1)
    return torch.cat([weight[:, :bands], extra], dim=1) * (have / bands)


def first_conv_name(net) -> str:
    """The parameter name of the first convolution's kernel of ``net`` (module order)."""
    from torch import nn

    return next(f"{name}.weight" for name, m in net.named_modules() if isinstance(m, nn.Conv2d))


def load_start_state(net, state: dict, *, prefixes: Iterable[str] = ("",), core: str = "",
                     what: str = "the network") -> tuple[int, int]:
    """Load the tensors of ``state`` that fit ``net``: a key (after a ``module.`` prefix is
    dropped) is tried as it is and with each of ``prefixes`` (e.g. "backbone.body." for a
    plain ResNet file, "encoder." for an encoder file); the first convolution is adapted to the
    network's band count (:func:`adapt_first_conv_weight`); tensors of another shape (a class
    head for other classes) are skipped. Returns (tensors loaded, tensors of ``net`` under
    ``core``, the part a start file must fit). UserError when less than half of that part fits
    (weights of another architecture)."""
    own = net.state_dict()
    first = first_conv_name(net)
    taken = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for name in dict.fromkeys((key, *(p + key for p in prefixes))):
            if name not in own:
                continue
            if name == first and value.dim() == 4 and value.shape[0] == own[name].shape[0]:
                value = adapt_first_conv_weight(value, own[name].shape[1])
            if tuple(value.shape) == tuple(own[name].shape):
                taken[name] = value.to(own[name].dtype)
                break
    part = [k for k in own if k.startswith(core) and not k.endswith("num_batches_tracked")]
    fitted = sum(k in taken for k in part)
    if fitted < len(part) / 2:
        raise UserError(f"The start weights fit only {fitted} of the {len(part)} tensors of "
                        f"{what}: they belong to another architecture.",
                        f"Give weights of the same architecture (or of its backbone), or use "
                        f"START_WEIGHTS {START_RANDOM}.")
    net.load_state_dict(taken, strict=False)
    return len(taken), len(part)


def start_network(net, start: str, task: str, pretrained: Callable[[], dict], *,
                  prefixes: Iterable[str] = ("",), core: str = "",
                  what: str = "the network") -> str:
    """Fill the freshly built ``net`` as START_WEIGHTS ``start`` says for family ``task``:
    nothing for random, ``pretrained()`` (the family's library download, through
    :func:`download_state`) for its pretrained choice, :func:`read_state_file` for a path; then
    :func:`load_start_state`. Returns the line for the training log ("" for random). UserError
    for any other value, an unreadable file, weights of another architecture or offline."""
    if start == START_RANDOM:
        return ""
    problems = start_problems(start, task)
    if problems:
        raise UserError(problems[0])
    state = pretrained() if start == pretrained_choice(task) else read_state_file(start)
    loaded, part = load_start_state(net, state, prefixes=prefixes, core=core, what=what)
    return (f"Start weights {start}: {loaded} tensors loaded ({part} in the pretrained part); "
            "the rest starts random.")
