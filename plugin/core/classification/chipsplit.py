"""The chips a chip classifier trains, validates and tests on.

INPUT is a chips folder (see ``chips.py``) or a labeling project, whose label features are
first cut into chips as Export Training Chips does in the GBDX format (into
``<log folder>/chips``; points: a ``box_size`` px square).

Sides (GBDX): chips with a side longer than ``max_side`` or shorter than ``min_side`` px are
left out; the others are zero-padded to ``max_side × max_side`` and resized to ``resize`` when it
is set. ``max_side`` 0 takes the longest chip side found.

Splits, drawn with ``seed``: chips the export put in a test / validation split keep it. The
others are drawn in units: georeferenced chips (every one with a position, as Export Training
Chips writes them) in spatial blocks, squares of :data:`BLOCK_CHIPS` × the median chip width by
their centres, so overlapping neighbours (chips cut every half chip) fall on the same side but
at a block's edge, and validation measures the model on places it has not seen; other chips
one by one. The test set is
the ``test`` chips, else whole units drawn at random while they fit in ``test_size`` chips and
:data:`TEST_SHARE` of all (a small set keeps its chips for training). The validation set is the
exported validation chips, else ``100 − split`` % of the remaining units, chosen to hold every
class they can without taking a class's last training unit
(:func:`..sampling.plan.class_covering`: a rare class is then validated, and its decision offset
tuned). Training uses the remaining chips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .chips import Chip, ChipSet, check_chips, read_chips_folder

PROJECT_MAX_SIDE = 150    # px: GBDX's default maximum side when chips are cut from a project
TEST_SHARE = 0.1          # largest share of the chips held out as the test set (TEST_SIZE)
BLOCK_CHIPS = 2           # side of a spatial block of the split, in chip widths


@dataclass
class ChipData:
    chipset: ChipSet
    multi_label: bool
    side: int
    resize: int
    splits: dict[str, list[Chip]]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    box_size: float = 25.0

    @property
    def classes(self) -> list[dict]:
        palette = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628",
                   "#f781bf", "#999999", "#66c2a5", "#ffd92f"]
        return [{"id": k, "name": n,
                 "color": self.chipset.colors.get(n, palette[k % len(palette)])}
                for k, n in enumerate(self.chipset.class_names)]

    @property
    def bands(self) -> int:
        return self.chipset.bands

    @property
    def dtype(self) -> str:
        return self.chipset.dtype

    @property
    def crs(self):
        return self.chipset.crs

    @property
    def pixel_size(self):
        return self.chipset.pixel_size

    def targets(self, split: str) -> np.ndarray:
        """(N,) class index or (N, C) multi-hot of a split's chips."""
        return chip_targets(self.splits[split], self.chipset.class_names, self.multi_label)

    def balanced_weights(self) -> np.ndarray:
        """Per training chip sampling weight ∝ 1 / its class frequency (multi-label: mean over
        its tags, no tag counting as one more class), so classes are drawn balanced."""
        from .balance import inverse_frequency_weights

        return inverse_frequency_weights([c.labels for c in self.splits["train"]])


def chip_targets(chips: list[Chip], names: list[str], multi_label: bool) -> np.ndarray:
    index = {n: k for k, n in enumerate(names)}
    if multi_label:
        out = np.zeros((len(chips), len(names)), np.float32)
        for i, c in enumerate(chips):
            for t in c.labels:
                out[i, index[t]] = 1.0
        return out
    return np.array([index[c.labels[0]] for c in chips], np.int64)


def chips_from_project(job, ctx, folder: Path) -> Path:
    """Cut the project's label features into GBDX chips in ``folder``; returns it."""
    from ..sampling.export import export_chips, load_project_input, prepare_output
    from ..sampling.exporters.common import ExportOptions
    from ..sampling.plan import SamplingConfig

    ctx.log(f"Cutting chips around the labels of {Path(job.input).name} into {folder}.")
    out = prepare_output(folder, overwrite=True)
    work = folder.parent / "chips_work"
    work.mkdir(parents=True, exist_ok=True)
    data = load_project_input(job.input, work, ctx, labels=False, features=True)
    options = ExportOptions(format="gbdx", box_size=float(job.box_size),
                            min_side=int(job.min_side),
                            max_side=int(job.max_side or PROJECT_MAX_SIDE), resize=0)
    export_chips(data, out, SamplingConfig(split=job.split, seed=job.seed), options, ctx,
                 parameters={"kind": "gbdx chips for " + job.kind})
    return out


