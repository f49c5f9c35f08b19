"""Pixel segmentation's part of Suggest Areas to Label (:mod:`..suggest_labels`): a window's
uncertainty is the mean entropy of the class probabilities over its valid pixels, divided by
log(classes) so it lies in [0, 1] (entropy sampling: Settles 2009, "Active Learning Literature
Survey", §3.1)."""

from __future__ import annotations

import numpy as np


def window_size(card: dict) -> int:
    """The suggested square's side: the training patch size (px)."""
    return int(card["patch_size"])


def uncertainty(predictor, card: dict, batch: np.ndarray, valid: np.ndarray,
                device: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores float (N,) in [0, 1], most likely class id (N,) int, reasons) of ``batch``
    (N, bands, S, S) float32 raw pixels, ``valid`` (N, S, S) bool. The reason names the two
    classes the model hesitates between most (largest mean probabilities)."""
    import torch

    probs = predictor(torch.from_numpy(batch).to(device)).float().cpu().numpy()  # N, C, S, S
    n_classes = probs.shape[1]
    entropy = -(probs * np.log(np.clip(probs, 1e-8, 1))).sum(1) / np.log(max(n_classes, 2))
    ids = [int(c["id"]) for c in card["classes"]]
    names = {int(c["id"]): c["name"] for c in card["classes"]}
    scores, classes, reasons = [], [], []
    for e, p, ok in zip(entropy, probs, valid):
        ok = ok if ok.any() else np.ones_like(ok)
        score = float(e[ok].mean())
        mean = p[:, ok].mean(1)
        top = np.argsort(mean)[::-1][:2]
        scores.append(score)
        classes.append(ids[top[0]] if top[0] < len(ids) else int(top[0]))
        a, b = (names.get(ids[t], str(t)) if t < len(ids) else str(t) for t in top)
        reasons.append(f"mean pixel entropy {score:.2f}; between {a} and {b}")
    return np.asarray(scores), np.asarray(classes), reasons
