"""Importing labels the user already has: a vector layer with a class field, or a classified raster.

- :func:`import_vector_labels`: every vector GDAL reads through pyogrio (GeoPackage, Shapefile,
  GeoJSON, …); each distinct
  value of the class field becomes a class (reused when a class of that name exists); polygons,
  points, lines and their multi-geometries import, reprojected into the project CRS.
- :func:`import_label_raster`: a classified raster (land-cover map) straight into label rasters,
  through a value → class table, resampled (nearest) onto each training raster's grid.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jobs import JobContext
from . import geom as gm
from .grid import read_grid
from .labelraster import (
    IGNORE,
    label_raster_path,
    pixel_report,
    record_label_raster,
    write_label_raster,
)
from .project import LabelingProject


def open_or_create(project_path: str | Path, rasters: list[str] | tuple[str, ...] = (),
                   fallback_crs: str | None = None) -> tuple[LabelingProject, bool]:
    """(project, created): open ``project_path`` or create it in the first raster's CRS (else
    ``fallback_crs``), then add ``rasters`` to it."""
    p = Path(project_path)
    created = False
    if p.exists():
        project = LabelingProject.open(p)
    else:
        if rasters:
            crs = gm.crs_text(read_grid(rasters[0]).srs)
        elif fallback_crs:
            crs = fallback_crs
        else:
            raise UserError(f"Cannot create {p.name}: no raster and no CRS to take its CRS from.",
                            "Give the training rasters (RASTERS).")
        project = LabelingProject.create(p, crs)
        created = True
    for r in rasters:
        project.add_raster(r)
    return project, created


def class_key(value: Any) -> str | None:
    """The class name for a field value: text stripped, whole numbers without '.0'; None for
    missing values."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def _sort_key(name: str) -> tuple:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name.lower())


