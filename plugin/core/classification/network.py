"""Classification networks (timm backbones) and the predictor wrapper.

Any band count: timm's ``in_chans`` adapts the first convolution (with ImageNet weights the RGB
filters are repeated and rescaled, as timm does). Weights: ``"imagenet"`` (timm's pretrained
weights; downloaded once, needs internet), a local weights file (safetensors or a timm/torch
state dict of the same architecture: the fitting tensors are loaded) or ``"none"`` (random).

:class:`ClassifierPredictor` maps raw pixels (N, bands, H, W) float32 to probabilities
(N, classes) float32: ``(x − mean) / std`` per band, then a softmax (single-label) or a sigmoid
per class (multi-label).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .architectures import ARCHITECTURES

WEIGHTS = ("none", "imagenet")


def build_classifier(architecture: str, bands: int, classes: int, weights: str = "none",
                     weights_file: str = "") -> nn.Module:
    """A timm classification network with ``bands`` input channels and ``classes`` outputs
    (logits). ``weights``: 'imagenet' or 'none'; ``weights_file`` (overrides ``weights``): a
    local file of weights for this architecture. UserError offline without cached weights."""
    import timm

    if architecture not in ARCHITECTURES:
        raise UserError(f"Unknown architecture {architecture!r}.",
                        f"Use one of: {', '.join(ARCHITECTURES)}.")
    pretrained = weights == "imagenet" and not weights_file
    try:
        net = timm.create_model(architecture, pretrained=pretrained, in_chans=int(bands),
                                num_classes=int(classes))
    except Exception as exc:  # noqa: BLE001 - download failures come in many types
        if not pretrained:
            raise
        raise UserError(f"The ImageNet weights of {architecture} could not be obtained "
                        f"({type(exc).__name__}).",
                        "Connect to the internet once (they are cached afterwards), choose a "
                        "local weights file, or set the weights to 'none'.") from None
    if weights_file:
        load_weights_file(net, weights_file)
    return net


def load_weights_file(net: nn.Module, path: str) -> int:
    """Load the tensors of ``path`` whose names and shapes fit ``net`` (the classifier head and
    a first convolution of another band count are left as they are); returns how many were
    loaded. UserError when the file is missing, unreadable or nothing fits."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"The weights file {p} does not exist.", "Check the path.")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise UserError(f"The weights file {p.name} cannot be read ({type(exc).__name__}).",
                        "Choose a safetensors or PyTorch state-dict file.") from None
    own = net.state_dict()
    fitting = {k: v for k, v in state.items()
               if k in own and hasattr(v, "shape") and own[k].shape == v.shape}
    if not fitting:
        raise UserError(f"No weight in {p.name} fits the network.",
                        "Choose a weights file of the same architecture.")
    net.load_state_dict(fitting, strict=False)
    return len(fitting)


def head_parameters(net: nn.Module) -> list[str]:
    """Names of the parameters of the last (classifier) layer, from timm's
    ``get_classifier()``."""
    head = net.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return [n for n, p in net.named_parameters() if id(p) in ids]


def freeze_all_but_head(net: nn.Module) -> list[str]:
    """Freeze every parameter except the last layer's (GBDX's second round); returns the names
    left trainable."""
    names = set(head_parameters(net))
    for n, p in net.named_parameters():
        p.requires_grad_(n in names)
    return sorted(names)


class ClassifierPredictor(nn.Module):
    """Raw pixels (N, bands, H, W) → normalised → network → probabilities (N, classes)."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float],
                 multi_label: bool) -> None:
        super().__init__()
        self.network = network
        self.multi_label = bool(multi_label)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network((x - self.mean) / self.std).float()
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)


def load_classifier(path: str | Path, card: dict | str | None = None):
    """(:class:`ClassifierPredictor` in eval mode on the CPU, card) of a grid model or chip
    classifier file: raw pixels (N, bands, H, W) float32 → scores (N, classes). ``card``: the
    card already read, or the task the caller needs ('grid' or 'chip_classification'; a model
    of another task raises UserError naming both); None reads it and accepts either. Tensors
    are read with safetensors only (no pickle). The loader of both families' table rows."""
    from ..modelfile import load_weights, read_model_card

    if not isinstance(card, dict):
        card = read_model_card(path, card)
        if card.get("task") not in ("grid", "chip_classification"):
            read_model_card(path, "grid")   # the UserError naming both tasks
    try:
        net = build_classifier(card["architecture"], int(card["bands"]), len(card["classes"]))
        multi_label = bool(card["multi_label"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"The model card of {Path(path).name} names a network this plugin "
                        f"cannot build ({exc}).", "Use the model file as training wrote it, "
                        "or train again.") from None
    load_weights(net, path, f"a {card['architecture']} network")
    predictor = ClassifierPredictor(net, card["mean"], card["std"], multi_label).eval()
    return predictor, card
