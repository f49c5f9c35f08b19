"""Class balance of the grid model and the chip classifier (CLASS_BALANCE): sampling weights
∝ 1 / class frequency, and loss weights.

Sampling (as GBDX's balanced round 1): a sample's weight is the mean of ``1 / n_k`` over its
classes ``k`` (single-label: its class; multi-label: its tags, a sample without any tag counting
as one more class "none"), normalised to sum 1, so every class is drawn about equally often.
"""

from __future__ import annotations

import numpy as np

MAX_POS_WEIGHT = 50.0    # multi-label positive weight cap (a class in 1 of 50 samples)


def inverse_frequency_weights(keys: list[list]) -> np.ndarray:
    """(N,) float64 sampling probabilities of N samples with the classes ``keys[i]`` (any
    hashable labels; an empty list is the class "none"), summing to 1."""
    keys = [list(k) or ["<none>"] for k in keys]
    counts: dict = {}
    for ks in keys:
        for k in ks:
            counts[k] = counts.get(k, 0) + 1
    w = np.array([np.mean([1.0 / counts[k] for k in ks]) for ks in keys], np.float64)
    return w / w.sum() if len(w) else w


def multi_hot_keys(targets: np.ndarray) -> list[list[int]]:
    """The classes (column indices) of each row of an (N, C) multi-hot array."""
    return [np.flatnonzero(np.asarray(row) > 0.5).tolist() for row in targets]


def balance_weights(targets: np.ndarray, n_classes: int, multi_label: bool) -> np.ndarray:
    """Loss weights of CLASS_BALANCE "weights" from the training targets ((N,) int class index
    or (N, C) multi-hot): single-label (C,) float32 ``N / (C · n_c)`` (the "balanced" weights of
    King & Zeng 2001 and scikit-learn; a class without samples gets ``N / C``); multi-label (C,)
    float32 positive weights ``negatives / positives`` (torch's ``pos_weight``), clipped to
    [1 / :data:`MAX_POS_WEIGHT`, :data:`MAX_POS_WEIGHT`] (1 for a class without positives)."""
    t = np.asarray(targets)
    if multi_label:
        pos = t.reshape(len(t), n_classes).sum(0).astype(np.float64)
        w = np.where(pos > 0, (len(t) - pos) / np.maximum(pos, 1), 1.0)
        return np.clip(w, 1.0 / MAX_POS_WEIGHT, MAX_POS_WEIGHT).astype(np.float32)
    counts = np.bincount(t.astype(np.int64), minlength=n_classes).astype(np.float64)
    return (len(t) / (n_classes * np.maximum(counts, 1))).astype(np.float32)
