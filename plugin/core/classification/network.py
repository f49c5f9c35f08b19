"""Classification networks (timm backbones) and the predictor wrapper.

Any band count: timm's ``in_chans`` builds the first convolution for the bands. Start weights
(START_WEIGHTS, :mod:`..training.start_weights`): random, ``imagenet`` (timm's pretrained
weights, :func:`pretrained_state`) or a local file of the same architecture; the RGB kernels of
the first convolution are adapted to the band count there.

:class:`ClassifierPredictor` maps raw pixels (N, bands, H, W) float32 to probabilities
(N, classes) float32: ``(x − mean) / std`` per band, then a softmax (single-label) or a sigmoid
per class (multi-label). A model trained with flips and 90° turns (the card's ``tta``: AUGMENT of
chip classifiers, AUGMENT_FLIP of grid models) is invariant to them by training, so its
probabilities are the mean over the 8 flips/turns of the input (test-time augmentation,
:func:`..inference.dihedral_mean`), in validation (where the offsets and thresholds are tuned)
as in Classify Chips, Classify Grid and the grid filter (their TTA turns it off). Issue 19
(bench/real_classifiers.py imbalanced, Landsat chips held out spatially, seeds 0–2): class_3
AUC 0.812 / 0.841 / 0.888 plain, 0.836 / 0.900 / 0.917 with the 8 flips/turns, same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..inference import dihedral_mean
from .architectures import ARCHITECTURES


def build_classifier(architecture: str, bands: int, classes: int) -> nn.Module:
    """A timm classification network with random weights, ``bands`` input channels and
    ``classes`` outputs (logits); START_WEIGHTS fills it (:func:`pretrained_state`,
    :func:`..training.start_weights.start_network`). UserError for an unknown architecture."""
    import timm

    if architecture not in ARCHITECTURES:
        raise UserError(f"Unknown architecture {architecture!r}.",
                        f"Use one of: {', '.join(ARCHITECTURES)}.")
    return timm.create_model(architecture, pretrained=False, in_chans=int(bands),
                             num_classes=int(classes))


def pretrained_state(architecture: str) -> dict:
    """The state dict of START_WEIGHTS imagenet: timm's default pretrained weights of
    ``architecture`` (RGB, 1000 ImageNet classes: e.g. ``resnet50.a1_in1k``, from the Hugging
    Face hub into its cache); the head for ImageNet's classes does not fit and starts random.
    UserError offline."""
    import timm

    from ..training.start_weights import hf_hub_state

    return hf_hub_state(f"timm's ImageNet {architecture} weights",
                        lambda: timm.create_model(architecture, pretrained=True).state_dict())


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
                 multi_label: bool, tta: bool = False) -> None:
        super().__init__()
        self.network = network
        self.multi_label = bool(multi_label)
        self.tta = bool(tta)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_scores(self.network, (x - self.mean) / self.std, self.multi_label,
                            self.tta)


def class_scores(network: nn.Module, x: torch.Tensor, multi_label: bool,
                 tta: bool) -> torch.Tensor:
    """(N, classes) float32 probabilities of normalised ``x`` (N, bands, H, W): sigmoid
    (multi-label) or softmax of the logits; ``tta``: their mean over the 8 flips/turns."""
    def probs(v: torch.Tensor) -> torch.Tensor:
        logits = network(v).float()
        return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)

    return dihedral_mean(probs, x) if tta else probs(x)


def load_classifier(path: str | Path, card: dict | str | None = None):
    """(:class:`ClassifierPredictor` in eval mode on the CPU, card) of a grid model or chip
    classifier file: raw pixels (N, bands, H, W) float32 → scores (N, classes), the mean over
    the 8 flips/turns when the card's ``tta`` is true (its ``tta`` attribute). ``card``: the
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
    predictor = ClassifierPredictor(net, card["mean"], card["std"], multi_label,
                                    bool(card.get("tta", False))).eval()
    return predictor, card


def load_for_job(job, task: str):
    """(predictor in eval mode on the job's DEVICE, card, device name) of a classify job's
    ``model`` (:func:`load_classifier` for ``task``); it scores over the 8 flips/turns only
    when both the card and the job's TTA say so. Raises what :func:`load_classifier` raises."""
    from ..environment import resolve_device

    predictor, card = load_classifier(job.model, task)
    predictor.tta = predictor.tta and bool(job.tta)
    device = resolve_device(job.device)
    return predictor.to(device), card, device
