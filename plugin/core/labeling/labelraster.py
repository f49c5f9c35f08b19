"""Label rasters: the labels of a project burned onto each training raster's exact pixel grid.

Rules (docs/labeling_project.md):
- one single-band uint8 GeoTIFF per raster, same CRS, transform, width and height;
- 0 background, 1..N class ids, 255 (``IGNORE``) where every band of the raster is nodata (or
  masked);
- polygons are filled: a pixel is labelled when its centre lies inside the polygon;
- points and lines are burned with their class's solid distance ``d`` in pixels, measured in the
  raster's pixel space: every pixel the geometry touches, plus every pixel whose centre lies
  within ``d`` pixels of it (a point with ``d`` = 3 is a disc of radius 3 px; ``d`` = 0 gives the
  touched pixels only);
- where labels overlap, the higher class id wins (whatever the geometry type);
- labels outside the raster are skipped and counted; invalid geometries are repaired
  (``MakeValid``) and reported, unrepairable ones skipped and reported by feature.
Blur distance is not burned: the training engine reads it from the class table.

Rasters are processed window by window (``WINDOW_SIZE`` pixels a side): only the labels near a
window are burned into it, the raster's nodata mask is read for that window only, and GDAL's
block cache is kept small while writing, so memory does not grow with the raster's size. The
result does not depend on the window size.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jobs import JobContext
from . import geom as gm
from .grid import RasterGrid, read_grid
from .project import LabelClass, LabelingProject, TrainingRaster

IGNORE = 255
BACKGROUND = 0
DISTANCE_TOLERANCE_PX = 1e-3  # pixel centres exactly at the solid distance are inside
BUFFER_SEGMENTS = 16          # segments per quarter circle of a buffer
MANIFEST = "label_rasters.json"
WINDOW_SIZE = 2048            # label rasters are built in windows of this many pixels a side
BAND_ROWS = 256               # rows of a window masked and written at a time
GDAL_CACHE_BYTES = 16 * 2**20  # GDAL's block cache while writing one (finished tiles go to disk)


def label_raster_path(folder: str | Path, raster: TrainingRaster | str | Path) -> Path:
    """Where the label raster of ``raster`` goes in ``folder``: '<stem>_r<id>_labels.tif' for a
    project raster (unique even when stems repeat), '<stem>_labels.tif' for a bare path."""
    if isinstance(raster, TrainingRaster):
        return Path(folder) / f"{_safe(Path(raster.path).stem)}_r{raster.id}_labels.tif"
    return Path(folder) / f"{_safe(Path(raster).stem)}_labels.tif"


def _safe(stem: str) -> str:
    return re.sub(r"[^\w.-]+", "_", stem).strip("_") or "raster"


def _to_pixels(coords: Any, gt: tuple) -> Any:
    """GeoJSON coordinates mapped to (col, row) pixel space of a north-up geotransform."""
    if coords and isinstance(coords[0], (int, float)):
        return [(coords[0] - gt[0]) / gt[1], (coords[1] - gt[3]) / gt[5]]
    return [_to_pixels(c, gt) for c in coords]


@dataclass
class _Burns:
    """What to burn, in pixel space, in burning order: ascending class id, and per class first
    the shapes burned by pixel centre, then those burned by touched pixels (so the higher class
    id wins). ``envelopes`` holds (minx, maxx, miny, maxy) per shape for the window prefilter."""

    keys: list[tuple[int, bool]] = field(default_factory=list)  # (class id, all_touched)
    shapes: list[dict] = field(default_factory=list)
    envelopes: list[tuple[float, float, float, float]] = field(default_factory=list)

    def add(self, class_id: int, all_touched: bool, geometry: Any) -> None:
        self.keys.append((class_id, all_touched))
        self.shapes.append(gm.to_geojson(geometry))
        self.envelopes.append(gm.envelope(geometry))

    def ordered(self) -> _Burns:
        order = sorted(range(len(self.keys)), key=lambda i: self.keys[i])
        return _Burns([self.keys[i] for i in order], [self.shapes[i] for i in order],
                      [self.envelopes[i] for i in order])


def _burns(feats: list, classes: dict[int, LabelClass],
           grid: RasterGrid, report: dict) -> _Burns:
    """The shapes of ``feats`` in ``grid``'s pixel space (repaired, split by geometry family,
    points and lines buffered by their class's solid distance); problems go to ``report``."""
    burns = _Burns()
    for f in feats:
        cls = classes.get(f.class_id)
        if cls is None:
            report["unknown_class"].append(f.ref)
            continue
        if not f.geometry:
            report["invalid"].append(f.ref)
            continue
        gpx = gm.to_shape({"type": f.geometry["type"],
                        "coordinates": _to_pixels(f.geometry["coordinates"], grid.geotransform)})
        gpx, repaired = gm.repair(gpx)
        if gpx is None:
            report["invalid"].append(f.ref)
            continue
        if repaired:
            report["repaired"].append(f.ref)
        report["features"] += 1
        for fam, part in gm.split_by_family(gpx):
            if fam == "polygons":
                burns.add(cls.id, False, part)
                continue
            burns.add(cls.id, True, part)
            if cls.solid_distance > 0:
                disc = part.buffer(cls.solid_distance + DISTANCE_TOLERANCE_PX,
                                   quad_segs=BUFFER_SEGMENTS)
                burns.add(cls.id, False, disc)
    return burns.ordered()


