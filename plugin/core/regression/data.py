"""Pixel regression training data: the input rasters and their targets, target checks and
statistics, the spatial split, random training windows and the window dataset.

Targets. A target raster is single-band, on exactly its input raster's grid (CRS, size and
transform); its nodata, NaN and infinite pixels are not learnt, nor are the input's invalid pixels
(:mod:`..validpixels`). Points with a value are burned into a float32 target raster per input
raster (in the log folder): pixels whose centre lies within ``radius`` pixels of a point take its
value (the nearest point's where discs meet); all other pixels are nodata (NaN).

Split. Each raster is cut into a grid of ``size`` px blocks (the last flush with the edge); the
blocks holding target pixels of the rasters with role ``auto`` are drawn (seeded) into validation
in the share ``1 − split / 100``; a raster with role ``validation`` validates entirely, one with
role ``train`` trains entirely. Validation blocks are hidden from training (their targets are
masked out of every training window).

Windows. Each epoch draws new training windows centred (jittered by up to a quarter window) on a
random target pixel of the training area, flush with the raster edges, so sparse point targets
are seen as often as dense rasters.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..validpixels import data_band_count, read_data, valid_mask

IGNORE = 255           # mask value of pixels without a target (the labels' convention)
MAX_CENTRES = 200_000  # target pixels kept per raster as window centres (a random subset)


@dataclasses.dataclass
class RegressionSource:
    """One input raster and its target raster (float, single band)."""

    image: str
    target: str
    role: str = "auto"     # "auto" | "train" | "validation"
    name: str = ""

    @property
    def display_name(self) -> str:
        return self.name or Path(self.image).stem


@dataclasses.dataclass(frozen=True)
class Window:
    """A square window ``size`` px at (row, col) of ``sources[source]``."""

    source: int
    row: int
    col: int
    size: int


# -- sources and targets ------------------------------------------------------------------------
def input_rasters(job) -> list[tuple[str, str]]:
    """(path, role) of the job's input rasters: the labeling project's training rasters, or
    INPUT_RASTERS (role auto). UserError for a project without rasters."""
    if not job.project:
        return [(str(p), "auto") for p in job.rasters]
    from ..labeling.project import LabelingProject

    rasters = LabelingProject.open(job.project).rasters()
    if not rasters:
        raise UserError("The labeling project has no training rasters.",
                        "Add the rasters to learn from to the project, or give INPUT_RASTERS.")
    return [(r.path, r.role) for r in rasters]


def read_sources(job, folder: Path) -> list[RegressionSource]:
    """The (input raster, target raster, role) of ``job`` (a TrainPixelRegressionJob): its
    target rasters, or its points burnt into target rasters in ``folder/point_targets``; each
    target checked against its raster (:func:`check_target`). UserError when the counts
    differ or a target does not fit."""
    rasters = input_rasters(job)
    if job.points:
        targets = burn_points([p for p, _ in rasters], job.points, job.value_field,
                              job.radius, Path(folder) / "point_targets")
    else:
        targets = [str(t) for t in job.targets]
        if len(targets) != len(rasters):
            raise UserError(f"{len(targets)} target raster(s) for the {len(rasters)} "
                            "training raster(s) of the labeling project.",
                            "Give one target raster per training raster, in the "
                            "project's order.")
    sources = [RegressionSource(p, t, role) for (p, role), t in zip(rasters, targets)]
    for src in sources:
        check_target(src.image, src.target)
    return sources


def target_value(value) -> float | None:
    """A raster's nodata as a float, or None (NaN nodata is None: NaN is never a target)."""
    return None if value is None or np.isnan(value) else float(value)


