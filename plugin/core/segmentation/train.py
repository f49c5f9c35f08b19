"""The pixel segmentation training engine (worker process or CLI; never inside QGIS).

Flow: label rasters from the labeling project (with per-job solid distance overrides) → sample
plan → band statistics → smp network → epochs of (rare-class weighted sampling, augmentation,
AdamW + warm-up/cosine schedule, validation) → best and last models written atomically after each
epoch → report. Resume: a last model carries the epoch, step, best loss and history in its card and
the optimizer state beside it (``<last>.optim.safetensors``); without that file the optimizer
starts fresh and the learning-rate schedule continues from the stored step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext
from ..validpixels import data_band_count
from . import modelfile, report
from .data import (
    Augment,
    PatchDataset,
    band_statistics,
    class_weight_at,
    rarity_scores,
    sampling_probabilities,
)
from .metrics import IGNORE, confusion_metric, metrics_from_confusion

N_PREVIEW = 4


@dataclass
class TrainSetup:
    """What the engine trains on (after the label rasters and the plan are made)."""

    sources: list
    plan: object
    classes: list[dict]                  # [{id, name, color}] incl. 0 background
    blur: dict[int, float]
    config: object
    pool: list = field(default_factory=list)  # every train candidate, when subsampling is on

    def epoch_patches(self, epoch: int) -> list:
        """Training patches of ``epoch``: the plan's for epoch 0; later epochs draw the feature
        and background patches again from the pool with the sampler's counting rule."""
        if epoch == 0 or not self.pool:
            return self.plan.split("train")
        from ..sampling import round_half_up

        rng = np.random.default_rng([self.config.seed, epoch, 11])
        feat = [p for p in self.pool if p.has_features]
        back = [p for p in self.pool if not p.has_features]
        n_f = min(len(feat), round_half_up(len(feat) * self.config.feature_patch_percentage))
        n_b = min(len(back), round_half_up(n_f * self.config.background_patch_ratio))
        return ([feat[i] for i in sorted(rng.permutation(len(feat))[:n_f])]
                + [back[i] for i in sorted(rng.permutation(len(back))[:n_b])])

    @property
    def num_outputs(self) -> int:
        return max(c["id"] for c in self.classes) + 1


# -- preparation --------------------------------------------------------------------------------
def _per_class(value, classes: list, name: str) -> dict[int, float]:
    """SOLID/BLUR override: {id: px} or a list (one per class, by id) → {id: px}."""
    from ..perclass import parse_per_class

    value = parse_per_class(value, name)
    if not value:
        return {}
    ids = [c.id for c in sorted(classes, key=lambda c: c.id)]
    if isinstance(value, dict):
        out = {int(k): float(v) for k, v in value.items()}
    else:
        if len(value) not in (1, len(ids)):
            raise UserError(f"{name} lists {len(value)} values for {len(ids)} classes.",
                            "Give one value per class (by class id) or a single value for all.")
        vals = list(value) * (len(ids) if len(value) == 1 else 1)
        out = dict(zip(ids, map(float, vals)))
    unknown = sorted(set(out) - set(ids))
    if unknown:
        raise UserError(f"{name} names class id(s) {unknown} that the project does not have.",
                        f"Use the class ids {ids}.")
    return out