def _windows(width: int, height: int, size: int) -> Iterator[Any]:
    """Row-major ``size`` x ``size`` windows covering a ``width`` x ``height`` grid."""
    from rasterio.windows import Window

    for r0 in range(0, height, size):
        for c0 in range(0, width, size):
            yield Window(c0, r0, min(size, width - c0), min(size, height - r0))


def _burn_window(burns: _Burns, envelopes: Any, window: Any, out: Any) -> None:
    """Rasterize into ``out`` (the window's array) the shapes whose envelope meets the window
    (1 px margin: a shape touching the window's edge can touch its pixels)."""
    import numpy as np
    from affine import Affine
    from rasterio.features import rasterize
    from rasterio.windows import transform as window_transform

    if not len(burns.keys):
        return
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    near = np.flatnonzero((envelopes[:, 0] <= c1 + 1) & (envelopes[:, 1] >= c0 - 1)
                          & (envelopes[:, 2] <= r1 + 1) & (envelopes[:, 3] >= r0 - 1))
    # pixel space: the window's transform is the translation to its corner
    transform = window_transform(window, Affine.identity())
    for (cid, touched), group in itertools.groupby(near, key=lambda i: burns.keys[i]):
        rasterize([burns.shapes[i] for i in group], out=out, transform=transform,
                  default_value=cid, all_touched=touched)


def build_label_raster(project: LabelingProject, raster: TrainingRaster | str | Path,
                       out_path: str | Path, grid: RasterGrid | None = None,
                       window_size: int = WINDOW_SIZE, ctx: JobContext | None = None) -> dict:
    """Burn ``project``'s labels onto ``raster``'s grid into ``out_path``; return a report.

    The raster is processed in ``window_size`` x ``window_size`` windows (memory stays bounded
    whatever the raster's size; the result does not depend on the window size). The file is
    written to a temporary name and moved into place, so an existing label raster is never left
    half-written (not on failure, not on cancel).
    """
    import numpy as np

    if window_size < 1:
        raise ValueError("window_size must be at least 1")
    ctx = ctx or JobContext()
    path = raster.path if isinstance(raster, TrainingRaster) else str(raster)
    grid = grid or read_grid(path)
    classes = {c.id: c for c in project.classes()}
    feats, outside = project.features_on(raster, grid)
    report: dict = {"raster": path, "raster_id": getattr(raster, "id", None),
                    "label_raster": str(out_path), "width": grid.width, "height": grid.height,
                    "features": 0, "outside": outside, "repaired": [], "invalid": [],
                    "unknown_class": [], "pixels": {}, "ignore_pixels": 0, "warnings": []}
    burns = _burns(feats, classes, grid, report)
    envelopes = np.asarray(burns.envelopes, float).reshape(-1, 4)
    counts = np.zeros(256, np.int64)
    with _LabelRasterWriter(out_path, path, list(classes.values()), project.path) as writer:
        for window in _windows(grid.width, grid.height, window_size):
            ctx.check_cancelled()
            labels = np.zeros((window.height, window.width), np.uint8)
            _burn_window(burns, envelopes, window, labels)
            writer.write(labels, window)
            counts += value_counts(labels)
    report["pixels"], report["ignore_pixels"] = _pixel_report(counts, list(classes.values()))
    name = Path(path).name
    if report["ignore_pixels"] >= grid.width * grid.height:
        report["warnings"].append(
            f"Raster {name} holds no valid pixel ({writer.validity}): every pixel is nodata, "
            "so it adds nothing to training. Check its nodata value (or alpha band) and fix it, "
            "or remove the raster from the project.")
    if report["features"] == 0:
        report["warnings"].append(f"Raster {name} has no labels: its label raster is all "
                                  "background. Draw labels on it or remove it from the project.")
    if report["outside"]:
        report["warnings"].append(f"{report['outside']} label(s) lie outside raster {name} and "
                                  "were skipped there.")
    if report["repaired"]:
        report["warnings"].append(f"Invalid geometries repaired on {name}: "
                                  f"{', '.join(report['repaired'])}.")
    if report["invalid"]:
        report["warnings"].append(f"Invalid geometries skipped on {name} (fix them): "
                                  f"{', '.join(report['invalid'])}.")
    if report["unknown_class"]:
        report["warnings"].append(f"Labels with no valid class skipped on {name} (set their "
                                  f"class): {', '.join(report['unknown_class'])}.")
    return report