def _open_vector(source: str | Path) -> tuple[str, str | int, dict]:
    """(path, layer, pyogrio layer info) for 'path' or QGIS-style 'path|layername=name'."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    text = str(source)
    path, _, opts = text.partition("|")
    match = re.search(r"layername=([^|]+)", opts)
    if not Path(path).exists():
        raise UserError(f"The label file {path} does not exist.", "Check the path.")
    try:
        layers = pyogrio.list_layers(path)
    except DataSourceError:
        layers = []
    if len(layers) == 0:
        raise UserError(f"{Path(path).name} is not a vector file OGR can read.",
                        "Give a GeoPackage, Shapefile, GeoJSON or other vector file.")
    layer: str | int = match.group(1) if match else 0
    try:
        info = pyogrio.read_info(path, layer=layer)
    except (DataLayerError, DataSourceError):
        raise UserError(f"{Path(path).name} has no layer {layer!r}.",
                        "Check the layer name.") from None
    return path, layer, info


def _fmt_box(box) -> str:
    x0, y0, x1, y1 = box
    return f"{x0:.6g}, {y0:.6g} – {x1:.6g}, {y1:.6g}"


def _check_overlap(project, rows: list[tuple[str, Any]], name: str, label_crs: str | None,
                   ctx: JobContext) -> None:
    """Refuse labels of which none overlaps a training raster of the project (a wrong CRS, the
    usual cause), naming both extents; warn when only some lie outside every raster."""
    from .grid import read_grid

    boxes = []
    for raster in project.rasters():
        try:
            box = project._bbox_of(read_grid(raster.path))
        except UserError:
            continue
        if box is not None:
            boxes.append(box)
    if not boxes:
        return
    outside = 0
    lx0 = ly0 = math.inf
    lx1 = ly1 = -math.inf
    for _, g in rows:
        minx, miny, maxx, maxy = g.bounds
        lx0, ly0, lx1, ly1 = min(lx0, minx), min(ly0, miny), max(lx1, maxx), max(ly1, maxy)
        if not any(minx <= b[2] and maxx >= b[0] and miny <= b[3] and maxy >= b[1]
                   for b in boxes):
            outside += 1
    rx0, ry0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    rx1, ry1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    extents = (f"the labels span {_fmt_box((lx0, ly0, lx1, ly1))}, the rasters "
               f"{_fmt_box((rx0, ry0, rx1, ry1))} (in the project CRS {project.crs})")
    declared = f"the label file declares {label_crs}" if label_crs else "the label file has no CRS"
    if outside == len(rows):
        raise UserError(f"None of the {len(rows)} label(s) in {name} overlaps a training raster: "
                        f"{extents}; {declared}.",
                        "Check the CRS of the label file (a wrong or missing CRS is the usual "
                        "cause: set the right one and import again), or add the rasters the "
                        "labels were drawn on.")
    if outside:
        ctx.log(f"{outside} of {len(rows)} label(s) in {name} lie outside every training raster "
                f"({extents}); they are kept but not used until a raster covers them.",
                "warning")


def import_vector_labels(project_path: str | Path, labels: str | Path, class_field: str,
                         rasters: list[str] | tuple[str, ...] = (),
                         ctx: JobContext | None = None) -> dict:
    """Import ``labels`` into the project at ``project_path`` (created if missing); return a
    report: classes (name → id), counts imported per layer, and what was skipped."""
    ctx = ctx or JobContext()
    import shapely
    from pyogrio.raw import read

    path, layer, info = _open_vector(labels)
    if not info.get("features"):
        which = f"layer {layer!r} of " if isinstance(layer, str) else ""
        raise UserError(f"The label {which}{Path(path).name} is empty: it holds no features.",
                        "Choose a layer with labels, or draw labels in the Labeling Tool.")
    fields = [str(f) for f in info["fields"]]
    if class_field not in fields:
        close = [f for f in fields if f.lower() == (class_field or "").lower()]
        if len(close) != 1:
            raise UserError(f"{Path(str(labels).split('|')[0]).name} has no field "
                            f"{class_field!r}.", f"Choose one of: {', '.join(fields) or 'none'}.")
        class_field = close[0]
    srs = gm.make_srs(info["crs"]) if info.get("crs") else None
    project, created = open_or_create(project_path, rasters,
                                      gm.crs_text(srs) if srs is not None else None)
    if srs is None:
        ctx.log("The labels have no CRS: they are taken to be in the project's CRS.", "warning")
    ct = gm.transformer(srs, gm.make_srs(project.crs)) if srs is not None else None

    rows: list[tuple[str, Any]] = []
    no_class = no_geometry = failed = 0
    _, _, wkb, (values,) = read(path, layer=layer, columns=[class_field])
    geoms = shapely.from_wkb(wkb, on_invalid="ignore") if len(wkb) else []
    for value, g in zip(values, geoms):
        name = class_key(value.item() if hasattr(value, "item") else value)
        if name is None:
            no_class += 1
            continue
        if g is None or g.is_empty or not gm.split_by_family(g):
            no_geometry += 1
            continue
        moved = gm.reproject(g, ct)
        if moved is None:
            failed += 1
            continue
        rows.append((name, moved))
    if not rows and failed:
        raise UserError(f"None of the {failed} label(s) in {Path(str(labels).split('|')[0]).name} "
                        "could be reprojected into the project's CRS.",
                        "Check the CRS of the label file (GeoJSON without 'crs' means WGS 84).")
    if not rows:
        raise UserError(f"No label in {Path(str(labels).split('|')[0]).name} has both a geometry "
                        f"and a value in {class_field!r}.", "Check the file and the class field.")

    _check_overlap(project, rows, Path(str(labels).split("|")[0]).name,
                   gm.crs_text(srs) if srs is not None else None, ctx)
    ids: dict[str, int] = {c.name: c.id for c in project.classes()}
    for name in sorted({n for n, _ in rows}, key=_sort_key):
        if name not in ids:
            ids[name] = project.add_class(name).id
    ctx.progress("import", 0, 1, f"Writing {len(rows)} labels")
    stored = project.add_features([(ids[n], g) for n, g in rows])
    imported = {"polygons": 0, "points": 0, "lines": 0}
    for f in stored:
        imported[f.layer] += 1
    ctx.progress("import", 1, 1, "Labels imported")
    skipped = {"no_class_value": no_class, "no_geometry": no_geometry, "reprojection": failed}
    for why, n in skipped.items():
        if n:
            ctx.log(f"{n} feature(s) skipped ({why.replace('_', ' ')}).", "warning")
    return {"project": str(project.path), "created": created,
            "classes": {n: ids[n] for n in sorted({n for n, _ in rows}, key=_sort_key)},
            "imported": imported, "skipped": skipped,
            "rasters": [r.path for r in project.rasters()]}


def parse_value_classes(table: dict | str) -> dict[float, str]:
    """A value → class name table from a dict or text (:func:`..perclass.parse_per_class`:
    '1=water, 2=forest' or '{"1": "water"}')."""
    from ..perclass import parse_per_class

    table = parse_per_class(table, "The value → class table (VALUE_CLASSES)", numbers=False)
    if not table:
        raise UserError("The value → class table is empty.", "Write pairs like 1=water, 2=forest.")
    out: dict[float, str] = {}
    for key, name in table.items():
        try:
            value = float(key)
        except (TypeError, ValueError):
            raise UserError(f"{key!r} in the value → class table is not a number.",
                            "Use the raster's numeric values as keys.") from None
        if not str(name).strip():
            raise UserError(f"Value {key} has no class name.", "Give every value a class name.")
        out[value] = str(name).strip()
    return out


def import_label_raster(project: LabelingProject, classified: str | Path,
                        value_classes: dict | str, folder: str | Path,
                        ctx: JobContext | None = None) -> list[dict]:
    """Label rasters for every training raster of ``project`` from a classified raster.

    Classes named in the table are added to the project when missing. Values not in the table
    become background (0); pixels outside the classified raster or nodata in it, and nodata of
    the training raster, become ignore (255).
    """
    import numpy as np
    import rasterio
    from rasterio.warp import Resampling, reproject

    ctx = ctx or JobContext()
    table = parse_value_classes(value_classes)
    read_grid(classified)  # clear messages for missing, rotated or ungeoreferenced rasters
    rasters = project.rasters()
    if not rasters:
        raise UserError(f"The labeling project {project.name} has no training rasters.",
                        "Add the rasters to label first.")
    grids = [read_grid(r.path) for r in rasters]
    ids = {c.name: c.id for c in project.classes()}
    for name in table.values():
        if name not in ids:
            ids[name] = project.add_class(name).id
    classes = project.classes()
    folder = Path(folder)
    reports: list[dict] = []
    with rasterio.open(classified) as src:
        src_nodata = src.nodata
        for i, (r, grid) in enumerate(zip(rasters, grids)):
            ctx.check_cancelled()
            ctx.progress("raster", i, len(rasters), f"Resampling onto {Path(r.path).name}")
            with rasterio.open(r.path) as dst_ds:
                dst_crs, dst_transform = dst_ds.crs, dst_ds.transform
            values = np.full((grid.height, grid.width), np.nan, np.float32)
            reproject(rasterio.band(src, 1), values, src_nodata=src_nodata,
                      dst_transform=dst_transform, dst_crs=dst_crs, dst_nodata=np.nan,
                      resampling=Resampling.nearest)
            labels = np.zeros(values.shape, np.uint8)
            for value, name in table.items():
                labels[values == value] = ids[name]
            labels[np.isnan(values)] = IGNORE
            known = np.isin(values, list(table)) | np.isnan(values)
            unmapped = sorted(float(v) for v in np.unique(values[~known])[:20])
            out = label_raster_path(folder, r)
            write_label_raster(out, labels, r.path, classes, project.path)
            pixels, ignore = pixel_report(labels, classes)
            rep = {"raster": r.path, "raster_id": r.id, "role": r.role,
                   "label_raster": str(out), "width": grid.width, "height": grid.height,
                   "pixels": pixels, "ignore_pixels": ignore, "unmapped_values": unmapped,
                   "warnings": []}
            if unmapped:
                rep["warnings"].append(f"Values {', '.join(f'{v:g}' for v in unmapped)} of "
                                       f"{Path(classified).name} are not in the table: they "
                                       f"became background on {Path(r.path).name}.")
            if ignore == grid.width * grid.height:
                rep["warnings"].append(f"{Path(classified).name} does not cover "
                                       f"{Path(r.path).name}: its label raster is all ignore.")
            record_label_raster(project, folder, reports, rep, out, ctx)
    ctx.progress("raster", len(rasters), len(rasters), "Label rasters written")
    return reports