def check_target(image: str, target: str) -> None:
    """UserError unless ``target`` is a single-band raster on exactly ``image``'s grid (CRS,
    width × height, transform to 1e-6 of a pixel)."""
    import rasterio

    with rasterio.open(image) as img, rasterio.open(target) as tgt:
        name, tname = Path(image).name, Path(target).name
        fix = (f"Resample the target onto the grid of {name} (GDAL Warp with its CRS, extent "
               "and pixel size, e.g. Raster ▸ Projections ▸ Warp).")
        if tgt.count != 1:
            raise UserError(f"The target raster {tname} has {tgt.count} bands; a target holds "
                            "one value per pixel.", "Give a single-band target raster.")
        if (img.crs or None) != (tgt.crs or None):
            raise UserError(f"The target raster {tname} is in another CRS "
                            f"({tgt.crs.to_string() if tgt.crs else 'none'}) than {name} "
                            f"({img.crs.to_string() if img.crs else 'none'}).", fix)
        same = (img.width, img.height) == (tgt.width, tgt.height) and img.transform.almost_equals(
            tgt.transform, precision=1e-6 * max(abs(img.transform.a), 1e-12))
        if not same:
            raise UserError(f"The target raster {tname} ({tgt.width} × {tgt.height} px, pixel "
                            f"{abs(tgt.transform.a):g}) is not on the grid of {name} "
                            f"({img.width} × {img.height} px, pixel {abs(img.transform.a):g}).",
                            fix)


def read_window(ds, win: Window, bands: bool) -> tuple[np.ndarray, np.ndarray]:
    """(data, valid) of ``win`` in the open dataset ``ds``: the data bands (``bands``) as
    float32 (C, S, S) or the first band (S, S), 0 and not valid outside the raster; ``valid``:
    the input's valid pixels (``bands``) or the target's finite non-nodata ones."""
    from rasterio.windows import Window as RioWindow

    s = win.size
    count = data_band_count(ds) if bands else 1
    out = np.zeros((count, s, s), np.float32)
    valid = np.zeros((s, s), bool)
    r0, c0 = max(win.row, 0), max(win.col, 0)
    r1, c1 = min(win.row + s, ds.height), min(win.col + s, ds.width)
    if r1 > r0 and c1 > c0:
        w = RioWindow(c0, r0, c1 - c0, r1 - r0)
        rows, cols = slice(r0 - win.row, r1 - win.row), slice(c0 - win.col, c1 - win.col)
        if bands:
            data = read_data(ds, window=w)
            ok = valid_mask(ds, data, w)
        else:
            data = ds.read(1, window=w)[None]
            ok = np.isfinite(data[0])
            nodata = target_value(ds.nodata)
            if nodata is not None:
                ok &= data[0] != nodata
        out[:, rows, cols] = np.where(np.isfinite(data), data, 0)
        valid[rows, cols] = ok
    return (out if bands else out[0]), valid


def target_statistics(sources: list[RegressionSource], block: int = 1024
                      ) -> tuple[float, float, int]:
    """(mean, std, pixels) of the valid target values of ``sources`` (read ``block`` rows at a
    time). UserError naming a target raster without any valid value."""
    import rasterio

    total = sq = 0.0
    count = 0
    for src in sources:
        n_here = 0
        with rasterio.open(src.target) as ds:
            nodata = target_value(ds.nodata)
            for r0 in range(0, ds.height, block):
                from rasterio.windows import Window as RioWindow

                data = ds.read(1, window=RioWindow(0, r0, ds.width, min(block, ds.height - r0)))
                data = data.astype(np.float64)
                ok = np.isfinite(data) if nodata is None else np.isfinite(data) & (data != nodata)
                vals = data[ok]
                total += float(vals.sum())
                sq += float((vals ** 2).sum())
                n_here += int(ok.sum())
        if not n_here:
            raise UserError(f"The target raster {Path(src.target).name} holds no value: every "
                            "pixel is nodata.",
                            "Check its nodata value, or give the target that belongs to "
                            f"{src.display_name}.")
        count += n_here
    mean = total / count
    std = float(np.sqrt(max(sq / count - mean * mean, 0.0)))
    return mean, (std if std > 1e-12 else 1.0), count