class _LabelRasterWriter:
    """Writes a label raster window by window on ``raster_path``'s grid: ``IGNORE`` where the
    raster is nodata (its mask read for that window only), tiled, deflate compressed, with a
    colour table of the classes. Written to '<name>.part' and moved into place on success;
    removed on failure or cancel."""

    def __init__(self, out_path: str | Path, raster_path: str, classes: list[LabelClass],
                 project_path: str | Path) -> None:
        self.out = Path(out_path)
        self.tmp = self.out.with_name(self.out.name + ".part")
        self.raster_path = raster_path
        self.classes = classes
        self.project_path = project_path
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _LabelRasterWriter:
        import rasterio

        self.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            # GDAL keeps written tiles in its block cache until the file is closed unless the
            # cache is full: a small cache makes memory independent of the raster's size
            self._stack.enter_context(_gdal_cache(GDAL_CACHE_BYTES))
            self.src = self._stack.enter_context(rasterio.open(self.raster_path))
            src = self.src
            profile = {"driver": "GTiff", "width": src.width, "height": src.height,
                       "count": 1, "dtype": "uint8", "crs": src.crs, "transform": src.transform,
                       "nodata": IGNORE, "compress": "deflate"}
            if src.width >= 256 and src.height >= 256:
                profile.update(tiled=True, blockxsize=256, blockysize=256)
            self.dst = self._stack.enter_context(rasterio.open(self.tmp, "w", **profile))
            from ..validpixels import describe

            self.validity = describe(src)
        except BaseException:
            self._stack.close()
            self.tmp.unlink(missing_ok=True)
            raise
        return self

    def write(self, labels: Any, window: Any) -> None:
        """Write ``labels`` (uint8, the window's shape) at ``window``, after setting ``IGNORE``
        where the raster's pixels are not valid (``validpixels``; ``labels`` is changed in
        place)."""
        from rasterio.windows import Window

        from ..validpixels import valid_mask

        for r in range(0, window.height, BAND_ROWS):  # in bands: small temporaries
            rows = Window(window.col_off, window.row_off + r, window.width,
                          min(BAND_ROWS, window.height - r))
            band = labels[r:r + rows.height]
            band[~valid_mask(self.src, window=rows)] = IGNORE
            self.dst.write(band, 1, window=rows)

    def __exit__(self, exc_type, exc, tb) -> None:
        from ..outputs import gdal_write_guard

        try:
            with gdal_write_guard(self.out):    # blocks are flushed to disk on close
                try:
                    if exc_type is None:
                        self.dst.write_colormap(1, _colormap(self.classes))
                        self.dst.update_tags(ignore_value=str(IGNORE),
                                             project=str(self.project_path),
                                             classes=json.dumps({c.id: c.name
                                                                 for c in self.classes}))
                finally:
                    self._stack.close()
            if exc_type is None:
                os.replace(self.tmp, self.out)
        finally:
            self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _gdal_cache(nbytes: int) -> Iterator[None]:
    """GDAL's block cache limited to ``nbytes`` for the block, then set back (leaving a
    ``rasterio.Env`` alone keeps the last size set, whatever it was before)."""
    import rasterio
    from rasterio.env import get_gdal_config

    before = get_gdal_config("GDAL_CACHEMAX")
    try:
        with rasterio.Env(GDAL_CACHEMAX=nbytes):
            yield
    finally:
        with rasterio.Env(GDAL_CACHEMAX=before if before is not None else "5%"):
            pass


def write_label_raster(out_path: str | Path, labels: Any, raster_path: str,
                       classes: list[LabelClass], project_path: str | Path) -> None:
    """Write ``labels`` (uint8, the raster's shape) as the label raster of ``raster_path``: its
    grid, ``IGNORE`` where the raster is nodata, a colour table of the classes; atomically.
    ``labels`` gets ``IGNORE`` in place where the raster is nodata."""
    with _LabelRasterWriter(out_path, raster_path, classes, project_path) as writer:
        for window in _windows(labels.shape[1], labels.shape[0], WINDOW_SIZE):
            rows, cols = window.toslices()
            writer.write(labels[rows, cols], window)


