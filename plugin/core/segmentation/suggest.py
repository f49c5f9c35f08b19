"""Pixel segmentation's part of Suggest Areas to Label (:mod:`..suggest_labels`): a window's
uncertainty is the mean pixel entropy of the class probabilities, divided by log(classes) so it
lies in [0, 1] (entropy sampling: Settles 2009, "Active Learning Literature Survey", §3.1),
over the :data:`TOP_SHARE` most uncertain of its valid pixels rather than over all of them: a
window whose model is sure of most pixels but confused on a boundary or a small patch of a rare
class is worth labelling, and a mean over the whole window dilutes that part into the easy
majority (measured in ``bench/active_learning.py``)."""

from __future__ import annotations

import numpy as np

#: Share of a window's valid pixels (its most uncertain ones) whose mean entropy is its score.
TOP_SHARE = 0.25


def window_size(card: dict) -> int:
    """The suggested square's side: the training patch size (px)."""
    return int(card["patch_size"])


def top_share_floor(values: np.ndarray, share: float = TOP_SHARE) -> float:
    """The k-th largest of ``values`` (1-D float array), k = ``share`` of its size rounded, at
    least 1: the values at or above it are the ``share`` largest (ties included). ``share`` 1
    gives the minimum (every value), a small share the maximum."""
    k = max(1, int(round(share * values.size)))
    return float(np.partition(values, values.size - k)[values.size - k])


def uncertainty(predictor, card: dict, batch: np.ndarray, valid: np.ndarray,
                device: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores float (N,) in [0, 1], most likely class id (N,) int, reasons) of ``batch``
    (N, bands, S, S) float32 raw pixels, ``valid`` (N, S, S) bool: the window's score is the
    mean normalised entropy of its valid pixels at or above :func:`top_share_floor`. The reason
    names the two classes the model hesitates between most (largest mean probabilities over
    those pixels)."""
    import torch

    probs = predictor(torch.from_numpy(batch).to(device)).float().cpu().numpy()  # N, C, S, S
    n_classes = probs.shape[1]
    entropy = -(probs * np.log(np.clip(probs, 1e-8, 1))).sum(1) / np.log(max(n_classes, 2))
    ids = [int(c["id"]) for c in card["classes"]]
    names = {int(c["id"]): c["name"] for c in card["classes"]}
    scores, classes, reasons = [], [], []
    for e, p, ok in zip(entropy, probs, valid):
        ok = ok if ok.any() else np.ones_like(ok)
        unsure = ok & (e >= top_share_floor(e[ok]))
        score = float(e[unsure].mean())
        mean = p[:, unsure].mean(1)
        top = np.argsort(mean)[::-1][:2]
        scores.append(score)
        classes.append(ids[top[0]] if top[0] < len(ids) else int(top[0]))
        a, b = (names.get(ids[t], str(t)) if t < len(ids) else str(t) for t in top)
        reasons.append(f"entropy {score:.2f} on its {TOP_SHARE:.0%} least sure pixels; "
                       f"between {a} and {b}")
    return np.asarray(scores), np.asarray(classes), reasons
