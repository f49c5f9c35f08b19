"""Detection metrics: COCO mAP (torchmetrics' MeanAveragePrecision) and precision, recall and F1
at the model's score threshold.

- ``map`` (mAP over IoU 0.50:0.05:0.95), ``map50``, ``map75``: COCO definitions (Lin et al. 2014,
  pycocotools), overall and per class (``ap_<id>``, ``ap50_<id>``).
- Precision / recall / F1 at score threshold ``t`` and IoU 0.5: detections scoring ``≥ t`` are
  matched greedily, best score first, to the unmatched true box of the same class with the
  highest IoU ``≥ 0.5`` (the PASCAL VOC rule); matched = true positive, unmatched detection =
  false positive, unmatched truth = false negative. Counts are summed over images and classes.
- Targets may carry ``iscrowd`` (COCO's ignore flag, 1 = ignored): such truths are neither found
  nor missed, and detections matching them (IoU ≥ 0.5) are not counted (pycocotools does the
  same for the mAP).
"""

from __future__ import annotations

MATCH_IOU = 0.5


class DetectionMetrics:
    """Accumulates predictions and targets (lists of dicts of tensors, per image)."""

    def __init__(self, class_ids: list[int], score_threshold: float) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.class_ids = list(class_ids)
        self.threshold = float(score_threshold)
        # the COCO default of at most 100 detections per patch (pycocotools' summary needs it)
        kw = {"box_format": "xyxy", "iou_type": "bbox", "class_metrics": True}
        self.map = MeanAveragePrecision(**kw)
        # AP50 per class and the precision-recall curve at IoU 0.5
        self.map50 = MeanAveragePrecision(iou_thresholds=[0.5], extended_summary=True, **kw)
        self._curve: dict[str, list[float]] = {}
        self.tp = {c: 0 for c in self.class_ids}
        self.fp = {c: 0 for c in self.class_ids}
        self.fn = {c: 0 for c in self.class_ids}

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        """``preds``: [{boxes (K, 4) xyxy px, scores (K,), labels (K,)}]; ``targets``:
        [{boxes (M, 4), labels (M,)}], one per image (moved to the CPU here)."""
        preds = [{k: v.detach().float().cpu() if k != "labels" else v.detach().cpu()
                  for k, v in p.items()} for p in preds]
        targets = [{k: v.detach().cpu() for k, v in t.items()} for t in targets]
        self.map.update(preds, targets)
        self.map50.update(preds, targets)
        for p, t in zip(preds, targets):
            for c in self.class_ids:
                tp, fp, fn = match_counts(p, t, c, self.threshold)
                self.tp[c] += tp
                self.fp[c] += fp
                self.fn[c] += fn

    def compute(self) -> dict:
        """Flat scalars: map, map50, map75, precision, recall, f1 and per class
        ``ap_<id>``, ``ap50_<id>``, ``precision_<id>``, ``recall_<id>``, ``f1_<id>``."""
        r = self.map.compute()
        out = {"map": _num(r["map"]), "map50": _num(r["map_50"]), "map75": _num(r["map_75"])}
        r50 = self.map50.compute()
        self._curve = _curves(r50)
        for key, res in (("ap", r), ("ap50", r50)):
            classes = [int(c) for c in res["classes"].reshape(-1).tolist()]
            values = res["map_per_class"].reshape(-1).tolist()
            for c in self.class_ids:
                out[f"{key}_{c}"] = _num(values[classes.index(c)]) if c in classes else 0.0
        tp, fp, fn = (sum(d.values()) for d in (self.tp, self.fp, self.fn))
        out.update(prf(tp, fp, fn))
        for c in self.class_ids:
            for k, v in prf(self.tp[c], self.fp[c], self.fn[c]).items():
                out[f"{k}_{c}"] = v
        return out


    def pr_curve(self) -> dict[str, list[float]]:
        """{class id: precision at recall 0, 0.01, … 1 (IoU 0.5; −1 where undefined)}, after
        :meth:`compute`."""
        return self._curve

    def counts(self) -> dict:
        """True positives, false positives and false negatives at the threshold, per class."""
        return {str(c): {"tp": self.tp[c], "fp": self.fp[c], "fn": self.fn[c]}
                for c in self.class_ids}


def _curves(result: dict) -> dict[str, list[float]]:
    prec = result.get("precision")
    if prec is None or getattr(prec, "ndim", 0) != 5:
        return {}
    classes = [int(c) for c in result["classes"].reshape(-1).tolist()]
    # (iou thresholds, recall points, classes, areas, max detections): all areas, most dets
    curve = prec[0, :, :, 0, -1]
    return {str(c): [round(float(v), 4) for v in curve[:, k]] for k, c in enumerate(classes)
            if k < curve.shape[1]}


def _num(v) -> float:
    x = float(v)
    return 0.0 if x < 0 else x     # torchmetrics returns −1 where there was nothing to measure


def prf(tp: int, fp: int, fn: int) -> dict:
    """precision, recall, F1 from counts (0 when undefined)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def match_counts(pred: dict, target: dict, class_id: int, threshold: float
                 ) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image and class at ``threshold`` (see the module rule)."""
    import torch
    from torchvision.ops import box_iou

    keep = (pred["labels"] == class_id) & (pred["scores"] >= threshold)
    pb, ps = pred["boxes"][keep], pred["scores"][keep]
    sel = target["labels"] == class_id
    if "iscrowd" in target:                    # ignored truths: neither TP nor FN
        crowd = target["iscrowd"].bool() & sel
        sel = sel & ~crowd
        if crowd.any() and len(pb):
            near = box_iou(pb, target["boxes"][crowd]).max(1).values >= MATCH_IOU
            pb, ps = pb[~near], ps[~near]
    tb = target["boxes"][sel]
    if len(pb) == 0 or len(tb) == 0:
        return 0, int(len(pb)), int(len(tb))
    iou = box_iou(pb[torch.argsort(ps, descending=True)], tb)
    used = torch.zeros(len(tb), dtype=torch.bool)
    tp = 0
    for row in iou:
        row = row.masked_fill(used, -1.0)
        j = int(row.argmax())
        if row[j] >= MATCH_IOU:
            used[j] = True
            tp += 1
    return tp, len(pb) - tp, len(tb) - tp
