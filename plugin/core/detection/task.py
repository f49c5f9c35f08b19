"""Object detection as a :class:`~..training.task.TrainingTask`: the one training engine runs it.

The family supplies: boxes and the sample plan (:mod:`.data`; every epoch draws new random
training windows, up to half holding a whole object, away from the validation patches; the
length in optimiser steps is automatic as for every family: ``training.length``), the
torchvision detector (ARCHITECTURE ``auto``: FCOS/ResNet-18 on a CPU, RetinaNet/ResNet-50 on a
GPU, resolved here; START_WEIGHTS random, COCO or a local file: :mod:`.network`), its own
loss terms (the detector returns them in train mode: classification and box regression, plus
centerness for FCOS and RPN terms for Faster R-CNN), COCO mAP and P/R/F1
(:mod:`.metrics`), preview images with true (green) and predicted (class colour) boxes and the
report section with a precision-recall plot. Models are ranked by validation mAP50 (detection
losses do not rank models: Lin et al. 2017, COCO evaluation).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..training import runtime
from ..training.length import training_length
from ..training.task import TrainingTask
from .modelfile import AUTO, resolve_architecture

N_PREVIEW = 4
#: Fewest whole validation objects (inside a validation patch, clear of its edge: those the
#: mAP50 counts, :func:`patch_edge_rule`) for validation to rank epochs. One object found or
#: lost moves mAP50 by about 1/n: below 25 (4 %) that exceeds the differences between the
#: later epochs, and the best epoch is chosen by noise. OSBS_029 (bench/detection_real.py, 3
#: whole validation trees, seed 0): validation mAP50 swung between 0.24 and 0.55 over the last
#: ten epochs of a run whose last model scored mAP50 0.53 on the right half. The last epoch is
#: then kept: the moving average of the weights at the end of the cosine schedule, the point
#: the schedule is made for.
MIN_RANKING_OBJECTS = 25


def class_key(name: str) -> str:
    """A column-safe class name: 'Tree crown' → 'tree_crown'."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "class"