def prepare(job, ctx: JobContext, log_folder: Path) -> TrainSetup:
    """Label rasters, sample plan and class table of ``job``."""
    from ..labeling.project import LabelingProject
    from ..sampling import SamplingConfig, plan_patches, sources_from_project

    if Path(job.project).is_dir():  # an exported segmentation chips folder
        from ..labeling.project import LabelClass
        from ..sampling.sources import read_manifest, sources_from_chips_folder

        sources = sources_from_chips_folder(job.project)
        pclasses = [LabelClass(c["id"], c["name"], c.get("color") or "#808080")
                    for c in read_manifest(job.project).get("classes", []) if c["id"] > 0]
        if job.solid_distances:
            ctx.log("Solid distances do not apply to a chips folder: its masks are already "
                    "burned.", "warning")
        blur = _per_class(job.blur_distances, pclasses, "BLUR_DISTANCES")
    else:
        project = LabelingProject.open(job.project)
        pclasses = sorted(project.classes(), key=lambda c: c.id)
        if not pclasses:
            raise UserError("The labeling project has no classes.",
                            "Add classes and draw labels with the Labeling Tool.")
        solid = _per_class(job.solid_distances, pclasses, "SOLID_DISTANCES")
        blur = {c.id: c.blur_distance for c in pclasses}
        blur.update(_per_class(job.blur_distances, pclasses, "BLUR_DISTANCES"))
        project_path = job.project
        changed = {cid: v for cid, v in solid.items()
                   if abs(v - next(c.solid_distance for c in pclasses if c.id == cid)) > 1e-9}
        if changed:  # burn with the job's solid distances: a private copy of the project
            project_path = str(log_folder / "project_solid_override.gpkg")
            shutil.copyfile(job.project, project_path)
            copy = LabelingProject.open(project_path)
            for cid, v in changed.items():
                copy.update_class(cid, solid_distance=v)
            ctx.log(f"Solid distances for this run: {changed} (the project is unchanged).")
        ctx.progress("prepare", 0, 3, "Building label rasters")
        sources = sources_from_project(project_path, str(log_folder / "label_rasters"), ctx)
    if not pclasses:
        raise UserError("The training data has no classes.",
                        "Add classes and draw labels with the Labeling Tool.")
    config = SamplingConfig(patch_size=job.patch_size, split=job.split, shuffle=job.shuffle,
                            seed=job.seed, feature_patch_percentage=job.feature_patch_percentage,
                            background_patch_ratio=job.background_patch_ratio)
    ctx.progress("prepare", 1, 3, "Planning patches")
    names = {c.id: c.name for c in pclasses}
    plan = plan_patches(sources, config, class_names=names, cancelled=lambda: ctx.cancelled)
    ctx.check_cancelled()
    for w in plan.warnings:
        ctx.log(w, "warning")
    if not plan.split("train"):
        raise UserError("The sample plan has no training patches.",
                        "Draw more labels, lower the patch size or raise the split.")
    dropped = plan.stats.get("dropped", {})
    pool = []
    if dropped.get("feature_subsample") or dropped.get("background_subsample"):
        # one more scan now instead of one per epoch: every candidate, same split
        everything = dataclasses.replace(config, feature_patch_percentage=1.0,
                                         background_patch_ratio=1e9)
        pool = plan_patches(sources, everything, cancelled=lambda: ctx.cancelled).split("train")
    classes = [{"id": 0, "name": "background", "color": "#000000"}]
    classes += [{"id": c.id, "name": c.name, "color": c.color} for c in pclasses]
    return TrainSetup(sources, plan, classes, {k: v for k, v in blur.items() if v > 0}, config,
                      pool)


def _loss_weights(patches, num_outputs: int, loss_weight: float) -> np.ndarray:
    """Cross-entropy class weights: background 1, feature classes ``(bg/feat) ** loss_weight``
    (pixel shares in the training patches, capped to 1–50): 0 = equal, 1 = balanced."""
    bg = sum(p.class_pixels.get(0, 0) for p in patches)
    feat = sum(n for p in patches for c, n in p.class_pixels.items() if c)
    w = np.ones(num_outputs, np.float32)
    if loss_weight > 0 and feat > 0 and bg > 0:
        w[1:] = float(np.clip((bg / feat) ** loss_weight, 1.0, 50.0))
    return w


# -- runtime helpers ----------------------------------------------------------------------------
def _device(job) -> str:
    from ..environment import resolve_device

    return resolve_device(job.device)


