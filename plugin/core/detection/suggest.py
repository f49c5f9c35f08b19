"""Object detection's part of Suggest Areas to Label (:mod:`..suggest_labels`): a window is
uncertain where the detector finds boxes with scores near its decision threshold
(:func:`..suggest_labels.objects_uncertainty`)."""

from __future__ import annotations

import numpy as np


def window_size(card: dict) -> int:
    """The suggested square's side: the training patch size (px)."""
    return int(card["patch_size"])


def uncertainty(predictor, card: dict, batch: np.ndarray, valid: np.ndarray,
                device: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores float (N,) in [0, 1), class id of the most borderline box (N,) int (0 when
    none), reasons) of ``batch`` (N, bands, S, S) float32 raw pixels (the detector normalises
    them itself): :func:`..suggest_labels.objects_uncertainty` of its outputs."""
    import torch

    from ..suggest_labels import objects_uncertainty

    return objects_uncertainty(predictor(list(torch.from_numpy(batch).to(device))), card)