def value_counts(values: Any, rows: int = 64) -> Any:
    """Occurrences of each value 0..255 in a uint8 array (counted in bands of ``rows`` rows so
    that the int64 copies ``numpy.bincount`` makes stay small)."""
    import numpy as np

    counts = np.zeros(256, np.int64)
    values = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values[None]
    for r0 in range(0, values.shape[0], rows):
        counts += np.bincount(values[r0:r0 + rows].ravel(), minlength=256)
    return counts


def pixel_report(labels: Any, classes: list[LabelClass]) -> tuple[dict, int]:
    """({class name: pixel count, 'background': n}, ignore pixel count)."""
    return _pixel_report(value_counts(labels), classes)


def _pixel_report(counts: Any, classes: list[LabelClass]) -> tuple[dict, int]:
    pixels = {c.name: int(counts[c.id]) for c in sorted(classes, key=lambda c: c.id)}
    pixels["background"] = int(counts[BACKGROUND])
    return pixels, int(counts[IGNORE])


def _colormap(classes: list[LabelClass]) -> dict[int, tuple[int, int, int, int]]:
    cmap = {BACKGROUND: (0, 0, 0, 0), IGNORE: (128, 128, 128, 0)}
    for c in classes:
        h = c.color.lstrip("#")
        cmap[c.id] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)
    return cmap


def check_ready(project: LabelingProject) -> list[RasterGrid]:
    """The grids of the project's rasters; a :class:`UserError` naming every problem that stops
    label rasters from being built (no classes, no rasters, no labels, bad rasters)."""
    if not project.classes():
        raise UserError(f"The labeling project {project.name} has no classes.",
                        "Add classes in the Labeling Tool (or import labels) first.")
    rasters = project.rasters()
    if not rasters:
        raise UserError(f"The labeling project {project.name} has no training rasters.",
                        "Add the rasters to label in the Labeling Tool (or give RASTERS when "
                        "importing labels).")
    if not project.label_counts():
        raise UserError(f"The labeling project {project.name} has no labels.",
                        "Draw labels in the Labeling Tool or import them first.")
    grids, problems = [], []
    for r in rasters:
        try:
            grids.append(read_grid(r.path))
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError(" ".join(problems))
    return grids


def build_label_rasters(project: LabelingProject, folder: str | Path,
                        ctx: JobContext | None = None) -> list[dict]:
    """One label raster per training raster of ``project`` in ``folder`` (see the module rules),
    plus ``label_rasters.json`` pairing each raster with its label raster. Returns the reports."""
    ctx = ctx or JobContext()
    grids = check_ready(project)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rasters = project.rasters()
    counts = project.label_counts()
    for c in project.classes():
        if not counts.get(c.id):
            ctx.log(f"Class {c.name!r} has no labels yet: no pixel will hold it.", "warning")
    reports = []
    for i, (r, grid) in enumerate(zip(rasters, grids)):
        ctx.check_cancelled()
        ctx.progress("raster", i, len(rasters), f"Burning labels onto {Path(r.path).name}")
        out = label_raster_path(folder, r)
        rep = build_label_raster(project, r, out, grid, ctx=ctx)
        rep["role"] = r.role
        record_label_raster(project, folder, reports, rep, out, ctx)
    ctx.progress("raster", len(rasters), len(rasters), "Label rasters written")
    return reports


def record_label_raster(project, folder, reports: list[dict], rep: dict, out, ctx) -> None:
    """Report one finished label raster: its warnings, the artifact, and the manifest so far."""
    for w in rep["warnings"]:
        ctx.log(w, "warning")
    ctx.artifact("label_raster", str(out))
    reports.append(rep)
    write_manifest(project, folder, reports)


def write_manifest(project: LabelingProject, folder: Path, reports: list[dict]) -> Path:
    """``label_rasters.json``: classes, ignore value and raster ↔ label raster pairs."""
    data = {
        "project": str(project.path),
        "ignore_value": IGNORE,
        "background_value": BACKGROUND,
        "classes": [{"id": c.id, "name": c.name, "color": c.color,
                     "solid_distance": c.solid_distance, "blur_distance": c.blur_distance}
                    for c in sorted(project.classes(), key=lambda c: c.id)],
        "rasters": [{"raster": r["raster"], "raster_id": r.get("raster_id"),
                     "role": r.get("role", "auto"), "label_raster": r["label_raster"]}
                    for r in reports],
    }
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