class ObjectDetectionTask(TrainingTask):
    name = "object_detection"
    title = "Object detection"
    best_metric = "val_map50"
    best_mode = "max"
    curve_keys = ("val_map50", "val_map", "val_f1")
    curve_title = "Validation mAP50, mAP and F1"
    length_knobs = "EPOCHS or STEPS_PER_EPOCH"

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self, job, ctx, log_folder: Path) -> None:

        from .data import TrainingArea, prepare_detection_data

        self.job, self.ctx, self.log_folder = job, ctx, Path(log_folder)
        self.data = data = prepare_detection_data(job, ctx, self.log_folder)
        self.patch_size = data.patch_size
        self.train_patches = data.plan.split("train")
        area = TrainingArea.of(data)
        self.val_patches, self.hidden = area.val_patches, area.hidden
        self.val_areas = area.val_areas     # scored: the planned patches' in-raster pixels
        counts = {s: data.box_counts(s) for s in ("train", "validation")}
        names = {c["id"]: c["name"] for c in data.classes}
        ctx.log(f"Patches: {data.plan.summary()['patches']}; boxes per class: "
                + "; ".join(f"{s} " + ", ".join(f"{names.get(k, k)} {n}" for k, n in c.items())
                            for s, c in counts.items()))
        self.describe_training_data(ctx, data.sources, self.train_patches)
        self.classes = [{"id": 0, "name": "background", "color": "#000000"}] + data.classes
        self.class_ids = [c["id"] for c in data.classes]
        self.keys = {c["id"]: class_key(c["name"]) for c in data.classes}
        self.num_outputs = max(self.class_ids) + 1
        self.architecture = resolve_architecture(job.architecture,
                                                 runtime.resolve_device(job.device))
        if job.architecture == AUTO:
            ctx.log(f"Architecture {self.architecture} (automatic on this device).")
        self.max_box_px = data.largest_box()
        # random windows per epoch; validation patches on training rasters hidden from them
        self.windows = area.sampler(data)
        self.per_epoch = training_length(job, area.open_px(),
                                         self.patch_size)[0]   # the engine shows the length
        ctx.log(f"Training windows: {self.windows.centred:.0%} centred on one of "
                f"{len(self.windows.objects)} objects, the rest anywhere in the training area.")

    def unranked_reason(self) -> str:
        n = whole_objects(self.data.boxes, self.val_patches, self.val_areas)
        if n >= MIN_RANKING_OBJECTS:
            return ""
        return (f"The validation patches hold {n} whole object(s), fewer than the "
                f"{MIN_RANKING_OBJECTS} that rank epochs reliably by mAP50.")

    def build_network(self, base_card: dict | None):
        from ..fpn import start_detector
        from .network import build_detector, pretrained_state

        if base_card is not None:
            self.adopt_card(base_card)
            wanted = self.architecture
            self.architecture = base_card["architecture"]
            if self.architecture != wanted and self.job.architecture != AUTO:
                self.ctx.log(f"Using the {self.architecture} architecture of the model started "
                             "from.", "warning")
        net = build_detector(self.architecture, self.bands, self.num_outputs,
                             self.patch_size, self.mean, self.std)
        self.apply_start_weights(base_card, lambda: start_detector(
            net, self.job.start_weights, self.name, lambda: pretrained_state(self.architecture)))
        return net

    def card_fields(self) -> dict:
        return {"architecture": self.architecture, "encoder": "",
                "patch_size": self.patch_size,
                "score_threshold": float(self.job.score_threshold),
                "nms_iou": float(self.job.nms_iou), "max_box_px": float(self.max_box_px)}

    def steps_per_epoch(self, job) -> int:
        return self.per_epoch

    # -- data ----------------------------------------------------------------------------------
    def _loader(self, dataset, sampler, device: str):
        from torch.utils.data import DataLoader

        from ..training import runtime
        from .data import collate

        return DataLoader(dataset, batch_size=self.job.batch_size, sampler=sampler,
                          collate_fn=collate,
                          **runtime.loader_kwargs(self.job.num_workers, device))

    def train_loader(self, epoch: int, device: str):
        from .data import CUT_BLANK, CUT_IGNORE, BoxAugment, BoxDataset
        from .network import IGNORING

        job = self.job
        rng = np.random.default_rng([job.seed, epoch, 23])
        windows = self.windows.draw(self.steps_per_epoch(job) * job.batch_size, rng)
        augment = BoxAugment(job.augment_rotation, job.augment_scale, job.augment_flip)
        cut = CUT_IGNORE if self.architecture in IGNORING else CUT_BLANK
        ds = BoxDataset(self.data.sources, self.data.boxes, windows, self.mean, augment,
                        seed=job.seed, hidden=self.hidden, cut=cut)
        ds.epoch = epoch
        return self._loader(ds, list(range(len(ds))), device)

    def val_loader(self, device: str):
        from .data import BoxDataset

        if not self.val_patches:
            return None
        ds = BoxDataset(self.data.sources, self.data.boxes, self.val_patches, self.mean,
                        label_areas=self.val_areas)
        return self._loader(ds, list(range(len(ds))), device)

    def train_step(self, network, batch, device: str):
        images, targets = _to_device(batch, device)
        terms = network(images, targets)
        return sum(terms.values()), terms

    # -- metrics -------------------------------------------------------------------------------
    def validate(self, network, loader, device: str, epoch: int) -> dict:
        from .metrics import DetectionMetrics

        metric = DetectionMetrics(self.class_ids, self.job.score_threshold)
        previews = []
        for images, targets in loader:
            images, targets = _to_device((images, targets), device)
            preds = network(images)
            metric.update(*patch_edge_rule(images, preds, targets))
            for img, t, p in zip(images, targets, preds):
                if len(previews) < N_PREVIEW:
                    previews.append(self._preview(img, t, p))
        m = metric.compute()
        row = {"val_map": m["map"], "val_map50": m["map50"], "val_map75": m["map75"],
               "val_precision": m["precision"], "val_recall": m["recall"], "val_f1": m["f1"]}
        for cid in self.class_ids:
            key = self.keys[cid]
            for part in ("ap", "ap50", "precision", "recall", "f1"):
                row[f"{part}_{key}"] = m[f"{part}_{cid}"]
        row["_images"] = [(f"validation/patch_{i}", p) for i, p in enumerate(previews)]
        row["_extra"] = {"pr_curve": metric.pr_curve(), "per_class": {
            str(cid): {part: m[f"{part}_{cid}"]
                       for part in ("ap", "ap50", "precision", "recall", "f1")}
            for cid in self.class_ids}, "counts": metric.counts()}
        return row

    def _preview(self, image, target, pred) -> np.ndarray:
        """HWC uint8: the patch stretched to RGB, true boxes green, predictions at or above the
        score threshold in their class colour."""
        import torch
        from torchvision.utils import draw_bounding_boxes

        x = image.float().cpu().numpy()
        bands = x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0)
        lo, hi = np.percentile(bands, 2), np.percentile(bands, 98)
        rgb = torch.from_numpy((np.clip((bands - lo) / max(hi - lo, 1e-6), 0, 1) * 255
                                ).astype(np.uint8))
        colours = {c["id"]: c["color"] for c in self.classes}
        rgb = draw_bounding_boxes(rgb, target["boxes"].float().cpu(), colors="#00ff00", width=1)
        keep = pred["scores"] >= self.job.score_threshold
        labels = pred["labels"][keep].cpu().tolist()
        if labels:
            rgb = draw_bounding_boxes(rgb, pred["boxes"][keep].float().cpu(),
                                      colors=[colours.get(int(k), "#ff0000") for k in labels],
                                      width=2)
        return rgb.permute(1, 2, 0).numpy()

    def summary_metrics(self, row: dict, extra: dict | None) -> dict:
        return {k: v for k, v in row.items() if isinstance(v, (int, float))}

    def report_section(self, best_row: dict, extra: dict | None) -> str:
        names = {c["id"]: c["name"] for c in self.classes}
        lines = ["## Detection (best epoch, validation patches)", "",
                 f"Score threshold {self.job.score_threshold:g}, NMS IoU {self.job.nms_iou:g}; "
                 "P/R/F1 at the threshold, IoU ≥ 0.5.", "",
                 "| Class | AP | AP50 | Precision | Recall | F1 |", "|---|---|---|---|---|---|"]
        for cid in self.class_ids:
            k = self.keys[cid]
            vals = [best_row.get(f"{p}_{k}") for p in ("ap", "ap50", "precision", "recall", "f1")]
            lines.append(f"| {names[cid]} | " + " | ".join(
                "–" if v is None else f"{v:.3f}" for v in vals) + " |")
        if best_row:
            lines.append(f"| **all** | {best_row.get('val_map', 0):.3f} | "
                         f"{best_row.get('val_map50', 0):.3f} | "
                         f"{best_row.get('val_precision', 0):.3f} | "
                         f"{best_row.get('val_recall', 0):.3f} | {best_row.get('val_f1', 0):.3f} |")
        plot = _pr_plot(self.log_folder, (extra or {}).get("pr_curve"), names)
        if plot:
            lines += ["", f"![Precision-recall at IoU 0.5]({plot.name})"]
        return "\n".join(lines) + "\n"


