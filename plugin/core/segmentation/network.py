"""Segmentation networks (segmentation-models-pytorch) and the predictor wrapper.

The :class:`Predictor` wraps a network with the per-band normalisation stored in the model card
and a softmax, so it maps raw pixel values (N, bands, H, W) to class probabilities
(N, classes, H, W). Torch inference and the ONNX export use the same wrapper.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

SMP_NAMES = {"unetplusplus": "UnetPlusPlus", "unet": "Unet", "deeplabv3plus": "DeepLabV3Plus"}


def build_network(architecture: str, encoder: str, in_channels: int, classes: int,
                  encoder_weights: str | None = None) -> nn.Module:
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


def load_encoder_weights(network: nn.Module, path: str) -> tuple[int, int]:
    """Load a local timm / torchvision checkpoint (``.pth``/``.pt``/``.bin``: a state dict,
    optionally under ``state_dict`` or ``model``; or ``.safetensors``) into ``network.encoder``.

    Keys may carry a ``module.``/``encoder.``/``backbone.`` prefix; the classifier head
    (``fc``, ``classifier``) is skipped. The first convolution is adapted to the band count as
    segmentation-models-pytorch does (channel i takes RGB channel i mod 3, scaled by
    3 / bands). Returns (tensors loaded, encoder tensors). UserError when the file cannot be read
    or fits less than half of the encoder.
    """
    from pathlib import Path

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
    from pathlib import Path

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


class Predictor(nn.Module):
    """Raw pixels → normalised → network → softmax probabilities."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return torch.softmax(self.network(x).float(), dim=1)
