"""Image classification on the one training engine: :class:`GridTask` (grid models) and
:class:`ChipTask` (chip classifiers), sharing :class:`ClassificationTask`.

Network: a timm backbone (``networks.py``). Loss: cross-entropy (single-label, softmax) or
binary cross-entropy per class (multi-label, sigmoid). Validation (probabilities averaged over
the 8 flips/turns of a model trained with them, as Classify Chips / Grid score it: the card's
``tta``, ``network.py``): loss (of the plain logits), per-class precision,
recall, F1, F-beta and average precision (torchmetrics), and for multi-label models the
per-class thresholds that maximise F-beta on the validation set (``metrics.py``), stored in the
model card. The best grid model is the one with the lowest validation loss (ENVI); the best chip
classifier the one with the highest macro average precision on validation less
:data:`LOSS_TIE_BREAK` × the validation loss (``val_ranking``): with balanced classes its
decisions come from the offsets or thresholds tuned on validation, so what must be best is how
it ranks the chips, and the validation loss (GBDX's choice) on the natural class distribution
rises as soon as the oversampled rare class is predicted confidently — on the Landsat chips
(bench/real_classifiers.py, seed 0) it was lowest at epoch 9 of 35 (rare-class AP 0.48) while
the AP went on rising to 0.55. The loss term only decides between epochs of (nearly) the same
AP: a small validation set ranks perfectly (AP 1) from the first epoch, and the AP alone
then kept that first model.

Class balance (CLASS_BALANCE, ``training.fields.class_balance_field``): "sampling" draws each
training sample with probability ∝ 1 / the frequency of its class (as round 1 of two rounds);
"weights" weighs the loss instead: cross-entropy class weights ``N / (C · n_c)`` (the
"balanced" weights of King & Zeng 2001, scikit-learn) or, multi-label, the positive weight
``negatives / positives`` of each class (``balance.py``). Single-label
decisions then use per-class offsets tuned on validation for the rarer classes' F1
(``metrics.tune_offsets``), stored in the card as ``decision_offsets`` and used by Classify
Chips.

Length: :func:`..training.length.automatic_steps` batches per epoch (one pass over the training
samples, at least enough batches for 300 steps with the family's default epochs), unless the job
sets it (chips: TRAIN_SIZE; grid: STEPS_PER_EPOCH).

Two rounds (GBDX): round 1 draws classes balanced (each chip with probability ∝ 1 / the
frequency of its class; multi-label: the mean over its tags, "no tag" counting as a class);
round 2 starts from round 1's best model, draws chips uniformly (the original distribution) and
trains only the last layer (``freeze_all_but_head``; batch-norm statistics are frozen too, so
nothing else changes).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..training import runtime
from ..training.task import TrainingTask
from .architectures import resolve_architecture
from .balance import balance_weights
from .metrics import classification_metrics, metrics_markdown, tune_offsets, tune_thresholds

LOSS_TIE_BREAK = 0.01    # share of the validation loss taken off the macro AP (val_ranking)


class ClassificationTask(TrainingTask):
    best_metric = "val_loss"
    best_mode = "min"
    multi_label = True
    round = 1

    # set by subclasses' prepare
    train_ds = None
    val_ds = None
    sample_weights: np.ndarray | None = None
    loss_weights: np.ndarray | None = None   # CLASS_BALANCE "weights" (balance_weights)
    offsets: list[float] | None = None       # single-label decision offsets (validation)
    train_count: int = 0
    per_epoch: int = 1                       # batches per epoch

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    def build_network(self, base_card: dict | None):
        from ..training.start_weights import start_network
        from .network import build_classifier, freeze_all_but_head, pretrained_state

        job = self.job
        self.architecture = resolve_architecture(job.architecture,
                                                 runtime.resolve_device(job.device))
        if base_card is not None:
            self.adopt_card(base_card)   # the model's normalisation, for the datasets too
            for ds in (self.train_ds, self.val_ds):
                if ds is not None:
                    ds.mean = np.asarray(self.mean, np.float32)[:, None, None]
                    ds.std = np.asarray(self.std, np.float32)[:, None, None]
            self.architecture = base_card["architecture"]
            if [c["name"] for c in base_card["classes"]] != self.names:
                self.ctx.log("The model started from has other classes: its last layer "
                             "starts fresh.", "warning")
        net = build_classifier(self.architecture, self.bands, len(self.classes))
        self.apply_start_weights(base_card, lambda: start_network(
            net, job.start_weights, self.name, lambda: pretrained_state(self.architecture),
            what=f"a {self.architecture} network"))
        if self.round == 2:
            trainable = freeze_all_but_head(net)
            self.ctx.log(f"Round 2 trains only the last layer ({', '.join(trainable)}).")
        return net

    def steps_per_epoch(self, job) -> int:
        """Set by ``prepare`` (``gridwindows.grid_steps``, ``chipsplit.chip_steps``)."""
        return self.per_epoch

    def _loader_kw(self, device: str) -> dict:
        return runtime.loader_kwargs(getattr(self.job, "num_workers", -1), device)

    def train_loader(self, epoch: int, device: str):
        import torch
        from torch.utils.data import DataLoader, WeightedRandomSampler

        job = self.job
        self.train_ds.epoch = epoch
        gen = torch.Generator().manual_seed(job.seed * 100003 + epoch + 7919 * self.round)
        n = self.steps_per_epoch(job) * job.batch_size
        if self.sample_weights is not None:
            sampler = WeightedRandomSampler(torch.as_tensor(self.sample_weights,
                                                            dtype=torch.double),
                                            n, replacement=True, generator=gen)
        else:   # fresh permutations, as many as the epoch needs
            sampler = torch.cat([torch.randperm(len(self.train_ds), generator=gen)
                                 for _ in range(math.ceil(n / max(len(self.train_ds), 1)))]
                                )[:n].tolist()
        return DataLoader(self.train_ds, batch_size=job.batch_size, sampler=sampler,
                          **self._loader_kw(device))

    def val_loader(self, device: str):
        from torch.utils.data import DataLoader

        if self.val_ds is None or not len(self.val_ds):
            return None
        return DataLoader(self.val_ds, batch_size=self.job.batch_size, shuffle=False,
                          **self._loader_kw(device))

    def loss(self, logits, target):
        from torch.nn import functional as F  # noqa: N812

        w = self._weight_tensor(logits.device)
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=w)
        return F.cross_entropy(logits, target.long(), weight=w)

    def _weight_tensor(self, device):
        if self.loss_weights is None:
            return None
        cached = getattr(self, "_weights_on", None)
        if cached is None or cached.device != device:
            import torch

            cached = self._weights_on = torch.as_tensor(self.loss_weights, device=device)
        return cached

    def train_step(self, network, batch, device: str):
        if self.round == 2:
            network.eval()   # only the last layer learns: batch-norm statistics stay too
        img, target = batch
        img = img.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        logits = network(img).float()
        return self.loss(logits, target), {}

    @property
    def tta(self) -> bool:
        """Trained with flips and 90° turns: scored on the mean over the 8 (``network.py``)."""
        return False

    def validate(self, network, loader, device: str, epoch: int) -> dict:
        import torch

        from .network import class_scores

        probs, targets, loss_sum, n = [], [], 0.0, 0
        for img, target in loader:
            img, target = img.to(device), target.to(device)
            logits = network(img).float()
            loss_sum += float(self.loss(logits, target)) * len(img)
            n += len(img)
            p = (class_scores(network, img, self.multi_label, True) if self.tta
                 else torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, 1))
            probs.append(p.cpu().numpy())
            targets.append(target.cpu().numpy())
        probs_a, targets_a = np.concatenate(probs), np.concatenate(targets)
        beta = float(self.job.beta)
        if self.multi_label:
            self.thresholds = tune_thresholds(probs_a, targets_a, beta)
        else:
            self.offsets = tune_offsets(probs_a, targets_a)
        m = classification_metrics(probs_a, targets_a, self.names, self.multi_label,
                                   getattr(self, "thresholds", None), beta, self.offsets)
        row = {"val_loss": loss_sum / max(n, 1), "val_macro_f1": m["macro_f1"],
               f"val_macro_f{beta:g}": m["macro_fbeta"],
               "val_macro_ap": float(np.mean([v["ap"] for v in m["per_class"].values()]))}
        row["val_ranking"] = row["val_macro_ap"] - LOSS_TIE_BREAK * row["val_loss"]
        if self.multi_label:
            row[f"val_samples_f{beta:g}"] = m["samples_fbeta"]
        else:
            row["val_accuracy"] = m["accuracy"]
        for name, v in m["per_class"].items():
            for key in ("precision", "recall", "f1", "ap"):
                row[f"{key}_{name}"] = v[key]
        return {**row, "_extra": {"validation": m}}

    def card_fields(self) -> dict:
        fields = {"architecture": self.architecture, "multi_label": self.multi_label,
                  "input_size": int(self.input_size), "beta": float(self.job.beta),
                  "tta": self.tta}
        if self.multi_label:
            fields["thresholds"] = list(getattr(self, "thresholds", None)
                                        or [0.5] * len(self.classes))
        else:
            fields["decision_offsets"] = list(self.offsets or [0.0] * len(self.classes))
        fields["class_balance"] = str(getattr(self.job, "class_balance", "none"))
        return fields

    def summary_metrics(self, row: dict, extra: dict | None) -> dict:
        out = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        if extra and extra.get("validation"):
            out["validation"] = {k: v for k, v in extra["validation"].items()
                                 if k != "confusion_matrix"}
        return out

    def report_section(self, best_row: dict, extra: dict | None) -> str:
        if not extra or not extra.get("validation"):
            return ""
        return metrics_markdown(extra["validation"], "Validation (best model)")


# -- grid models --------------------------------------------------------------------------------
class GridTask(ClassificationTask):
    """ENVI's grid model: multi-label classes per grid cell of a labelled raster."""

    name = "grid"
    title = "Grid model"
    multi_label = True
    curve_keys = ("val_macro_f1",)
    curve_title = "Macro F1 (validation)"
    length_knobs = "EPOCHS or STEPS_PER_EPOCH"

    def prepare(self, job, ctx, log_folder: Path) -> None:

        from ..sampling import SamplingConfig, plan_patches, sources_from_project
        from ..sampling.sources import project_classes
        from .balance import inverse_frequency_weights, multi_hot_keys
        from .data import CellDataset
        from .gridcells import cell_targets
        from .gridwindows import grid_batch, grid_steps, scan_windows

        job.batch_size = grid_batch(job)   # BATCH_SIZE 0: the size used, in the log and card
        self.job, self.ctx = job, ctx
        ctx.progress("prepare", 0, 3, "Label rasters")
        sources = sources_from_project(job.project, str(log_folder / "label_rasters"), ctx)
        classes = project_classes(job.project)
        if not classes:
            from ..errors import UserError

            raise UserError("The labeling project has no classes.",
                            "Add classes and labels in the Labeling Tool.")
        self.classes = [{"id": cid, "name": name, "color": color}
                        for cid, name, color in classes]
        ids = [c["id"] for c in self.classes]
        config = SamplingConfig(patch_size=job.grid_size, split=job.split, shuffle=job.shuffle,
                                seed=job.seed,
                                feature_patch_percentage=job.feature_patch_percentage,
                                background_patch_ratio=job.background_patch_ratio,
                                pad_small_features=job.pad_small_features)
        ctx.progress("prepare", 1, 3, "Grid cells")
        plan = plan_patches(sources, config, class_names={c["id"]: c["name"]
                                                          for c in self.classes},
                            cancelled=lambda: ctx.cancelled)
        for w in plan.warnings:
            ctx.log(w, "warning")

        def targets(patches):
            return np.stack([cell_targets(p.class_pixels, ids, job.min_cover,
                                          job.pad_small_features) for p in patches]) \
                if patches else np.zeros((0, len(ids)), np.float32)

        train, val = plan.split("train"), plan.split("validation")
        if not train:
            from ..errors import UserError

            raise UserError("No grid cell to train on.",
                            "Label features on the rasters, or use a smaller grid size.")
        t_train, t_val = targets(train), targets(val)
        per_class = {n: int(v) for n, v in zip(self.names, t_train.sum(0))}
        ctx.log(f"Grid cells: {len(train)} training, {len(val)} validation; training cells per "
                f"class: {per_class}; background cells: {int((t_train.sum(1) == 0).sum())}.")
        empty = [n for n, count in per_class.items() if not count]
        if empty:
            ctx.log(f"No training cell holds {', '.join(empty)} (each needs at least "
                    f"{job.min_cover:g} of a cell): the model cannot learn "
                    f"{'it' if len(empty) == 1 else 'them'}. Label more, lower MIN_COVER or use "
                    "a smaller grid size.", "warning")
        self.describe_training_data(ctx, sources, train)
        self.input_size = job.grid_size
        self.train_count = len(train)
        self.per_epoch = grid_steps(job, len(train))
        balance = job.class_balance
        weights = (inverse_frequency_weights(multi_hot_keys(t_train))
                   if balance == "sampling" else None)
        self.loss_weights = (balance_weights(t_train, len(ids), True)
                             if balance == "weights" else None)
        self.windows = scan_windows(sources, train, val, job.grid_size, weights)
        augment = (job.augment_flip, job.augment_rotation, job.augment_scale)
        self.train_ds = CellDataset(sources, [], None, self.mean, self.std, augment, job.seed,
                                    windows=self.windows,
                                    rule=(ids, job.min_cover, job.pad_small_features))
        self.val_ds = CellDataset(sources, val, t_val, self.mean, self.std) if val else None
        self.cells = {"train": len(train), "validation": len(val)}

    def train_loader(self, epoch: int, device: str):
        """Fresh random windows around the training cells (``gridwindows.py``), each with its
        own augmentation."""
        from torch.utils.data import DataLoader

        job = self.job
        rng = np.random.default_rng([job.seed, epoch, 29])
        self.train_ds.patches = self.windows.draw(self.per_epoch * job.batch_size, rng)
        self.train_ds.epoch = epoch
        return DataLoader(self.train_ds, batch_size=job.batch_size, shuffle=False,
                          **self._loader_kw(device))

    @property
    def tta(self) -> bool:
        return bool(self.job.augment_flip)

    def card_fields(self) -> dict:
        return {**super().card_fields(), "grid_size": int(self.job.grid_size),
                "min_cover": float(self.job.min_cover),
                "pad_small_features": bool(self.job.pad_small_features)}


