"""Segmentation-models-pytorch networks every pixel family builds (segmentation, regression):
the architectures a card can name, construction with optional ImageNet encoder weights (a
UserError offline), the CPU / GPU defaults for ``auto`` and local encoder checkpoints. Moved
from ``segmentation/network.py`` so that other pixel families share them. Light at import time
(torch is imported inside the functions): the job modules read the names below.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

SMP_NAMES = {"unetplusplus": "UnetPlusPlus", "unet": "Unet", "deeplabv3plus": "DeepLabV3Plus"}
#: The ENCODER choices of the pixel trainers ("auto": :func:`resolve_auto`).
ENCODERS = ("auto", "resnet34", "resnet18", "resnet50", "efficientnet-b0", "mobilenet_v2")


def build_network(architecture: str, encoder: str, in_channels: int, classes: int,
                  encoder_weights: str | None = None):
    """A fresh smp network; ``encoder_weights`` 'imagenet' downloads them (UserError offline)."""
    import segmentation_models_pytorch as smp

    if architecture not in SMP_NAMES:
        raise UserError(f"Unknown architecture {architecture!r}.",
                        f"Use one of: {', '.join(SMP_NAMES)}.")
    weights = None if encoder_weights in (None, "", "none") else encoder_weights
    if weights and not _weights_cached(encoder, weights) and not _online():
        raise UserError(f"The {weights} weights of encoder {encoder} are not on this computer "
                        "and the internet cannot be reached to download them.",
                        "Connect to the internet once (they are cached afterwards), or set "
                        "Encoder weights to 'none'.")
    try:
        return smp.create_model(SMP_NAMES[architecture], encoder_name=encoder,
                                encoder_weights=weights, in_channels=in_channels,
                                classes=classes)
    except KeyError as exc:
        raise UserError(f"Encoder {encoder!r} is not available for {architecture} ({exc}).",
                        "Choose another encoder.") from None
    except Exception as exc:  # noqa: BLE001 - download failures come in many types
        if weights is None:
            raise
        raise UserError(f"The {weights} weights of encoder {encoder} could not be obtained "
                        f"({type(exc).__name__}: {exc}).",
                        "Connect to the internet once (they are cached afterwards), or set "
                        "Encoder weights to 'none'.") from None


CPU_DEFAULT = ("unet", "resnet18")           # 7.9 GFLOP per 128² step (issue 9, cause 4)
GPU_DEFAULT = ("unetplusplus", "resnet34")   # 27 GFLOP: affordable on a GPU


def resolve_auto(architecture: str, encoder: str, device: str) -> tuple[str, str]:
    """'auto' architecture / encoder → the default that fits ``device``."""
    arch, enc = CPU_DEFAULT if device == "cpu" else GPU_DEFAULT
    return (arch if architecture == "auto" else architecture,
            enc if encoder == "auto" else encoder)


def load_encoder_weights(network, path: str) -> tuple[int, int]:
    """Load a local timm / torchvision checkpoint (``.pth``/``.pt``/``.bin``: a state dict,
    optionally under ``state_dict`` or ``model``; or ``.safetensors``) into ``network.encoder``.

    Keys may carry a ``module.``/``encoder.``/``backbone.`` prefix; the classifier head
    (``fc``, ``classifier``) is skipped. The first convolution is adapted to the band count as
    segmentation-models-pytorch does (channel i takes RGB channel i mod 3, scaled by
    3 / bands). Returns (tensors loaded, encoder tensors). UserError when the file cannot be read
    or fits less than half of the encoder.
    """
    import torch

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise UserError(f"The encoder weights file {p.name} cannot be read ({exc}).",
                        "Choose a timm or torchvision checkpoint (.pth or .safetensors).") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = network.encoder.state_dict()
    fitting = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        for prefix in ("module.", "encoder.", "backbone."):
            key = key.removeprefix(prefix)
        if key not in own:
            continue
        if value.dim() == 4 and own[key].dim() == 4 and value.shape[1] != own[key].shape[1] \
                and value.shape[0] == own[key].shape[0] and value.shape[2:] == own[key].shape[2:]:
            bands = own[key].shape[1]
            value = value[:, [i % value.shape[1] for i in range(bands)]] * (
                value.shape[1] / bands)
        if value.shape == own[key].shape:
            fitting[key] = value.float()
    if len(fitting) < len(own) / 2:
        raise UserError(f"The encoder weights file {p.name} fits only {len(fitting)} of the "
                        f"{len(own)} tensors of the encoder.",
                        "Choose a checkpoint of the same encoder (e.g. resnet18 for ResNet-18).")
    network.encoder.load_state_dict(fitting, strict=False)
    return len(fitting), len(own)


def _weights_cached(encoder: str, weights: str) -> bool:
    """Whether smp's pretrained weights for ``encoder`` seem to be in the local caches."""
    import os

    import torch

    hf = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME", "") or
              Path.home() / ".cache" / "huggingface")
    candidates = [hf / f"models--smp-hub--{encoder}.{weights}",
                  hf / "hub" / f"models--smp-hub--{encoder}.{weights}"]
    torch_hub = Path(torch.hub.get_dir()) / "checkpoints"
    return any(c.is_dir() for c in candidates) or (
        torch_hub.is_dir() and any(encoder.replace("-", "_") in p.name or encoder in p.name
                                   for p in torch_hub.iterdir()))


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_smp_network(path: str | Path, card: dict, outputs: int | None = None):
    """The network of the model file ``path`` whose ``card`` names its ``architecture``,
    ``encoder`` and ``bands`` (``outputs`` channels, default the card's ``num_outputs``), built
    on the meta device and filled with the file's tensors (safetensors only,
    :func:`.modelfile.load_weights`). UserError when the card names a network this plugin cannot
    build or the tensors do not fit it."""
    import torch

    from .modelfile import load_weights

    try:
        with torch.device("meta"):   # no random initialisation: every tensor comes from the file
            network = build_network(card["architecture"], card["encoder"], int(card["bands"]),
                                    int(outputs or card["num_outputs"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"The model card of {Path(path).name} names a network this plugin "
                        f"cannot build ({exc}).", "Use the model file as training wrote it, "
                        "or train again.") from None
    return load_weights(network, path, f"a {card['architecture']} / {card['encoder']} network",
                        assign=True)
