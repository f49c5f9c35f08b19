"""The interface a model family implements to be trained by :func:`..engine.run_training`.

A family subclasses :class:`TrainingTask` and supplies its data, network, loss, metrics and report
section; the engine owns everything else (epochs, optimiser, LR schedule, AMP, checkpoints,
resume, early stopping, cancel, TensorBoard/CSV/progress, learning curves, report, model card).

Call order, for one run: ``prepare`` → ``build_network`` → ``steps_per_epoch`` → ``val_loader``
→ per epoch: ``train_loader(epoch)`` and ``train_step`` per batch → ``end_train_epoch`` →
``refresh_average`` → ``validate`` (when there is validation data) → ``summary_metrics`` /
``report_section`` at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError


class TrainingTask:
    """One model family's part of training. Set the attributes below in :meth:`prepare`."""

    name: str = ""                   # model-file task, e.g. "pixel_segmentation"
    title: str = ""                  # for the report heading, e.g. "Pixel segmentation"
    best_metric: str = "val_loss"    # key of the epoch row that ranks models
    best_mode: str = "min"           # "min" or "max"
    curve_keys: tuple[str, ...] = ()  # row keys of the second learning-curve panel
    curve_title: str = ""
    length_knobs: str = "EPOCHS"     # the job parameters that lengthen training, for the warning

    # set by prepare() (the model card stores them)
    classes: list[dict]              # [{id, name, color}]
    bands: int
    mean: list[float]
    std: list[float]
    nodata: float | None = None
    dtype: str | None = None
    pixel_size: tuple[float, float] | None = None   # map units per pixel (x, y)
    crs: str | None = None

    # -- what a family must implement ----------------------------------------------------------
    def prepare(self, job, ctx, log_folder: Path) -> None:
        """Read labels, plan the samples, compute band statistics; set the attributes above.
        Raise UserError for anything the user must fix (before any training)."""
        raise NotImplementedError

    def build_network(self, base_card: dict | None):
        """A torch.nn.Module; ``base_card``: the card of the model to resume or fine-tune from
        (the engine loads its fitting weights afterwards; see :meth:`adopt_card`)."""
        raise NotImplementedError

    def steps_per_epoch(self, job) -> int:
        """Optimiser steps (batches) per epoch: the engine's LR schedule and progress use it."""
        raise NotImplementedError

    def train_loader(self, epoch: int, device: str) -> Iterable[Any]:
        """The batches of ``epoch`` (0-based); may draw fresh random samples every epoch."""
        raise NotImplementedError

    def train_step(self, network, batch, device: str):
        """Forward pass and loss of one batch: ``(loss: 0-d Tensor, terms: dict[str, Tensor])``.
        ``terms`` (loss parts) are averaged per epoch into ``train_<key>`` columns. The engine
        runs this under autocast and does backward, the optimiser step and the schedule."""
        raise NotImplementedError

    # -- optional ------------------------------------------------------------------------------
    def val_loader(self, device: str) -> Iterable[Any] | None:
        """Validation batches (iterated once per epoch), or None: then the last model is the
        best model."""
        return None

    def validate(self, network, loader, device: str, epoch: int) -> dict:
        """Flat scalars for the epoch row (``val_loss``, ``val_miou``, per-class keys …), run
        under ``torch.no_grad`` and autocast with the network in eval mode. May hold
        ``"_images": [(tag, HWC uint8 array)]`` (TensorBoard) and ``"_extra"``: a JSON-ready
        dict kept for the best epoch, merged into report.json and given to
        :meth:`report_section` / :meth:`summary_metrics`."""
        return {}

    def unranked_reason(self) -> str:
        """Why the validation data are too few to rank epochs (a sentence), or "" when they can
        (the default): the engine then keeps the last epoch's model as the best model, still
        validating and reporting every epoch, and the card's ``state.best_rule`` says so."""
        return ""

    def unranked_fix(self) -> str:
        """The advice that ends the warning of :meth:`unranked_reason` (a sentence)."""
        return ("Label more in the validation area, or lower the split, to choose the best "
                "epoch by validation.")

    def refresh_average(self, network, device: str, epoch: int) -> None:
        """Adjust the averaged ``network`` (in eval mode, under ``torch.no_grad``) after each
        training epoch, before it is validated and saved; default: nothing. Pixel regression
        recomputes its BatchNorm statistics here (its unbounded output suffers from statistics
        averaged over earlier weights)."""

    def saved_network(self, network):
        """The network to write to the model file for the averaged ``network`` (validated);
        default: itself. Pixel segmentation adds its prior offsets to a copy's output bias."""
        return network

    def started_from(self, network, card: dict, fresh: int) -> None:
        """Adjust ``network`` just loaded from the model file of ``card`` (fine-tune, resume;
        ``fresh``: tensors that did not fit and start fresh) before training goes on; default:
        nothing. Pixel segmentation takes its prior offsets off the output bias."""

    def end_train_epoch(self) -> dict:
        """Scalars about the training epoch just run (``train_miou``, ``class_weight`` …); may
        hold ``"_extra"`` (used when there is no validation)."""
        return {}

    def card_fields(self) -> dict:
        """Task-specific model-card fields (architecture, patch size, thresholds …)."""
        return {}

    def validation_areas(self) -> dict[str, list[list]]:
        """Where the validation data lie: ``{raster path: [[xmin, ymin, xmax, ymax], …]}`` in
        each raster's CRS (:func:`..sampling.plan.patch_areas`); recorded in the model card so
        that Suggest Areas to Label keeps out of them. By default the bounds of
        ``self.val_patches`` on the sources of ``self.data`` or ``self.setup`` (what the
        families that plan patches keep); none known otherwise (whole validation rasters are
        still kept out by their role)."""
        patches = getattr(self, "val_patches", None)
        holder = getattr(self, "data", None) or getattr(self, "setup", None)
        sources = getattr(holder, "sources", None)
        if not patches or not sources:
            return {}
        from ..sampling.plan import patch_areas

        return patch_areas(patches, sources)

    def summary_metrics(self, row: dict, extra: dict | None) -> dict:
        """The metrics of the best model for the model card and the result (default: the
        row's numbers)."""
        return {k: v for k, v in row.items() if isinstance(v, (int, float))}

    def report_section(self, best_row: dict, extra: dict | None) -> str:
        """Markdown for report.md below the run summary."""
        return ""

    # -- helpers for subclasses ----------------------------------------------------------------
    def describe_rasters(self, image) -> None:
        """Set ``bands``, ``crs``, ``dtype`` and ``pixel_size`` from the training raster
        ``image`` (a path): ``bands`` counts its DATA bands (an alpha band is a mask, not data,
        :mod:`..validpixels`), as every family's patch reader reads them."""
        import rasterio

        from ..validpixels import data_band_count

        with rasterio.open(image) as ds:
            self.bands, res = data_band_count(ds), ds.res
            self.crs = ds.crs.to_string() if ds.crs else None
            self.dtype = ds.dtypes[0]
        self.pixel_size = (abs(res[0]), abs(res[1]))

    def describe_training_data(self, ctx, sources: list, train_patches: list) -> None:
        """:meth:`describe_rasters` of the first source, then the per-band ``mean``, ``std``
        and ``nodata`` of the sources the training patches come from
        (:func:`..sampling.statistics.band_statistics`: the normalisation the card keeps),
        reported as step 2 of 3 of "prepare". ``sources``: the plan's sources (``.image``
        paths); ``train_patches``: patches with a ``source`` index."""
        from ..sampling.statistics import band_statistics

        ctx.progress("prepare", 2, 3, "Band statistics")
        self.describe_rasters(sources[0].image)
        used = sorted({p.source for p in train_patches})
        self.mean, self.std, self.nodata = band_statistics([sources[i] for i in used])

    def adopt_card(self, card: dict) -> None:
        """Take the normalisation of the model started from (fine-tune / resume); UserError when
        its band count differs from the training rasters'."""
        if int(card["bands"]) != int(self.bands):
            raise UserError(f"The model to start from has {card['bands']} bands, the training "
                            f"rasters {self.bands}.", "Start from a model with the same bands.")
        self.mean, self.std, self.nodata = card["mean"], card["std"], card.get("nodata")

    def apply_start_weights(self, base_card: dict | None, start) -> None:
        """Fill the fresh network as START_WEIGHTS says (:mod:`.start_weights`), unless the run
        starts from a model (``base_card``: fine-tune or resume): ``start()`` loads them and
        returns the line for the log ("" for random)."""
        if base_card is None:
            line = start()
            if line:
                self.ctx.log(line)

