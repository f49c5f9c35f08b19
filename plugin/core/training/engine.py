"""THE training loop, for every model family (worker process or CLI; never inside QGIS).

``run_training(job, task, ctx)``: the family's :class:`~.task.TrainingTask` supplies data,
network, loss, metrics and report section; this module does the rest. One run:

1. ``task.prepare`` (labels, sample plan, band statistics); the network fresh, fine-tuned from
   ``job.init_model`` or resumed from ``job.resume_from`` (a last model: its card holds epoch,
   step, best score and history; the optimizer state and the training weights lie beside it);
   the training length in optimiser steps (``task.steps_per_epoch`` × epochs) logged, with a
   warning below :data:`.length.MIN_STEPS` (:func:`.length.length_lines`), for every family.
2. Every epoch:
   a. draw the epoch's batches (``task.train_loader(epoch)``: fresh random samples allowed);
   b. per batch: forward + loss (``task.train_step``) under autocast, backward, AdamW step, the
      moving average of the weights (:mod:`.weight_average`: what is validated and saved), the
      learning rate of the next step (linear warm-up, then cosine); the loss is summed on the
      device and read after the first step, every ``runtime.LOSS_READ_STEPS`` steps and at the
      epoch's end (reading waits for the GPU), so progress events show the mean loss of the
      last reading;
   c. validation (``task.validate``) when the task has validation data;
   d. one row of numbers → metrics.csv, TensorBoard, a progress event;
   e. the best model (by ``task.best_metric``; the last one without validation, or when
      ``task.unranked_reason()`` says the validation data are too few to rank epochs: the card's
      ``state.best_rule`` says which rule chose it) and the last model + optimizer, each
      written atomically, so a cancel or a crash never loses an epoch; both models hold the
      averaged weights, the optimizer file the training weights;
   f. the map preview (:mod:`.preview`; PREVIEW_RASTER set, at most every PREVIEW_SECONDS
      and within 5 % of the time): the averaged model on the part of a raster the map
      shows;
   g. early stopping after ``job.patience`` epochs without improvement.
3. Learning curves, report.md / report.json; the result dict.

Cancel (``ctx.cancelled``) is honoured between batches; a partly run epoch is not recorded.

Several processes (``torchrun``/``dltrain run --processes N``, see :mod:`..distributed`): each
rank prepares its own copy of the data, draws its share of every epoch's samples, and trains a
DistributedDataParallel copy of the network (torch averages the gradients); rank 0 alone
validates, writes models, logs, TensorBoard and the report, and its decisions (stop, cancel)
are broadcast. The global batch is N × BATCH_SIZE; the learning rate is not scaled.
The job needs: epochs, learning_rate, seed, device, patience, resume_from, init_model,
output_model, output_last_model and (optionally) batch_size, log_folder /
``resolved_log_folder()``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .. import distributed, modelfile
from ..errors import UserError
from ..jobs import JobContext
from . import report, runtime
from .length import length_lines
from .logfolder import mark_log_folder
from .preview import previewer_for
from .task import TrainingTask
from .weight_average import WeightAverage

WEIGHT_DECAY = 1e-4


def run_training(job, task: TrainingTask, ctx: JobContext) -> dict:
    """Train ``task`` as ``job`` says; return the outputs and the best model's metrics."""
    import torch

    try:
        return _run(job, task, ctx)
    except torch.OutOfMemoryError:
        raise UserError(f"The device ran out of memory with {getattr(job, 'batch_size', '?')} "
                        "samples per batch.",
                        "Use fewer samples per batch (BATCH_SIZE) or smaller patches.") from None


def log_folder_of(job) -> Path:
    """The job's log folder: ``resolved_log_folder()``, LOG_FOLDER, or <output model>_logs."""
    if hasattr(job, "resolved_log_folder"):
        return Path(job.resolved_log_folder())
    if getattr(job, "log_folder", ""):
        return Path(job.log_folder)
    out = Path(job.output_model)
    return out.with_name(f"{out.name.split('.')[0] or 'model'}_logs")


