"""The pixel regression predictor: a segmentation-models-pytorch network of one output channel
(:mod:`..smp_networks`) between the band normalisation and the target's denormalisation, so it
maps raw pixels (N, bands, H, W) to values (N, 1, H, W) in the target's unit. Torch inference
and the ONNX export use the same wrapper.
"""

from __future__ import annotations

import torch
from torch import nn


class ValuePredictor(nn.Module):
    """Raw pixels → ``(x − mean) / std`` → network → ``y · target_std + target_mean``."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float],
                 target_mean: float, target_std: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("target", torch.tensor([target_mean, target_std],
                                                    dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.network((x - self.mean) / self.std).float()
        return y * self.target[1] + self.target[0]
