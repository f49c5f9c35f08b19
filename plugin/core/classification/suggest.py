"""The grid model's and chip classifier's part of Suggest Areas to Label
(:mod:`..suggest_labels`): a window is one grid cell or one chip.

- single-label: the entropy of the class scores divided by log(classes), in [0, 1] (entropy
  sampling, Settles 2009, "Active Learning Literature Survey", §3.1);
- multi-label (grid models, multi-label chips): per class, how close the score is to the class's
  decision threshold (1 at the threshold, 0 at 0 or 1: ``1 − |p − t| / max(t, 1 − t)``); the
  window's score is the largest over its classes (least-confidence sampling per label).
"""

from __future__ import annotations

import numpy as np


def window_size(card: dict) -> int:
    """The suggested square's side (px): a grid cell (``grid_size``) or a chip (``max_side``)."""
    return int(card["grid_size"] if card.get("task") == "grid" else card["max_side"])


def uncertainty(predictor, card: dict, batch: np.ndarray, valid: np.ndarray,
                device: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores float (N,) in [0, 1], most likely class id (N,) int, reasons) of ``batch``
    (N, bands, S, S) float32 raw pixels (resized to the card's ``resize`` when it has one, as
    Classify Chips does); ``valid`` is not used (a cell or chip is classified whole)."""
    import torch

    x = torch.from_numpy(batch).to(device)
    if card.get("task") != "grid" and int(card.get("resize") or 0) > 0:
        side = int(card["resize"])
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear",
                                            align_corners=False)
    probs = predictor(x).float().cpu().numpy()            # N, classes
    ids = [int(c["id"]) for c in card["classes"]]
    names = [c["name"] for c in card["classes"]]
    if card.get("multi_label"):
        th = np.asarray(card.get("thresholds") or [0.5] * len(ids), np.float64)
        near = 1 - np.abs(probs - th) / np.maximum(th, 1 - th)
        which = near.argmax(1)
        scores = near.max(1)
        reasons = [f"{names[k]} scored {probs[i, k]:.2f} (threshold {th[k]:.2f})"
                   for i, k in enumerate(which)]
        return scores, np.asarray([ids[k] for k in which]), reasons
    n = probs.shape[1]
    scores = -(probs * np.log(np.clip(probs, 1e-8, 1))).sum(1) / np.log(max(n, 2))
    order = np.argsort(probs, 1)[:, ::-1]
    reasons = [f"entropy {s:.2f}; between {names[o[0]]} ({p[o[0]]:.2f}) and "
               f"{names[o[1]] if n > 1 else names[o[0]]} ({p[o[1 if n > 1 else 0]]:.2f})"
               for s, o, p in zip(scores, order, probs)]
    return scores, np.asarray([ids[o[0]] for o in order]), reasons
