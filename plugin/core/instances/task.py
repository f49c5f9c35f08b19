"""Instance segmentation as a :class:`~..training.task.TrainingTask`: the one training engine runs
it.

The family supplies: polygon instances and the sample plan (:mod:`.data`), torchvision's Mask
R-CNN (:mod:`.network`; its own loss terms in train mode: RPN objectness and box, RoI class, box
and mask), COCO mask and box mAP (:mod:`.metrics`), preview images (predicted masks in their
class colours) and the report section. Models are ranked by the validation mask mAP50 (the
losses of a two-stage detector do not rank models: He et al. 2017, COCO evaluation).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..training.task import TrainingTask

N_PREVIEW = 4
REPORT_PARTS = ("map", "map50", "map75")


class InstanceSegmentationTask(TrainingTask):
    name = "instance_segmentation"
    title = "Instance segmentation"
    best_metric = "val_mask_map50"
    best_mode = "max"
    curve_keys = ("val_mask_map50", "val_mask_map", "val_box_map50")
    curve_title = "Validation mask mAP50, mask mAP and box mAP50"
    length_knobs = "EPOCHS or STEPS_PER_EPOCH"

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self, job, ctx, log_folder: Path) -> None:
        from .data import prepare_instance_data

        self.job, self.ctx, self.log_folder = job, ctx, Path(log_folder)
        self.data = data = prepare_instance_data(job, ctx, self.log_folder)
        self.train_patches = data.plan.split("train")
        self.val_patches = data.plan.split("validation")
        names = {c["id"]: c["name"] for c in data.classes}
        ctx.log(f"Patches: {data.plan.summary()['patches']}; objects per class: " + "; ".join(
            f"{s} " + ", ".join(f"{names.get(k, k)} {n}"
                                for k, n in data.object_counts(s).items())
            for s in ("train", "validation")))
        self.describe_training_data(ctx, data.sources, self.train_patches)
        self.classes = [{"id": 0, "name": "background", "color": "#000000"}] + data.classes
        self.class_ids = [c["id"] for c in data.classes]
        self.num_outputs = max(self.class_ids) + 1
        self.architecture = job.architecture
        self.max_box_px = data.largest_object()

    def build_network(self, base_card: dict | None):
        from ..fpn import start_detector
        from .network import build_mask_rcnn, pretrained_state

        if base_card is not None:
            self.adopt_card(base_card)
            self.architecture = base_card["architecture"]
            if self.architecture != self.job.architecture:
                self.ctx.log(f"Using the {self.architecture} architecture of the model started "
                             "from.", "warning")
        net = build_mask_rcnn(self.architecture, self.bands, self.num_outputs,
                              self.job.patch_size, self.mean, self.std)
        self.apply_start_weights(base_card, lambda: start_detector(
            net, self.job.start_weights, self.name, lambda: pretrained_state(self.architecture)))
        return net

    def card_fields(self) -> dict:
        return {"architecture": self.architecture, "encoder": "",
                "patch_size": self.job.patch_size,
                "score_threshold": float(self.job.score_threshold),
                "nms_iou": float(self.job.nms_iou), "mask_threshold": 0.5,
                "max_box_px": float(self.max_box_px)}

    def steps_per_epoch(self, job) -> int:
        n = len(self.train_patches)
        n = min(n, job.max_patches) if job.max_patches else n
        return job.steps_per_epoch or max(1, math.ceil(n / job.batch_size))

    # -- data ----------------------------------------------------------------------------------
    def _loader(self, dataset, sampler, device: str):
        from torch.utils.data import DataLoader

        from ..training import runtime
        from .data import collate

        return DataLoader(dataset, batch_size=self.job.batch_size, sampler=sampler,
                          collate_fn=collate,
                          **runtime.loader_kwargs(self.job.num_workers, device))

    def train_loader(self, epoch: int, device: str):
        import torch

        from .data import InstanceDataset, MaskAugment

        job = self.job
        augment = MaskAugment(job.augment_rotation, job.augment_scale, job.augment_flip)
        ds = InstanceDataset(self.data.sources, self.data.objects,
                             self.data.epoch_patches(epoch), self.mean, augment, jitter=0.25,
                             seed=job.seed, drop_crowd=True)
        ds.epoch = epoch
        n = self.steps_per_epoch(job) * job.batch_size
        gen = torch.Generator().manual_seed(job.seed * 100003 + epoch)
        order = torch.randperm(len(ds), generator=gen)
        sampler = order.repeat(math.ceil(n / max(len(order), 1)))[:n].tolist()
        return self._loader(ds, sampler, device)

    def val_loader(self, device: str):
        from .data import InstanceDataset

        if not self.val_patches:
            return None
        ds = InstanceDataset(self.data.sources, self.data.objects, self.val_patches, self.mean)
        return self._loader(ds, list(range(len(ds))), device)

    def train_step(self, network, batch, device: str):
        images, targets = _to_device(batch, device)
        targets = [{k: v for k, v in t.items() if k != "iscrowd"} for t in targets]
        terms = network(images, targets)
        return sum(terms.values()), terms

    # -- metrics -------------------------------------------------------------------------------
    def validate(self, network, loader, device: str, epoch: int) -> dict:
        from .metrics import InstanceMetrics

        metric = InstanceMetrics(self.class_ids)
        previews = []
        for images, targets in loader:
            images, targets = _to_device((images, targets), device)
            preds = network(images)
            keep = [p["scores"] >= self.job.score_threshold for p in preds]
            metric.update(preds, targets)
            for img, p, k in zip(images, preds, keep):
                if len(previews) < N_PREVIEW:
                    previews.append(self._preview(img, p, k))
        m = metric.compute()
        row = {f"val_{k}": round(v, 4) for k, v in m.items()
               if k.startswith(("mask_map", "box_map"))}
        per_class = {}
        for cid in self.class_ids:
            per_class[str(cid)] = {f"{kind}_{part}": round(m[f"{kind}_{ap}_{cid}"], 4)
                                   for kind in ("mask", "box")
                                   for part, ap in zip(REPORT_PARTS, ("ap", "ap50", "ap75"))}
        row["_images"] = [(f"validation/patch_{i}", p) for i, p in enumerate(previews)]
        row["_extra"] = {"per_class": per_class}
        return row

    def _preview(self, image, pred, keep) -> np.ndarray:
        """HWC uint8: the patch stretched to RGB with the predicted masks at or above the
        score threshold in their class colours."""
        import torch
        from torchvision.utils import draw_segmentation_masks

        x = image.float().cpu().numpy()
        bands = x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0)
        lo, hi = np.percentile(bands, 2), np.percentile(bands, 98)
        rgb = torch.from_numpy((np.clip((bands - lo) / max(hi - lo, 1e-6), 0, 1) * 255
                                ).astype(np.uint8))
        masks = pred["masks"][keep][:, 0].cpu() >= 0.5
        if len(masks):
            colours = {c["id"]: c["color"] for c in self.classes}
            rgb = draw_segmentation_masks(rgb, masks, alpha=0.5, colors=[
                colours.get(int(k), "#ff0000") for k in pred["labels"][keep].cpu().tolist()])
        return rgb.permute(1, 2, 0).numpy()

    def report_section(self, best_row: dict, extra: dict | None) -> str:
        names = {c["id"]: c["name"] for c in self.classes}
        per_class = (extra or {}).get("per_class", {})
        lines = ["## Instance segmentation (best epoch, validation patches)", "",
                 "COCO mAP (IoU 0.50:0.95), mAP50 and mAP75 of the masks and of the boxes.", "",
                 "| Class | mask mAP | mask mAP50 | mask mAP75 | box mAP | box mAP50 | "
                 "box mAP75 |", "|---|---|---|---|---|---|---|"]
        keys = [f"{kind}_{part}" for kind in ("mask", "box") for part in REPORT_PARTS]
        for cid in self.class_ids:
            vals = per_class.get(str(cid), {})
            lines.append(f"| {names[cid]} | " + " | ".join(
                f"{vals[k]:.3f}" if k in vals else "–" for k in keys) + " |")
        if best_row:
            lines.append("| **all** | " + " | ".join(
                f"{best_row.get('val_' + k, 0):.3f}" for k in keys) + " |")
        return "\n".join(lines) + "\n"


def _to_device(batch, device: str):
    images, targets = batch
    images = [i.to(device, non_blocking=True) for i in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets
