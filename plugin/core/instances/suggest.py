"""Instance segmentation's part of Suggest Areas to Label (:mod:`..suggest_labels`): a window is
uncertain where Mask R-CNN finds objects with scores near the card's score threshold
(:func:`..suggest_labels.objects_uncertainty`, as for object detection)."""

from __future__ import annotations

import numpy as np


def window_size(card: dict) -> int:
    """The suggested square's side: the training patch size (px)."""
    return int(card["patch_size"])


def uncertainty(predictor, card: dict, batch: np.ndarray, valid: np.ndarray,
                device: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores float (N,) in [0, 1), class ids, reasons) of ``batch`` (N, bands, S, S) float32
    raw pixels; ``predictor``: the loaded Mask R-CNN (it normalises inside)."""
    import torch

    from ..suggest_labels import objects_uncertainty

    return objects_uncertainty(predictor(list(torch.from_numpy(batch).to(device))), card)