def select_chips(job, ctx, log_folder: Path) -> tuple[ChipSet, dict[str, list[Chip]], int]:
    """Read, check, filter and split the chips of ``job`` (see the module rules): (chip set,
    {train, validation, test}: chips, the maximum side in px). Warns on ``ctx`` about chips
    left out for their size and classes without a training chip; UserError when no chip is
    left for training. Shared by training and the pre-flight summary."""
    source = Path(job.input)
    if source.is_file():
        source = chips_from_project(job, ctx, Path(log_folder) / "chips")
    chipset = read_chips_folder(source, list(job.classes or []), bool(job.multi_label))
    ctx.log(f"{len(chipset.chips)} chips ({chipset.layout} layout), classes: "
            f"{', '.join(chipset.class_names)}.")
    check_chips(chipset)
    sides = [c.side for c in chipset.chips]
    max_side = int(job.max_side) or max(max(s) for s in sides)
    kept = [c for c in chipset.chips if max(c.side) <= max_side and min(c.side) >= job.min_side]
    dropped = len(chipset.chips) - len(kept)
    if dropped:
        ctx.log(f"{dropped} chip(s) left out: a side outside {job.min_side}–{max_side} px "
                "(MIN_SIDE, MAX_SIDE).", "warning")
    if not kept:
        raise UserError(f"No chip has sides between {job.min_side} and {max_side} px.",
                        "Raise MAX_SIDE or lower MIN_SIDE.")
    chipset.chips = kept
    splits = split_chips(kept, job.split, job.test_size, job.seed)
    if not splits["train"]:
        raise UserError("No chip is left for training after the test and validation sets.",
                        "Lower TEST_SIZE or raise the training split.")
    ctx.log("Chips: " + ", ".join(f"{len(v)} {k}" for k, v in splits.items()) + ".")
    absent = [n for n in chipset.class_names if n not in {t for c in splits["train"]
                                                            for t in c.labels}]
    if absent:
        ctx.log(f"No training chip of class(es) {', '.join(absent)}.", "warning")
    return chipset, splits, max_side


def prepare_chip_data(job, ctx, log_folder: Path) -> ChipData:
    """Read, check, filter, split (:func:`select_chips`) and measure the chips of ``job``."""
    from .data import chip_statistics

    chipset, splits, max_side = select_chips(job, ctx, log_folder)
    mean, std = chip_statistics(splits["train"], seed=job.seed)
    return ChipData(chipset, bool(job.multi_label), max_side, int(job.resize), splits, mean,
                    std, float(getattr(job, "box_size", 25.0)))


