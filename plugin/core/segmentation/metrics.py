"""Per-class and mean segmentation metrics from a confusion matrix (torchmetrics accumulates it)."""

from __future__ import annotations

import numpy as np

IGNORE = 255


def confusion_metric(num_classes: int, device):
    """torchmetrics multiclass confusion matrix ignoring 255 (rows: truth, columns: prediction)."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=IGNORE,
                                     validate_args=False).to(device)


def metrics_from_confusion(cm: np.ndarray, class_ids: list[int]) -> dict:
    """accuracy, per-class precision/recall/f1/iou/support and their means over the classes with
    labelled pixels (``class_ids``: the channels that are classes)."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 0.0)
    total = cm.sum()
    per_class = {}
    for c in class_ids:
        per_class[int(c)] = {"precision": float(precision[c]), "recall": float(recall[c]),
                             "f1": float(f1[c]), "iou": float(iou[c]),
                             "support": int(cm[c].sum())}
    present = [c for c in class_ids if cm[c].sum() > 0]
    out = {"accuracy": float(tp.sum() / total) if total else 0.0, "per_class": per_class}
    for name, arr in (("precision", precision), ("recall", recall), ("f1", f1), ("iou", iou)):
        out[f"mean_{name}"] = float(np.mean([arr[c] for c in present])) if present else 0.0
    return out