def burn_points(images: list[str], points: str, field: str, radius: int, folder: Path
                ) -> list[str]:
    """Float32 target rasters (NaN = no target) on the grids of ``images`` from the points of
    the vector file ``points`` and their numeric ``field``: pixels within ``radius`` px of a
    point take its value (the nearest point's). Written into ``folder``; returns their paths.
    UserError for a missing or non-numeric field, or when no point lies on any raster."""
    import rasterio
    import shapely
    from pyogrio.raw import read
    from pyproj import CRS, Transformer
    from scipy.ndimage import distance_transform_edt

    meta, _, wkb, fields = read(str(points))
    names = list(meta["fields"])
    if field not in names:
        raise UserError(f"The points {Path(points).name} have no field {field!r}.",
                        f"Choose VALUE_FIELD among: {', '.join(names) or 'none'}.")
    values = fields[names.index(field)]
    if values.dtype.kind not in "iuf":
        raise UserError(f"The field {field!r} of {Path(points).name} holds "
                        f"{values.dtype} values, not numbers.", "Choose a numeric VALUE_FIELD.")
    geoms = shapely.from_wkb(wkb)
    keep = ~shapely.is_empty(geoms) & np.isfinite(values.astype(np.float64))
    xy = shapely.get_coordinates(shapely.centroid(geoms[keep]))
    values = values[keep].astype(np.float32)
    point_crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    folder.mkdir(parents=True, exist_ok=True)
    out, placed = [], 0
    for k, image in enumerate(images):
        with rasterio.open(image) as ds:
            profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": 1,
                       "dtype": "float32", "crs": ds.crs, "transform": ds.transform,
                       "nodata": float("nan"), "compress": "deflate"}
            x, y = xy[:, 0], xy[:, 1]
            if point_crs is not None and ds.crs is not None and point_crs != CRS(ds.crs):
                x, y = Transformer.from_crs(point_crs, CRS(ds.crs), always_xy=True).transform(x, y)
            cols, rows = ~ds.transform * (np.asarray(x), np.asarray(y))
            cols, rows = np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64)
            inside = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
            target = np.full((ds.height, ds.width), np.nan, np.float32)
            if inside.any():
                seeds = np.zeros((ds.height, ds.width), bool)
                index = np.full((ds.height, ds.width), -1, np.int64)
                seeds[rows[inside], cols[inside]] = True
                index[rows[inside], cols[inside]] = np.flatnonzero(inside)
                dist, (ri, ci) = distance_transform_edt(~seeds, return_indices=True)
                near = dist <= radius
                target[near] = values[index[ri[near], ci[near]]]
                placed += int(inside.sum())
        path = folder / f"target_{k}_{Path(image).stem}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(target, 1)
        out.append(str(path))
    if not placed:
        raise UserError(f"None of the {len(values)} points of {Path(points).name} lies on the "
                        "input rasters.", "Give points inside the rasters (any CRS: they are "
                        "reprojected).")
    return out


def learnt_pixels(src: RegressionSource, block: int = 1024) -> np.ndarray:
    """(H, W) bool: the pixels of ``src`` with a target value and a valid input, read ``block``
    rows at a time."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    with rasterio.open(src.image) as img, rasterio.open(src.target) as tgt:
        out = np.zeros((img.height, img.width), bool)
        nodata = target_value(tgt.nodata)
        for r0 in range(0, img.height, block):
            win = RioWindow(0, r0, img.width, min(block, img.height - r0))
            values = tgt.read(1, window=win)
            ok = np.isfinite(values) if nodata is None else np.isfinite(values) & (
                values != nodata)
            out[r0:r0 + win.height] = ok & valid_mask(img, read_data(img, window=win), win)
    return out


# -- split and windows --------------------------------------------------------------------------
def block_starts(length: int, size: int) -> list[int]:
    """Starts of ``size`` px blocks covering ``length`` px, the last flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


@dataclasses.dataclass
class Split:
    """The validation windows, the boxes they hide from training (source → [(r0, c0, r1,
    c1)]), the training window centres (source, row, col) int32 and the raster shapes."""

    validation: list[Window]
    hidden: dict[int, list[tuple[int, int, int, int]]]
    centres: np.ndarray
    shapes: dict[int, tuple[int, int]]
    train_pixels: int


