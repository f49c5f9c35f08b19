"""Instance segmentation metrics: COCO mask and box mAP (torchmetrics' MeanAveragePrecision with
``iou_type=("bbox", "segm")``, pycocotools' definitions: Lin et al. 2014) and the F1 of polygon
outputs at IoU 0.5.

- ``segm_map`` (mask mAP over IoU 0.50:0.05:0.95), ``segm_map50``, ``segm_map75`` and the same
  for boxes (``bbox_*``), overall and per class. Truths flagged ``iscrowd`` are ignored (COCO).
- :func:`polygon_f1`: predictions matched greedily, best score first, to the unmatched truth
  of the same class with the highest IoU ≥ 0.5 (the PASCAL VOC rule, on polygon areas).
"""

from __future__ import annotations

MATCH_IOU = 0.5
PARTS = ("map", "map50", "map75")


class InstanceMetrics:
    """Accumulates Mask R-CNN predictions and targets (lists of dicts of tensors, per image)."""

    def __init__(self, class_ids: list[int], mask_threshold: float = 0.5) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.class_ids = list(class_ids)
        self.mask_threshold = float(mask_threshold)
        self.metric = MeanAveragePrecision(iou_type=("bbox", "segm"), class_metrics=True,
                                           box_format="xyxy", extended_summary=True)

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        """``preds``: [{boxes (K, 4), scores (K,), labels (K,), masks (K, 1, H, W)
        probabilities}]; ``targets``: [{boxes, labels, masks (M, H, W) uint8, iscrowd}]."""
        p = [{"boxes": d["boxes"].detach().float().cpu(), "scores": d["scores"].detach()
              .float().cpu(), "labels": d["labels"].detach().cpu(),
              "masks": (d["masks"].detach()[:, 0] >= self.mask_threshold).cpu()}
             for d in preds]
        t = [{"boxes": d["boxes"].detach().float().cpu(), "labels": d["labels"].detach().cpu(),
              "masks": d["masks"].detach().bool().cpu(),
              "iscrowd": d.get("iscrowd", d["labels"] * 0).detach().cpu()} for d in targets]
        self.metric.update(p, t)

    def compute(self) -> dict:
        """Flat scalars: ``mask_map``, ``mask_map50``, ``mask_map75``, ``box_map``, ``box_map50``,
        ``box_map75`` and per class ``mask_ap_<id>``, ``mask_ap50_<id>``, ``mask_ap75_<id>``,
        ``box_ap_<id>`` … (0 where there was nothing to measure)."""
        r = self.metric.compute()
        out = {}
        for kind, prefix in (("segm", "mask"), ("bbox", "box")):
            for part, key in zip(PARTS, ("map", "map_50", "map_75")):
                out[f"{prefix}_{part}"] = _num(r[f"{kind}_{key}"])
            out.update(self._per_class(r, kind, prefix))
        return out

    def _per_class(self, r: dict, kind: str, prefix: str) -> dict:
        classes = [int(c) for c in r["classes"].reshape(-1).tolist()]
        out = {}
        per = r[f"{kind}_map_per_class"].reshape(-1).tolist()
        for c in self.class_ids:
            out[f"{prefix}_ap_{c}"] = _num(per[classes.index(c)]) if c in classes else 0.0
        # AP50 / AP75 per class: the precision array at those IoUs (COCO's summary way)
        prec = r.get(f"{kind}_precision")
        for part, iou_index in (("ap50", 0), ("ap75", 5)):
            for c in self.class_ids:
                out[f"{prefix}_{part}_{c}"] = _ap_at(prec, iou_index, classes, c)
        return out


def _ap_at(prec, iou_index: int, classes: list[int], c: int) -> float:
    """Mean precision over the 101 recall points at IoU index ``iou_index`` for class ``c``
    (all areas, most detections), from the extended summary; 0 without it."""
    if prec is None or getattr(prec, "ndim", 0) != 5 or c not in classes:
        return 0.0
    p = prec[iou_index, :, classes.index(c), 0, -1]
    p = p[p > -1]
    return float(p.mean()) if len(p) else 0.0


def _num(v) -> float:
    x = float(v)
    return 0.0 if x < 0 else x     # torchmetrics returns −1 where there was nothing to measure


def polygon_f1(preds: list[tuple[int, float, object]], truths: list[tuple[int, object]],
               iou: float = MATCH_IOU) -> dict:
    """Precision, recall, F1 and counts of predicted polygons ``(class id, score, shapely
    geometry)`` against true ones ``(class id, geometry)`` in the same coordinates (see the
    module rule)."""
    import shapely

    tree = shapely.STRtree([g for _, g in truths]) if truths else None
    used = set()
    tp = 0
    for cid, _score, g in sorted(preds, key=lambda p: -p[1]):
        best, best_iou = None, iou
        for j in (tree.query(g) if tree is not None else []):
            j = int(j)
            tc, tg = truths[j]
            if j in used or tc != cid:
                continue
            inter = g.intersection(tg).area
            v = inter / max(g.area + tg.area - inter, 1e-12)
            if v >= best_iou:
                best, best_iou = j, v
        if best is not None:
            used.add(best)
            tp += 1
    fp, fn = len(preds) - tp, len(truths) - tp
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn}