def patch_edge_rule(images, preds: list[dict], targets: list[dict]):
    """Validation as Detect Objects sees objects: a prediction touching the patch edge (within
    EDGE_PX) is dropped — Detect Objects leaves those to the neighbouring tile — and a true box
    within the same EDGE_PX of the patch edge (cut by it, or so close that a good box of it
    would be dropped) is marked ``iscrowd`` (COCO's ignore flag: matching it neither counts nor
    costs). With a smaller margin for truths than for predictions, a whole object 1 px from the
    edge counted as missed however well it was found. The predictions of one object boxed
    twice are merged as Detect Objects merges them (:func:`.predict.merge_boxed_twice`).

    A target's ``"scored"`` (4,) xyxy patch pixels (a validation patch moved flush with its
    raster's edge: its planned area, :class:`.data.BoxDataset`) takes the place of the patch
    edge: predictions touching or outside it are dropped, truths cut by it, near it or outside
    it are ignored (the rest of the window belongs to training); the key is not passed on."""
    import torch

    from .predict import EDGE_PX, merge_boxed_twice

    out_p, out_t = [], []
    for img, p, t in zip(images, preds, targets):
        h, w = img.shape[-2:]
        t = dict(t)
        scored = t.pop("scored", None)
        area = (0.0, 0.0, float(w), float(h)) if scored is None else tuple(scored.tolist())
        keep = ~_touches_edge(p["boxes"], area, EDGE_PX)
        p = {k: v[keep] for k, v in p.items()}
        once = merge_boxed_twice(p["boxes"].detach().float().cpu().numpy(),
                                 p["scores"].detach().float().cpu().numpy(),
                                 p["labels"].detach().cpu().numpy())
        once = torch.as_tensor(once, dtype=torch.int64, device=p["boxes"].device)
        out_p.append({k: v[once] for k, v in p.items()})
        out_t.append({**t, "iscrowd": _touches_edge(t["boxes"], area, EDGE_PX).to(int)})
    return out_p, out_t


def whole_objects(boxes: list, patches: list, areas: list | None = None) -> int:
    """How many boxes (``boxes``: per source, raster pixels) lie inside one of ``patches``
    clear of its edge by more than EDGE_PX: the truths validation counts (a box in two
    patches counts twice). ``areas``: per patch the (row0, col0, row1, col1) raster pixels
    scored (its planned area, :class:`.data.TrainingArea`), whose edge then counts instead."""
    from .predict import EDGE_PX

    n = 0
    for i, p in enumerate(patches):
        r0, c0, r1, c1 = (areas[i] if areas is not None
                          else (p.row, p.col, p.row + p.size, p.col + p.size))
        for b in boxes[p.source]:
            n += bool(b.x0 - c0 > EDGE_PX and b.y0 - r0 > EDGE_PX
                      and b.x1 < c1 - EDGE_PX and b.y1 < r1 - EDGE_PX)
    return n


def _touches_edge(boxes, area: tuple[float, float, float, float], margin: float):
    """Whether each of ``boxes`` (K, 4) xyxy lies within ``margin`` px of the edge of ``area``
    (x0, y0, x1, y1, same pixels) or past it."""
    x0, y0, x1, y1 = area
    return ((boxes[:, 0] <= x0 + margin) | (boxes[:, 1] <= y0 + margin)
            | (boxes[:, 2] >= x1 - margin) | (boxes[:, 3] >= y1 - margin))


def _to_device(batch, device: str):
    images, targets = batch
    images = [i.to(device, non_blocking=True) for i in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def _pr_plot(folder: Path, curves: dict | None, names: dict) -> Path | None:
    """precision_recall.png from {class id: [precision at recall 0, 0.01, … 1]} (None if no
    data or no matplotlib)."""
    if not curves:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for cid, prec in curves.items():
        recall = np.linspace(0, 1, len(prec))
        p = np.asarray(prec, float)
        ok = p >= 0
        ax.plot(recall[ok], p[ok], label=names.get(int(cid), str(cid)))
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall at IoU 0.5 (best epoch)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    out = folder / "precision_recall.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
