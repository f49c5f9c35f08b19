"""Pixel regression as a :class:`~..training.task.TrainingTask` of the one training engine.

Data (``data.py``): the input rasters with a target raster each (or points burned into one),
a spatial split into validation blocks, and every epoch new random windows centred on training
target pixels, augmented per batch on the device (:mod:`..batch_augment`: flips and quarter
turns, exact for the targets; contrast only when asked). The target is normalised to mean 0 /
std 1 with its statistics over the target pixels (kept in the model card, ``target``).
Network: a segmentation-models-pytorch model with one output channel (:mod:`..smp_networks`).
Loss (LOSS): Huber (δ = 1 std), L1 or MSE on the normalised target, over the pixels with a
target only. Validation metrics, in the target's unit: MAE, RMSE, bias (mean of prediction −
truth) and R² = 1 − SSE / SST (torchmetrics' MeanAbsoluteError, MeanSquaredError and R2Score),
of the averaged weights with their BatchNorm statistics recomputed every epoch
(:meth:`refresh_average`).
The best model has the lowest validation RMSE (``best_mode`` "min"); the report shows the
metrics and a scatter plot of predicted against true values of the validation pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training import report, runtime
from ..training.length import training_length
from ..training.task import TrainingTask
from .data import IGNORE, WindowDataset, draw_windows

BN_BATCHES = 8            # training batches that refresh the BatchNorm statistics per epoch
SCATTER_POINTS = 4000     # validation pixels kept per epoch for the scatter plot
SCATTER_NAME = "predicted_vs_true.png"


class PixelRegressionTask(TrainingTask):
    name = "pixel_regression"
    title = "Pixel regression"
    best_metric = "val_rmse"
    best_mode = "min"
    curve_keys = ("val_r2",)
    curve_title = "Validation R²"
    length_knobs = "EPOCHS or STEPS_PER_EPOCH"

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self, job, ctx, log_folder: Path) -> None:
        from ..sampling.statistics import band_statistics
        from .data import read_sources, split_windows
        from .data import target_statistics as target_stats

        self.job, self.ctx, self.log_folder = job, ctx, Path(log_folder)
        ctx.progress("prepare", 0, 3, "Reading the targets")
        self.sources = read_sources(job, self.log_folder)
        self.target_mean, self.target_std, n = target_stats(self.sources)
        ctx.log(f"Target {job.target_name}: {n} pixels, mean {self.target_mean:.4g}, std "
                f"{self.target_std:.4g} {job.target_unit}".rstrip())
        ctx.progress("prepare", 1, 3, "Band statistics")
        self.describe_rasters(self.sources[0].image)
        self.mean, self.std, self.nodata = band_statistics(self.sources)
        ctx.progress("prepare", 2, 3, "Splitting")
        self.split = split_windows(self.sources, job.patch_size, job.split, job.seed)
        ctx.log(f"Validation blocks: {len(self.split.validation)}; training target pixels: "
                f"{self.split.train_pixels}.")
        self.classes = [{"id": 0, "name": job.target_name or "value", "color": "#1a9850"}]
        from ..smp_networks import resolve_auto

        self.architecture, self.encoder = resolve_auto(
            job.architecture, job.encoder, runtime.resolve_device(job.device))
        area = sum(h * w for h, w in self.split.shapes.values())
        self.per_epoch = training_length(job, area)[0]
        self._samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._augment = None

    def build_network(self, base_card: dict | None):
        from ..smp_networks import build_network, start_smp

        if base_card is not None:
            self.adopt_card(base_card)
            self.architecture, self.encoder = base_card["architecture"], base_card["encoder"]
            self.target_mean = base_card["target"]["mean"]
            self.target_std = base_card["target"]["std"]
        network = build_network(self.architecture, self.encoder, self.bands, 1)
        self.apply_start_weights(base_card, lambda: start_smp(network, self.job.start_weights,
                                                        self.name, self.encoder))
        return network

    def card_fields(self) -> dict:
        return {"architecture": self.architecture, "encoder": self.encoder,
                "patch_size": self.job.patch_size, "loss": self.job.loss,
                "target": {"name": self.job.target_name, "unit": self.job.target_unit,
                           "mean": self.target_mean, "std": self.target_std}}

    def steps_per_epoch(self, job) -> int:
        return self.per_epoch

    # -- data ----------------------------------------------------------------------------------
    def _dataset(self, windows, hidden=None) -> WindowDataset:
        return WindowDataset(self.sources, windows, self.mean, self.std, self.target_mean,
                             self.target_std, hidden)

    def train_loader(self, epoch: int, device: str):
        import torch
        from torch.utils.data import DataLoader

        from ..batch_augment import BatchAugment

        job = self.job
        if self._augment is None:   # quarter turns and flips only: exact for the targets
            self._augment = BatchAugment(job.augment_rotation, False, job.augment_flip,
                                         max_angle=0.0, photometric=job.augment_photometric)
        rng = np.random.default_rng([job.seed, epoch, 29])
        windows = draw_windows(self.split, job.patch_size, self.per_epoch * job.batch_size, rng)
        self._generator = torch.Generator().manual_seed(job.seed * 100_003 + epoch)
        return DataLoader(self._dataset(windows, self.split.hidden), batch_size=job.batch_size,
                          shuffle=False, **runtime.loader_kwargs(job.num_workers, device))

    def val_loader(self, device: str):
        from torch.utils.data import DataLoader

        if not self.split.validation:
            return None
        return DataLoader(self._dataset(self.split.validation), batch_size=self.job.batch_size,
                          shuffle=False, **runtime.loader_kwargs(self.job.num_workers, device))

    # -- loss and metrics ----------------------------------------------------------------------
    def _to_device(self, batch, device: str, augment: bool):
        import torch

        img, target, mask = (t.to(device, non_blocking=True) for t in batch)
        mask = mask.long()
        if augment and self._augment is not None:
            img, mask, target = self._augment(img, mask, target, self._generator)
        if device.startswith("cuda"):
            img = img.contiguous(memory_format=torch.channels_last)
        return img, target, mask

    def train_step(self, network, batch, device: str):
        img, target, mask = self._to_device(batch, device, augment=True)
        return masked_loss(network(img).float(), target, mask, self.job.loss), {}

    def refresh_average(self, network, device: str, epoch: int) -> None:
        """Recompute the BatchNorm statistics of the averaged ``network`` on
        :data:`BN_BATCHES` batches of training windows (torch's ``swa_utils.update_bn``, as
        Izmailov et al. 2018 do for averaged weights). The averaged statistics belong to the
        weights of earlier steps: a short run's regression output in eval mode was off by
        hundreds of target std (R² −0.38 after 32 steps, 0.95 with this), where a classifier's
        argmax hardly notices."""
        from torch.optim.swa_utils import update_bn
        from torch.utils.data import DataLoader

        rng = np.random.default_rng([self.job.seed, epoch, 41])
        n = min(BN_BATCHES, self.per_epoch) * self.job.batch_size
        windows = draw_windows(self.split, self.job.patch_size, n, rng)
        update_bn(DataLoader(self._dataset(windows, self.split.hidden),
                             batch_size=self.job.batch_size), network, device=device)

    def validate(self, network, loader, device: str, epoch: int) -> dict:
        import torch
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

        mae, mse, r2 = (m.to(device) for m in (MeanAbsoluteError(), MeanSquaredError(),
                                                R2Score()))
        loss_sum, count, err_sum = 0.0, 0, 0.0
        preds, truths = [], []
        rng = np.random.default_rng([self.job.seed, epoch, 37])
        for batch in loader:
            img, target, mask = self._to_device(batch, device, augment=False)
            out = network(img).float()
            keep = mask == 0
            n = int(keep.sum())
            if not n:
                continue
            loss_sum += float(masked_loss(out, target, mask, self.job.loss)) * n
            p = out[:, 0][keep] * self.target_std + self.target_mean
            t = target[:, 0][keep] * self.target_std + self.target_mean
            mae.update(p, t)
            mse.update(p, t)
            r2.update(p, t)
            err_sum += float((p - t).double().sum())
            count += n
            take = rng.random(n) < SCATTER_POINTS / max(n, SCATTER_POINTS)
            preds.append(p.cpu().numpy()[take])
            truths.append(t.cpu().numpy()[take])
        if not count:
            return {}
        self._samples[epoch + 1] = (np.concatenate(truths), np.concatenate(preds))
        with torch.no_grad():
            m = {"mae": float(mae.compute()), "rmse": float(mse.compute()) ** 0.5,
                 "r2": float(r2.compute()) if count > 1 else float("nan"),
                 "bias": err_sum / count, "pixels": count}
        row = {"val_loss": loss_sum / count, **{f"val_{k}": v for k, v in m.items()}}
        row["_extra"] = {"regression": {**m, "split": "validation",
                                        "target": self.card_fields()["target"]}}
        return row

    # -- summary -------------------------------------------------------------------------------
    def summary_metrics(self, row: dict, extra: dict | None) -> dict:
        """mae, rmse, r2, bias (target unit), pixels, split, loss, epoch."""
        if not extra:
            return super().summary_metrics(row, extra)
        return {**extra["regression"], "loss": row.get("val_loss"), "epoch": row.get("epoch")}

    def report_section(self, best_row: dict, extra: dict | None) -> str:
        if not extra:
            return ""
        m = extra["regression"]
        unit = f" {self.job.target_unit}" if self.job.target_unit else ""
        lines = [f"Metrics of the best model on the {m['pixels']} validation pixels "
                 f"({self.job.target_name}{unit.replace(' ', ', ') if unit else ''}):", "",
                 "| MAE | RMSE | R² | bias |", "|---|---|---|---|",
                 f"| {m['mae']:.4g} | {m['rmse']:.4g} | {m['r2']:.4f} | {m['bias']:.4g} |"]
        sample = self._samples.get(int(best_row.get("epoch", 0)))
        if sample is not None and len(sample[0]):
            path = report.scatter_plot(self.log_folder / SCATTER_NAME, *sample,
                                       f"{self.job.target_name}{unit}".strip())
            lines += ["", f"![Predicted against true values]({path.name})"]
        return "\n".join(lines)


def masked_loss(pred, target, mask, kind: str):
    """The mean ``kind`` loss ("huber" with δ 1, "l1", "mse") of ``pred`` against ``target``
    (both (N, 1, H, W) float, normalised) over the pixels where ``mask`` (N, H, W) is 0; 0 (not
    NaN) without such pixels, with no host synchronisation."""
    import torch.nn.functional as F  # noqa: N812

    fn = {"huber": F.huber_loss, "l1": F.l1_loss, "mse": F.mse_loss}[kind]
    weight = (mask != IGNORE).to(pred.dtype)[:, None]
    per_px = fn(pred, target, reduction="none") * weight
    return per_px.sum() / weight.sum().clamp_min(1.0)