def chip_steps(job, n_train: int, round: int = 1) -> int:   # noqa: A002 - GBDX's term
    """Batches per epoch of a chip classifier with ``n_train`` training chips: TRAIN_SIZE chips
    when set, else the automatic length (one pass, at least enough batches for 300 steps with
    the default epochs: :func:`..training.length.automatic_steps`); round 2 (two rounds):
    TRAIN_SIZE_2 chips, else half of round 1's."""
    from ..training.length import automatic_steps, least_batches
    from .defaults import CHIP_EPOCHS

    batch = max(int(job.batch_size), 1)
    first = (math.ceil(job.train_size / batch) if job.train_size
             else automatic_steps(n_train, batch, least=least_batches(CHIP_EPOCHS)))
    if round == 1:
        return first
    return math.ceil(job.train_size_2 / batch) if job.train_size_2 else max(1, first // 2)


def chip_summary(chipset: ChipSet, splits: dict[str, list[Chip]], max_side: int,
                 job=None) -> dict:
    """What a chip classifier would train, validate and test on: {"classes": names,
    "chips": {split: {class: chips}}, "totals": {split: chips}, "layout", "max_side" (px),
    "warnings": [sentences]} (the train dialog's pre-flight summary), and with the train
    ``job`` its "length" (:func:`..training.length.length_summary` of round 1; its warning
    below the few hundred steps a model needs is among the warnings)."""
    counts = {k: {n: 0 for n in chipset.class_names} for k in splits}
    for name, chips in splits.items():
        for chip in chips:
            for tag in chip.labels:
                if tag in counts[name]:
                    counts[name][tag] += 1
    warnings = []
    for split, label, what in (("train", "training", "learnt"),
                               ("validation", "validation", "validated")):
        missing = [c for c in chipset.class_names if not counts[split][c]]
        if not splits[split]:
            warnings.append(f"No {label} chip: the model cannot be {what}.")
        elif missing:
            warnings.append(f"No {label} chip of class(es) {', '.join(missing)}: "
                            f"{'they' if len(missing) > 1 else 'it'} cannot be {what}.")
    out = {"classes": list(chipset.class_names), "chips": counts,
           "totals": {k: len(v) for k, v in splits.items()}, "layout": chipset.layout,
           "max_side": int(max_side), "warnings": warnings}
    if job is not None:
        from ..training.length import length_summary

        out["length"] = length_summary(job.epochs, chip_steps(job, len(splits["train"])),
                                       job.batch_size, "EPOCHS or TRAIN_SIZE")
        if out["length"]["warning"]:
            warnings.append(out["length"]["warning"])
    return out


def chip_units(chips: list[Chip]) -> list[int]:
    """Split unit of each chip (0, 1, … in order of appearance): the spatial block (squares of
    :data:`BLOCK_CHIPS` × the median chip width, by the chip's centre) when every chip is
    georeferenced, else one unit per chip."""
    if not chips or any(c.centre is None or c.extent <= 0 for c in chips):
        return list(range(len(chips)))
    size = BLOCK_CHIPS * float(np.median([c.extent for c in chips]))
    index: dict[tuple[int, int], int] = {}
    return [index.setdefault((math.floor(c.centre[0] / size), math.floor(c.centre[1] / size)),
                             len(index)) for c in chips]


def split_chips(chips: list[Chip], split: float, test_size: int,
                seed: int) -> dict[str, list[Chip]]:
    """{train, validation, test} (see the module rules)."""
    from ..sampling.plan import class_covering, n_validation

    rng = np.random.default_rng(seed)
    test = [c for c in chips if c.split == "test"]
    val = [c for c in chips if c.split == "validation"]
    rest = [c for c in chips if c.split in ("auto", "train")]
    unit = chip_units(rest)
    members: dict[int, list[int]] = {}
    for i, u in enumerate(unit):
        members.setdefault(u, []).append(i)
    free = list(members)
    if not test and test_size > 0:
        n = min(int(test_size), int(len(rest) * TEST_SHARE))
        taken, total = [], 0
        for u in rng.permutation(free).tolist():
            if total + len(members[u]) <= n:
                taken.append(u)
                total += len(members[u])
        test = [c for i, c in enumerate(rest) if unit[i] in set(taken)]
        free = [u for u in free if u not in set(taken)]
    if not val and split < 100 and free:
        names = {t: k + 1 for k, t in enumerate(sorted({t for c in rest for t in c.labels}))}
        counts = [{names[t]: sum(t in rest[i].labels for i in members[u])
                   for i in members[u] for t in rest[i].labels} for u in free]
        picked = class_covering(counts, n_validation(len(free), split), rng)
        chosen = {free[k] for k in picked}
        val = [c for i, c in enumerate(rest) if unit[i] in chosen]
        free = [u for u in free if u not in chosen]
    keep = set(free)
    return {"train": [c for i, c in enumerate(rest) if unit[i] in keep], "validation": val,
            "test": test}