def split_windows(sources: list[RegressionSource], size: int, split: float, seed: int
                  ) -> Split:
    """The spatial split of the module docstring. UserError when no training pixel is left."""
    rng = np.random.default_rng([seed, 31])
    blocks: list[tuple[Window, int]] = []   # (window, target pixels)
    shapes, masks = {}, {}
    for sid, src in enumerate(sources):
        masks[sid] = learnt_pixels(src)
        h, w = shapes[sid] = masks[sid].shape
        for r in block_starts(h, size):
            for c in block_starts(w, size):
                n = int(masks[sid][r:r + size, c:c + size].sum())
                if n:
                    blocks.append((Window(sid, r, c, size), n))
    val = [w for w, _ in blocks if sources[w.source].role == "validation"]
    auto = [w for w, _ in blocks if sources[w.source].role == "auto"]
    n_val = int(round(len(auto) * (100.0 - split) / 100.0)) if len(auto) > 1 else 0
    if n_val:
        pick = rng.choice(len(auto), n_val, replace=False)
        val += [auto[i] for i in sorted(pick)]
    hidden: dict[int, list] = {}
    for w in val:
        hidden.setdefault(w.source, []).append((w.row, w.col, w.row + size, w.col + size))
        masks[w.source][w.row:w.row + size, w.col:w.col + size] = False
    parts = []
    for sid, m in masks.items():
        if sources[sid].role == "validation":
            continue
        rr, cc = np.nonzero(m)
        if len(rr) > MAX_CENTRES:
            keep = rng.choice(len(rr), MAX_CENTRES, replace=False)
            rr, cc = rr[keep], cc[keep]
        parts.append(np.stack([np.full(len(rr), sid), rr, cc], 1).astype(np.int32))
    centres = np.concatenate(parts) if parts else np.zeros((0, 3), np.int32)
    train_pixels = int(sum(m.sum() for sid, m in masks.items()
                           if sources[sid].role != "validation"))
    if not len(centres):
        raise UserError("No target pixel is left for training once the validation blocks are "
                        "taken.", "Raise the split (SPLIT), give more targets or a smaller "
                        "patch size.")
    return Split(val, hidden, centres, shapes, train_pixels)


def draw_windows(split: Split, size: int, n: int, rng: np.random.Generator) -> list[Window]:
    """``n`` training windows centred on random training target pixels (module docstring)."""
    picks = split.centres[rng.integers(len(split.centres), size=n)]
    j = size // 4
    jitter = rng.integers(-j, j + 1, size=(n, 2))
    out = []
    for (sid, r, c), (dr, dc) in zip(picks.tolist(), jitter.tolist()):
        h, w = split.shapes[sid]
        row = min(max(r + dr - size // 2, 0), max(h - size, 0))
        col = min(max(c + dc - size // 2, 0), max(w - size, 0))
        out.append(Window(sid, row, col, size))
    return out


class WindowDataset:
    """Torch map-style dataset of windows: (image (C, S, S) float32 normalised with ``mean`` /
    ``std``, 0 where invalid; target (1, S, S) float32 normalised with ``target_mean`` /
    ``target_std``, 0 where not learnt; mask (S, S) uint8: 0 learnt, IGNORE not). ``hidden``:
    source → boxes whose targets are masked (the validation blocks). Datasets are opened lazily,
    one handle per process."""

    def __init__(self, sources: list[RegressionSource], windows: list[Window], mean, std,
                 target_mean: float, target_std: float,
                 hidden: dict[int, list[tuple[int, int, int, int]]] | None = None) -> None:
        self.sources, self.windows = list(sources), list(windows)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.hidden = hidden or {}
        self._open: dict = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict:   # picklable for spawned DataLoader workers
        return {**self.__dict__, "_open": {}, "_pid": None}

    def _ds(self, path: str):
        import os

        import rasterio

        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if path not in self._open:
            self._open[path] = rasterio.open(path)
        return self._open[path]

    def __getitem__(self, index: int):
        import torch

        win = self.windows[index]
        src = self.sources[win.source]
        image, valid = read_window(self._ds(src.image), win, bands=True)
        target, ok = read_window(self._ds(src.target), win, bands=False)
        ok &= valid
        for r0, c0, r1, c1 in self.hidden.get(win.source, ()):
            rs = slice(max(r0 - win.row, 0), max(min(r1 - win.row, win.size), 0))
            cs = slice(max(c0 - win.col, 0), max(min(c1 - win.col, win.size), 0))
            ok[rs, cs] = False
        image = (image - self.mean) / self.std
        image[:, ~valid] = 0.0
        target = np.where(ok, (target - self.target_mean) / self.target_std, 0.0)
        mask = np.where(ok, 0, IGNORE).astype(np.uint8)
        return (torch.from_numpy(np.ascontiguousarray(image, np.float32)),
                torch.from_numpy(target.astype(np.float32)[None]), torch.from_numpy(mask))
