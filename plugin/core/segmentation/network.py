"""Segmentation networks (the shared segmentation-models-pytorch ones of
:mod:`..smp_networks`) and the predictor wrapper.

The :class:`Predictor` wraps a network with the per-band normalisation stored in the model card
and a softmax, so it maps raw pixel values (N, bands, H, W) to class probabilities
(N, classes, H, W). Torch inference and the ONNX export use the same wrapper.
"""

from __future__ import annotations

import torch
from torch import nn

from ..smp_networks import (  # noqa: F401 - segmentation's names for the shared networks
    CPU_DEFAULT,
    GPU_DEFAULT,
    SMP_NAMES,
    build_network,
    resolve_auto,
)


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