# -- chip classifiers ---------------------------------------------------------------------------
class ChipTask(ClassificationTask):
    """GBDX / Planet chip classifier; ``round`` 1 or 2 (see the module docstring)."""

    name = "chip_classification"
    title = "Chip classifier"
    best_metric = "val_ranking"      # see the module docstring
    best_mode = "max"
    curve_keys = ("val_macro_f1",)
    curve_title = "Macro F1 (validation)"
    length_knobs = "EPOCHS or TRAIN_SIZE"

    def __init__(self, round: int = 1, data=None) -> None:   # noqa: A002 - GBDX's term
        self.round = round
        self.data = data

    def prepare(self, job, ctx, log_folder: Path) -> None:
        from .chipsplit import chip_steps, prepare_chip_data
        from .data import ChipDataset

        self.job, self.ctx = job, ctx
        self.multi_label = bool(job.multi_label)
        if self.data is None:
            self.data = prepare_chip_data(job, ctx, log_folder)
        d = self.data
        self.classes, self.bands, self.dtype = d.classes, d.bands, d.dtype
        self.crs, self.pixel_size, self.nodata = d.crs, d.pixel_size, None
        self.mean, self.std = d.mean, d.std
        self.side, self.resize = d.side, d.resize
        self.input_size = d.resize or d.side
        train = d.splits["train"]
        balance = getattr(job, "class_balance", "none")
        self.sample_weights = self.loss_weights = None
        if self.round == 1 and (job.two_rounds or balance == "sampling"):
            self.sample_weights = d.balanced_weights()
        elif self.round == 1 and balance == "weights":
            self.loss_weights = balance_weights(d.targets("train"), len(d.classes),
                                                self.multi_label)
        self.per_epoch = chip_steps(job, len(train), self.round)
        self.train_count = self.per_epoch * job.batch_size
        if self.round == 2:
            self.length_knobs = "EPOCHS_2 or TRAIN_SIZE_2"
        self.train_ds = ChipDataset(train, d.targets("train"), d.side, d.resize, d.mean, d.std,
                                    self.multi_label, augment=job.augment, seed=job.seed)
        val = d.splits["validation"]
        self.val_ds = ChipDataset(val, d.targets("validation"), d.side, d.resize, d.mean,
                                  d.std, self.multi_label) if val else None

    @property
    def tta(self) -> bool:
        return bool(self.job.augment)

    def card_fields(self) -> dict:
        return {**super().card_fields(), "min_side": int(self.job.min_side),
                "max_side": int(self.side), "resize": int(self.resize),
                "round": int(self.round), "box_size": float(self.data.box_size)}
