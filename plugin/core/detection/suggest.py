"""Object detection's part of Suggest Areas to Label (:mod:`..suggest_labels`): a window is
uncertain where the detector finds boxes with scores near its decision threshold (the card's
``score_threshold``, what Detect Objects keeps by default): each box weighs
``1 − |s − t| / max(t, 1 − t)`` (1 at the threshold) and the window's score is
``1 − exp(−Σ weights)`` in [0, 1), so several borderline boxes count more than one (least
confidence per detection, aggregated by sum as in Brust et al. 2019, "Active Learning for Deep
Object Detection")."""

from __future__ import annotations

import numpy as np

#: Boxes scored below this share of the threshold are not counted (they are background).
FLOOR = 0.25


def window_size(card: dict) -> int:
    """The suggested square's side: the training patch size (px)."""
    return int(card["patch_size"])


def uncertainty(predictor, card: dict, batch: np.ndarray, valid: np.ndarray,
                device: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores float (N,) in [0, 1), class id of the most borderline box (N,) int (0 when
    none), reasons) of ``batch`` (N, bands, S, S) float32 raw pixels (the detector normalises
    them itself)."""
    import torch

    thr = float(card.get("score_threshold") or 0.5)
    names = {int(c["id"]): c["name"] for c in card["classes"]}
    outputs = predictor(list(torch.from_numpy(batch).to(device)))
    scores, classes, reasons = [], [], []
    for out in outputs:
        s = out["scores"].float().cpu().numpy()
        labels = out["labels"].cpu().numpy()
        keep = s >= FLOOR * thr
        s, labels = s[keep], labels[keep]
        weight = np.clip(1 - np.abs(s - thr) / max(thr, 1 - thr), 0, 1)
        total = float(weight.sum())
        scores.append(1 - np.exp(-total))
        if len(s):
            k = int(weight.argmax())
            classes.append(int(labels[k]))
            near = int((weight > 0.5).sum())
            reasons.append(f"{near} box(es) scored near the threshold {thr:.2f} (closest: "
                           f"{names.get(int(labels[k]), labels[k])} {s[k]:.2f})")
        else:
            classes.append(0)
            reasons.append("no box near the threshold")
    return np.asarray(scores), np.asarray(classes), reasons