def _num_workers(job, device: str) -> int:
    if job.num_workers >= 0:
        return job.num_workers
    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(0, min(8, cpus - 1))
    return 0 if cpus <= 2 else min(2, cpus // 4)


def _autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _schedule(total_steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(total_steps - warmup, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


def _soft_ce(logits, soft, weights):
    """Cross-entropy against a target distribution; all-zero targets (ignored) drop out."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=1)
    w = weights.view(1, -1, 1, 1)
    per_px = -(soft * w * logp).sum(1)
    norm = (soft * w).sum(1)
    return per_px.sum() / norm.sum().clamp_min(1e-6)


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


# -- the engine ---------------------------------------------------------------------------------
def train_step(network, optimizer, ce, loss_w, img, mask, soft, device: str, scaler=None):
    """One optimisation step on a batch (moved to ``device``); returns (loss, logits, mask).
    ``scaler``: a GradScaler for fp16 autocast (GPUs without bf16)."""
    import torch

    img = img.to(device, non_blocking=True)
    if device.startswith("cuda"):
        img = img.contiguous(memory_format=torch.channels_last)
    mask = mask.to(device, non_blocking=True).long()
    with _autocast(device):
        logits = network(img)
    if soft.numel():
        loss = _soft_ce(logits, soft.to(device, non_blocking=True), loss_w)
    else:
        loss = ce(logits.float(), mask)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, logits, mask


def train_pixel_segmentation(job, ctx: JobContext) -> dict:
    """Run ``job`` (a TrainPixelSegmentationJob); return outputs and final metrics."""
    import torch

    try:
        return _train(job, ctx)
    except torch.OutOfMemoryError:
        raise UserError(f"The GPU ran out of memory with patch size {job.patch_size} and "
                        f"{job.batch_size} patches per batch.",
                        "Use a smaller patch size or fewer patches per batch.") from None


def _train(job, ctx: JobContext) -> dict:
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler

    from .models import build_network

    started = time.monotonic()
    log_folder = Path(job.resolved_log_folder())
    log_folder.mkdir(parents=True, exist_ok=True)
    device = _device(job)
    ctx.log(f"Training on {device}; logs in {log_folder}")

    base_card = None
    if job.resume_from:
        base_card = modelfile.read_card(job.resume_from)
    elif job.init_model:
        base_card = modelfile.read_card(job.init_model)

    setup = prepare(job, ctx, log_folder)
    plan = setup.plan
    train_patches, val_patches = plan.split("train"), plan.split("validation")
    summary = plan.summary()
    ctx.log(f"Patches: {summary['patches']}")
    if not val_patches:
        ctx.log("No validation patches: the best model is chosen by training loss. Lower the "
                "split to validate.", "warning")

    ctx.progress("prepare", 2, 3, "Band statistics")
    train_src_ids = sorted({p.source for p in train_patches})
    import rasterio

    with rasterio.open(setup.sources[0].image) as ds:
        bands, res, crs = data_band_count(ds), ds.res, (ds.crs.to_string() if ds.crs else None)
        dtype = ds.dtypes[0]
    architecture, encoder = job.architecture, job.encoder
    if base_card is not None:
        if int(base_card["bands"]) != bands:
            raise UserError(f"The model to start from has {base_card['bands']} bands, the "
                            f"training rasters {bands}.", "Start from a model with the same bands.")
        architecture, encoder = base_card["architecture"], base_card["encoder"]
        mean, std, nodata = base_card["mean"], base_card["std"], base_card.get("nodata")
        if (architecture, encoder) != (job.architecture, job.encoder):
            ctx.log(f"Using {architecture} / {encoder} of the model started from.", "warning")
    else:
        mean, std, nodata = band_statistics([setup.sources[i] for i in train_src_ids])
    num_outputs = setup.num_outputs

    torch.manual_seed(job.seed)
    network = build_network(architecture, encoder, bands, num_outputs,
                            None if base_card is not None else job.encoder_weights)
    state: dict = {}
    if base_card is not None:
        from safetensors.torch import load_file

        weights = load_file(job.resume_from or job.init_model)
        own = network.state_dict()
        fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        network.load_state_dict(fitting, strict=False)
        if len(fitting) < len(own):
            ctx.log(f"{len(own) - len(fitting)} tensors of the model started from do not fit "
                    "the project's classes and start fresh.", "warning")
        if job.resume_from:
            state = dict(base_card.get("state") or {})
    cuda = device.startswith("cuda")
    network = network.to(device)
    if cuda:
        network = network.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True

    optimizer = torch.optim.AdamW(network.parameters(), lr=job.learning_rate, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and not torch.cuda.is_bf16_supported())
    if job.resume_from and modelfile.load_optimizer(job.resume_from, optimizer):
        for g in optimizer.param_groups:
            g["lr"] = job.learning_rate
            g["initial_lr"] = job.learning_rate
        ctx.log("Optimizer state restored.")
    n_train = min(len(train_patches), job.max_patches) if job.max_patches else len(train_patches)
    per_epoch = job.steps_per_epoch or max(1, math.ceil(n_train / job.batch_size))
    total_steps = per_epoch * job.epochs
    schedule = _schedule(total_steps, max(1, min(100, total_steps // 20)))
    global_step = int(state.get("global_step", 0))
    for g in optimizer.param_groups:
        g["lr"] = job.learning_rate * schedule(global_step)

    loss_w = torch.tensor(_loss_weights(train_patches, num_outputs, job.loss_weight),
                          device=device)
    ce = torch.nn.CrossEntropyLoss(weight=loss_w, ignore_index=IGNORE)
    augment = Augment(job.augment_rotation, job.augment_scale, job.augment_flip)
    train_ds = PatchDataset(setup.sources, train_patches, mean, std, num_outputs, augment,
                            jitter=0.25, seed=job.seed)
    val_ds = PatchDataset(setup.sources, val_patches, mean, std, num_outputs)
    workers = _num_workers(job, device)
    loader_kw = {"num_workers": workers, "pin_memory": cuda}
    if workers:
        loader_kw["prefetch_factor"] = 4
    scores = rarity_scores(train_patches)
    class_ids = [c["id"] for c in setup.classes]
    names = {c["id"]: c["name"] for c in setup.classes}

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_folder / "tensorboard"))
    ctx.artifact("log_folder", str(log_folder))
    training_params = {k: v for k, v in job.to_dict()["params"].items()}
    history: list[dict] = list(state.get("history", []))
    best_loss = float(state.get("best_loss", math.inf))
    best_epoch = int(state.get("best_epoch", 0))
    best_metrics, best_cm = state.get("best_metrics"), None
    start_epoch = int(state.get("epoch", 0))
    stale = 0
    stopped = "completed"
    if start_epoch >= job.epochs:
        ctx.log(f"The model to resume already ran {start_epoch} epochs: raise EPOCHS to train "
                "more.", "warning")

    def card(metrics: dict | None, epoch: int) -> dict:
        return modelfile.make_card(
            architecture=architecture, encoder=encoder, classes=setup.classes, bands=bands,
            mean=mean, std=std, nodata=nodata, patch_size=job.patch_size,
            pixel_size=(abs(res[0]), abs(res[1])), crs=crs, training=training_params,
            metrics=metrics, dtype=dtype,
            state={"epoch": epoch, "global_step": global_step, "best_loss": best_loss,
                   "best_epoch": best_epoch, "history": history, "best_metrics": best_metrics})

    preview = list(range(min(N_PREVIEW, len(val_patches))))
    for epoch in range(start_epoch, job.epochs):
        if ctx.cancelled:
            stopped = "cancelled"
            break
        ep_start = time.monotonic()
        progress_t = epoch / max(job.epochs - 1, 1)
        # -- data of this epoch
        if setup.pool and epoch > 0:
            train_ds.patches = setup.epoch_patches(epoch)
            scores = rarity_scores(train_ds.patches)
        train_ds.epoch = epoch
        train_ds.blur = {c: b * (1 - progress_t) for c, b in setup.blur.items()}
        cw = class_weight_at(epoch, job.epochs, job.class_weight_max, job.class_weight_min)
        gen = torch.Generator().manual_seed(job.seed * 100003 + epoch)
        n_samples = per_epoch * job.batch_size
        if cw > 0:
            probs = torch.as_tensor(sampling_probabilities(scores, cw), dtype=torch.double)
            sampler = WeightedRandomSampler(probs, n_samples, replacement=True, generator=gen)
        else:
            order = torch.randperm(len(train_ds), generator=gen)
            reps = math.ceil(n_samples / max(len(order), 1))
            sampler = order.repeat(reps)[:n_samples].tolist()
        loader = DataLoader(train_ds, batch_size=job.batch_size, sampler=sampler,
                            drop_last=False, **loader_kw)
        # -- train
        network.train()
        cm_train = confusion_metric(num_outputs, device)
        loss_sum, n_batches = 0.0, 0
        for b, (img, mask, soft) in enumerate(loader):
            if ctx.cancelled:
                break
            loss, logits, mask = train_step(network, optimizer, ce, loss_w, img, mask, soft,
                                            device, scaler)
            global_step += 1
            for g in optimizer.param_groups:
                g["lr"] = job.learning_rate * schedule(global_step)
            cm_train.update(logits.detach().argmax(1), mask)
            loss_v = float(loss.detach())
            loss_sum += loss_v
            n_batches += 1
            ctx.progress("batch", b + 1, per_epoch, f"epoch {epoch + 1}", loss=loss_v)
        if ctx.cancelled and n_batches < per_epoch:
            stopped = "cancelled"
            break
        train_loss = loss_sum / max(n_batches, 1)
        train_m = metrics_from_confusion(cm_train.compute().cpu().numpy(), class_ids)
        # -- validate
        val_loss, val_m, cm_val = None, None, None
        if val_patches:
            network.eval()
            cm = confusion_metric(num_outputs, device)
            v_sum, v_px = 0.0, 0.0
            images = []
            vloader = DataLoader(val_ds, batch_size=job.batch_size, shuffle=False, **loader_kw)
            with torch.no_grad():
                for vb, (img, mask, _soft) in enumerate(vloader):
                    img = img.to(device, non_blocking=True)
                    if cuda:
                        img = img.contiguous(memory_format=torch.channels_last)
                    mask = mask.to(device, non_blocking=True).long()
                    with _autocast(device):
                        logits = network(img)
                    logits = logits.float()
                    valid_w = loss_w[mask.clamp_max(num_outputs - 1)] * (mask != IGNORE)
                    v_sum += float(torch.nn.functional.cross_entropy(
                        logits, mask, weight=loss_w, ignore_index=IGNORE, reduction="sum"))
                    v_px += float(valid_w.sum())
                    pred = logits.argmax(1)
                    cm.update(pred, mask)
                    if vb * job.batch_size < len(preview):
                        for k in range(img.shape[0]):
                            i = vb * job.batch_size + k
                            if i in preview:
                                images.append((img[k].float().cpu().numpy(),
                                               mask[k].cpu().numpy().astype(np.uint8),
                                               pred[k].cpu().numpy().astype(np.uint8)))
            val_loss = v_sum / max(v_px, 1e-6)
            cm_val = cm.compute().cpu().numpy()
            val_m = metrics_from_confusion(cm_val, class_ids)
            for i, (im, ms, pr) in enumerate(images):
                panel = np.concatenate([_rgb(im), _colorize(ms, setup.classes),
                                        _colorize(pr, setup.classes)], axis=1)
                writer.add_image(f"validation/patch_{i}", panel, epoch + 1, dataformats="HWC")
        # -- record
        lr = optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch + 1, "lr": lr, "class_weight": cw, "train_loss": train_loss,
               "val_loss": val_loss, "train_accuracy": train_m["accuracy"],
               "train_miou": train_m["mean_iou"], "seconds": time.monotonic() - ep_start}
        if val_m:
            row.update({"val_accuracy": val_m["accuracy"], "val_miou": val_m["mean_iou"],
                        "val_mf1": val_m["mean_f1"], "val_mprecision": val_m["mean_precision"],
                        "val_mrecall": val_m["mean_recall"]})
        ref = val_m or train_m
        for cid in class_ids:
            row[f"iou_{cid}"] = ref["per_class"][cid]["iou"]
            row[f"f1_{cid}"] = ref["per_class"][cid]["f1"]
        history.append(row)
        writer.add_scalar("loss/train", train_loss, epoch + 1)
        writer.add_scalar("lr", lr, epoch + 1)
        writer.add_scalar("class_weight", cw, epoch + 1)
        for split_name, m in (("train", train_m), ("val", val_m)):
            if not m:
                continue
            for key in ("accuracy", "mean_precision", "mean_recall", "mean_f1", "mean_iou"):
                writer.add_scalar(f"{key}/{split_name}", m[key], epoch + 1)
            for cid in class_ids:
                for key in ("precision", "recall", "f1", "iou"):
                    writer.add_scalar(f"{key}_per_class/{split_name}_{cid}_{names[cid]}",
                                      m["per_class"][cid][key], epoch + 1)
        if val_loss is not None:
            writer.add_scalar("loss/val", val_loss, epoch + 1)
        writer.flush()
        report.append_csv(log_folder, row)
        # -- models (before announcing the epoch, so a cancel there keeps them)
        crit = val_loss if val_loss is not None else train_loss
        improved = crit < best_loss
        if improved:
            best_loss, best_epoch, stale = crit, epoch + 1, 0
            best_metrics = dict(val_m or train_m, split="validation" if val_m else "train",
                                loss=crit, epoch=epoch + 1)
            best_cm = cm_val if cm_val is not None else cm_train.compute().cpu().numpy()
            modelfile.save_model(job.output_model, network, card(best_metrics, epoch + 1))
            ctx.artifact("best_model", job.output_model)
        else:
            stale += 1
        if job.output_last_model:
            modelfile.save_model(job.output_last_model, network,
                                 card(dict(val_m or train_m, loss=crit, epoch=epoch + 1),
                                      epoch + 1))
            if job.save_optimizer:
                modelfile.save_optimizer(job.output_last_model, optimizer)
            else:   # an older run's state would not belong to this last model
                modelfile.optimizer_path(job.output_last_model).unlink(missing_ok=True)
            ctx.artifact("last_model", job.output_last_model)
        metrics_msg = {k: v for k, v in row.items()
                       if k in ("train_loss", "val_loss", "val_miou", "val_accuracy",
                                "train_miou", "lr") and v is not None}
        ctx.progress("epoch", epoch + 1, job.epochs,
                     f"epoch {epoch + 1}/{job.epochs}" + (" (best)" if improved else ""),
                     **metrics_msg)
        if job.patience and stale >= job.patience:
            stopped = "early_stopping"
            ctx.log(f"Early stopping: no improvement for {job.patience} epochs.")
            break
    writer.close()
    if ctx.cancelled and stopped == "completed":
        stopped = "cancelled"

    curves = report.learning_curves(log_folder, history)
    summary_out = {"architecture": architecture, "encoder": encoder,
                   "epochs_run": len(history), "best_epoch": best_epoch,
                   "best_val_loss": None if math.isinf(best_loss) else round(best_loss, 6),
                   "stopped": stopped, "seconds": round(time.monotonic() - started, 1),
                   "output_model": job.output_model if best_epoch else None,
                   "output_last_model": job.output_last_model or None,
                   "device": device, "patches": summary["patches"]}
    rep_json, rep_md = report.write_report(log_folder, summary_out, setup.classes, best_metrics,
                                           best_cm)
    ctx.artifact("report", str(rep_md))
    result = dict(summary_out)
    result.update({"log_folder": str(log_folder), "report": str(rep_md),
                   "report_json": str(rep_json), "csv": str(log_folder / report.CSV_NAME),
                   "learning_curves": str(curves) if curves else None,
                   "tensorboard": str(log_folder / "tensorboard"),
                   "cancelled": stopped == "cancelled",
                   "metrics": _slim(best_metrics)})
    return result


def _slim(m: dict | None) -> dict | None:
    if not m:
        return None
    out = {k: v for k, v in m.items() if k != "per_class"}
    out["per_class_iou"] = {str(k): round(v["iou"], 4) for k, v in m["per_class"].items()}
    return out
