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
"""

from __future__ import annotations

import json
import os
import re
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


def build_label_raster(project: LabelingProject, raster: TrainingRaster | str | Path,
                       out_path: str | Path, grid: RasterGrid | None = None) -> dict:
    """Burn ``project``'s labels onto ``raster``'s grid into ``out_path``; return a report.

    The file is written to a temporary name and moved into place, so an existing label raster is
    never left half-written.
    """
    import numpy as np
    from affine import Affine
    from rasterio.features import rasterize

    path = raster.path if isinstance(raster, TrainingRaster) else str(raster)
    grid = grid or read_grid(path)
    classes = {c.id: c for c in project.classes()}
    feats, outside = project.features_on(raster, grid)
    report: dict = {"raster": path, "raster_id": getattr(raster, "id", None),
                    "label_raster": str(out_path), "width": grid.width, "height": grid.height,
                    "features": 0, "outside": outside, "repaired": [], "invalid": [],
                    "unknown_class": [], "pixels": {}, "ignore_pixels": 0, "warnings": []}

    # per class: shapes burned by pixel centre, shapes burned by touched pixels
    centre: dict[int, list] = {}
    touched: dict[int, list] = {}
    for f in feats:
        cls = classes.get(f.class_id)
        if cls is None:
            report["unknown_class"].append(f.ref)
            continue
        if not f.geometry:
            report["invalid"].append(f.ref)
            continue
        gpx = gm.to_ogr({"type": f.geometry["type"],
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
                centre.setdefault(cls.id, []).append(gm.to_geojson(part))
                continue
            touched.setdefault(cls.id, []).append(gm.to_geojson(part))
            if cls.solid_distance > 0:
                disc = part.Buffer(cls.solid_distance + DISTANCE_TOLERANCE_PX, BUFFER_SEGMENTS)
                centre.setdefault(cls.id, []).append(gm.to_geojson(disc))

    shape = (grid.height, grid.width)
    labels = np.zeros(shape, np.uint8)
    identity = Affine.identity()
    for cid in sorted(set(centre) | set(touched)):  # ascending: the higher class id wins
        if cid in centre:
            rasterize(centre[cid], out=labels, transform=identity, default_value=cid,
                      all_touched=False)
        if cid in touched:
            rasterize(touched[cid], out=labels, transform=identity, default_value=cid,
                      all_touched=True)

    write_label_raster(out_path, labels, path, list(classes.values()), project.path)
    report["pixels"], report["ignore_pixels"] = pixel_report(labels, list(classes.values()))
    name = Path(path).name
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


def write_label_raster(out_path: str | Path, labels: Any, raster_path: str,
                       classes: list[LabelClass], project_path: str | Path) -> None:
    """Write ``labels`` (uint8, raster's shape) as the label raster of ``raster_path``: its grid,
    ``IGNORE`` where the raster is nodata, a colour table of the classes; atomically."""
    import rasterio

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with rasterio.open(raster_path) as src:
        for _, window in src.block_windows(1):
            mask = src.dataset_mask(window=window)
            rows, cols = window.toslices()
            labels[rows, cols][mask == 0] = IGNORE
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": "uint8", "crs": src.crs, "transform": src.transform,
                   "nodata": IGNORE, "compress": "deflate"}
        if src.width >= 256 and src.height >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(labels, 1)
            dst.write_colormap(1, _colormap(classes))
            dst.update_tags(classes=json.dumps({c.id: c.name for c in classes}),
                            ignore_value=str(IGNORE), project=str(project_path))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def pixel_report(labels: Any, classes: list[LabelClass]) -> tuple[dict, int]:
    """({class name: pixel count, 'background': n}, ignore pixel count)."""
    import numpy as np

    counts = np.bincount(labels.ravel(), minlength=256)
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
        rep = build_label_raster(project, r, out, grid)
        rep["role"] = r.role
        for w in rep["warnings"]:
            ctx.log(w, "warning")
        ctx.artifact("label_raster", str(out))
        reports.append(rep)
        write_manifest(project, folder, reports)
    ctx.progress("raster", len(rasters), len(rasters), "Label rasters written")
    return reports


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