def _run(job, task: TrainingTask, ctx: JobContext) -> dict:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    started = time.monotonic()
    log_folder = log_folder_of(job)
    mark_log_folder(log_folder)   # before anything else: a failed run's rerun is not refused
    device = distributed.device_for(runtime.resolve_device(job.device))
    distributed.setup(device)
    main = distributed.is_main()
    threads = runtime.limit_threads(runtime.num_workers(getattr(job, "num_workers", -1), device))
    ctx.log(f"Training on {device} ({threads} CPU thread(s)); logs in {log_folder}"
            + (f"; {distributed.world_size()} processes" if distributed.active() else ""))

    # -- 1. data, network, optimiser, resume state
    start_from = job.resume_from or job.init_model
    base_card = modelfile.read_model_card(start_from, task.name) if start_from else None
    task.prepare(job, ctx, log_folder if main else distributed.rank_folder(log_folder))
    torch.manual_seed(job.seed)
    network = task.build_network(base_card)
    state: dict = {}
    if base_card is not None:
        fresh = runtime.load_fitting_weights(network, start_from)
        if fresh:
            ctx.log(f"{fresh} tensors of the model started from do not fit the project's "
                    "classes and start fresh.", "warning")
        task.started_from(network, base_card, fresh)
        if job.resume_from:
            state = dict(base_card.get("state") or {})
    cuda = device.startswith("cuda")
    network = network.to(device)
    if cuda:
        network = network.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    raw, network = network, distributed.wrap(network, device)   # raw: trained, not wrapped
    # fused: one kernel for all tensors (a ResNet-18 FCOS step on one CPU thread: 0.14 s of
    # AdamW per step single-tensor, 0.02 s fused)
    optimizer = torch.optim.AdamW(network.parameters(), lr=job.learning_rate,
                                  weight_decay=WEIGHT_DECAY,
                                  fused=device.split(":")[0] in ("cpu", "cuda"))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and not torch.cuda.is_bf16_supported())
    if job.resume_from and modelfile.load_optimizer(job.resume_from, optimizer):
        ctx.log("Optimizer state restored.")
    batches = task.steps_per_epoch(job)
    per_epoch = distributed.share_count(batches)
    shown, short = length_lines(job.epochs, batches, getattr(job, "batch_size", None),
                                task.length_knobs)
    ctx.log(shown)
    if short:
        ctx.log(short, "warning")
    lr_at = runtime.lr_factor(per_epoch * job.epochs)
    step = int(state.get("global_step", 0))
    # the average starts from the model file's weights (a resumed run's saved average); the
    # network then continues from its own weights, saved beside the optimizer state
    average = WeightAverage(raw, per_epoch * job.epochs, steps=step)
    plain = average.module   # validated and saved
    if job.resume_from and modelfile.load_training_weights(job.resume_from, raw):
        ctx.log("Training weights restored.")
    _set_lr(optimizer, job.learning_rate * lr_at(step))
    val_loader = task.val_loader(device)
    unranked = task.unranked_reason() if val_loader is not None else ""
    ranking = val_loader is not None and not unranked
    if val_loader is None:
        ctx.log("No validation data: the last model is kept as the best model. Lower the split "
                "to validate.", "warning")
    elif unranked:
        ctx.log(f"{unranked} The last epoch's model is kept as the best model (validation is "
                f"still measured and reported). {task.unranked_fix()}", "warning")
    best_rule = (f"highest {task.best_metric}" if task.best_mode == "max" else
                 f"lowest {task.best_metric}") if ranking else (
        f"last epoch: {unranked}" if unranked else "last epoch: no validation data")

    history: list[dict] = list(state.get("history", []))
    best = state.get("best_score")
    best_epoch = int(state.get("best_epoch", 0))
    best_metrics, best_row, best_extra = state.get("best_metrics"), None, None
    start_epoch, stale, stopped = int(state.get("epoch", 0)), 0, "completed"
    if start_epoch >= job.epochs:
        ctx.log(f"The model to resume already ran {start_epoch} epochs: raise EPOCHS to train "
                "more.", "warning")
    params = dict(job.to_dict()["params"])
    # where validation lies, so that Suggest Areas to Label keeps out (none when unknown)
    areas = task.validation_areas() if main else {}
    known = {"validation_areas": areas} if areas else {}

    def card(metrics: dict | None, epoch: int) -> dict:
        return modelfile.make_card(
            task=task.name, classes=task.classes, bands=task.bands, mean=task.mean,
            std=task.std, nodata=task.nodata, pixel_size=task.pixel_size, crs=task.crs,
            dtype=task.dtype, training=params, metrics=metrics, **task.card_fields(), **known,
            state={"epoch": epoch, "global_step": step, "best_metric": task.best_metric,
                   "best_score": best, "best_epoch": best_epoch, "history": history,
                   "best_metrics": best_metrics, "best_rule": best_rule})

    writer = SummaryWriter(str(log_folder / "tensorboard")) if main else None
    if main and (moved := report.start_csv(log_folder, resumed=bool(history))):
        ctx.log(f"The earlier run's metrics were moved to {moved.name}.")
    ctx.artifact("log_folder", str(log_folder))
    previewer = previewer_for(job, task, log_folder, ctx, started) if main else None
    for epoch in range(start_epoch, job.epochs):
        if distributed.broadcast(ctx.cancelled):
            stopped = "cancelled"
            break
        epoch_start = time.monotonic()
        # -- 2a/b. train: one pass over this epoch's batches
        network.train()
        sums, n, shown_loss = runtime.DeviceSums(device), 0, 0.0
        for batch in distributed.shard_loader(task.train_loader(epoch, device)):
            if ctx.cancelled and not distributed.active():   # ranks stop together, per epoch
                break
            loss, terms = train_batch(task, network, optimizer, scaler, batch, device)
            average.update(raw)
            step += 1
            _set_lr(optimizer, job.learning_rate * lr_at(step))
            n += 1
            sums.add(loss=loss, **terms)   # on the device: no wait for the GPU per step
            if n == 1 or n % runtime.LOSS_READ_STEPS == 0 or n == per_epoch:
                shown_loss = sums.read()["loss"] / n
            ctx.progress("batch", n, per_epoch, f"epoch {epoch + 1}", loss=shown_loss)
        terms_sum = sums.read()
        loss_sum = terms_sum.pop("loss", 0.0)
        if ctx.cancelled and n < per_epoch and not distributed.active():
            stopped = "cancelled"
            break
        end_of_epoch = task.end_train_epoch()   # every rank: torchmetrics gathers their states
        if not main:   # rank 0 validates and records; the others follow its decisions
            if distributed.broadcast(None):
                break
            continue
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / max(n, 1)}
        row.update({f"train_{k}": v / max(n, 1) for k, v in terms_sum.items()})
        row.update(end_of_epoch)
        with torch.no_grad():   # the family's last touch to the average it validates and saves
            task.refresh_average(plain, device, epoch)
        # -- 2c. validate
        if val_loader is not None:
            with torch.no_grad(), runtime.autocast(device), distributed.rank_local_metrics():
                row.update(task.validate(plain, val_loader, device, epoch))
        images = row.pop("_images", [])
        extra = row.pop("_extra", None)
        row["seconds"] = time.monotonic() - epoch_start
        # -- 2d. record
        history.append(row)
        report.append_csv(log_folder, row)
        report.log_epoch(writer, row, images)
        # -- 2e. models (before announcing the epoch, so a cancel there keeps them)
        score = row.get(task.best_metric) if ranking else None
        improved = not ranking or _better(score, best, task.best_mode)
        if improved:
            best, best_epoch, stale = score, epoch + 1, 0
            best_row, best_extra = row, extra
            best_metrics = task.summary_metrics(row, extra)
            modelfile.save_model(job.output_model, task.saved_network(plain),
                                 card(best_metrics, epoch + 1))
            ctx.artifact("best_model", job.output_model)
        else:
            stale += 1
        if job.output_last_model:
            modelfile.save_model(job.output_last_model, task.saved_network(plain),
                                 card(task.summary_metrics(row, extra), epoch + 1))
            if getattr(job, "save_optimizer", True):
                modelfile.save_optimizer(job.output_last_model, optimizer, raw)
            else:   # an older run's state would not belong to this last model
                modelfile.optimizer_path(job.output_last_model).unlink(missing_ok=True)
            ctx.artifact("last_model", job.output_last_model)
        shown = {k: v for k, v in row.items() if isinstance(v, (int, float)) and
                 (k == "lr" or k.split("_")[0] in ("train", "val"))}
        ctx.progress("epoch", epoch + 1, job.epochs,
                     f"epoch {epoch + 1}/{job.epochs}" + (" (best)" if improved else ""), **shown)
        # -- 2f. the model on the map
        if previewer is not None:
            previewer.after_validation(plain, task, epoch + 1, device, ctx)
        # -- 2g. early stopping
        if job.patience and stale >= job.patience:
            stopped = "early_stopping"
            ctx.log(f"Early stopping: no improvement of {task.best_metric} for {job.patience} "
                    "epochs.")
        if distributed.broadcast(stopped != "completed"):   # tells the other ranks
            break
    if not main:
        distributed.drop_rank_folder(log_folder)
        return {"rank": distributed.rank(), "steps": step, "device": device}
    writer.close()
    if ctx.cancelled and stopped == "completed":
        stopped = "cancelled"

    # -- 3. curves and report
    curves = report.learning_curves(log_folder, history, task.curve_keys, task.curve_title)
    summary = {"task": task.name, **task.card_fields(), "device": device,
               "epochs_run": len(history), "steps": step, "best_epoch": best_epoch,
               "best_metric": task.best_metric if ranking else "last epoch",
               "best_rule": best_rule,
               "best_score": best, "stopped": stopped,
               "seconds": round(time.monotonic() - started, 1),
               "output_model": job.output_model if best_epoch else None,
               "output_last_model": job.output_last_model or None}
    rep_json, rep_md = report.write_report(
        log_folder, task.title or task.name.replace("_", " ").capitalize(), summary,
        {"classes": task.classes, "metrics": best_metrics, **(best_extra or {})},
        task.report_section(best_row or {}, best_extra))
    ctx.artifact("report", str(rep_md))
    return {**summary, "log_folder": str(log_folder), "report": str(rep_md),
            "report_json": str(rep_json), "csv": str(log_folder / report.CSV_NAME),
            "learning_curves": str(curves) if curves else None,
            "tensorboard": str(log_folder / "tensorboard"),
            "cancelled": stopped == "cancelled", "metrics": best_metrics,
            "preview_seconds": round(previewer.spent, 3) if previewer is not None else None}


def train_batch(task: TrainingTask, network, optimizer, scaler, batch, device: str):
    """One optimisation step: forward + loss under autocast, backward, optimiser step (through
    the GradScaler on fp16 GPUs). Returns ``task.train_step``'s (loss, terms)."""
    with runtime.autocast(device):
        loss, terms = task.train_step(network, batch, device)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, terms


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _better(score, best, mode: str) -> bool:
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return False
    if best is None:
        return True
    return score > best if mode == "max" else score < best
