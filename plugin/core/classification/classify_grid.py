"""Classify Grid: a grid model applied cell by cell to a raster → a GeoPackage of cells.

Cells of the model's ``grid_size`` px from the raster's top-left corner (the last row and column
may reach past the edge; the part outside is filled with the band means and the polygon is
clipped to the raster). Cells whose pixels are all nodata are skipped (no feature). Nodata
pixels inside a cell are set to the band means (0 after normalisation).

Fields: ``row``, ``col`` (cell indices), ``class`` (the top class when it passes its threshold,
else ``background``), ``score`` (the top class's score), ``classes`` (the classes passing
their thresholds, comma-separated) and ``score_<class>`` per class. Thresholds: THRESHOLD, or
with 0 the per-class thresholds tuned on validation (model card).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import JobCancelled, UserError
from ..jobs import JobContext

BACKGROUND = "background"


def cell_windows(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """(row index, col index, row0, col0) of every cell, row-major."""
    return [(ri, ci, r0, c0) for ri, r0 in enumerate(range(0, height, size))
            for ci, c0 in enumerate(range(0, width, size))]


def predict_cells(src, predictor, card: dict, batch_size: int, device: str = "cpu",
                  cancelled: Callable[[], bool] = lambda: False,
                  progress: Callable[[int, int], None] = lambda d, t: None
                  ) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """(ri, ci, row0, col0, scores (C,)) for every cell holding valid pixels of the open
    rasterio dataset ``src``."""
    import torch
    from rasterio.windows import Window

    from ..segmentation.classify import valid_mask

    size = int(card["grid_size"])
    fill = np.asarray(card["mean"], np.float32)[:, None, None]
    cells = cell_windows(src.height, src.width, size)
    batch: list = []

    def run():
        x = torch.from_numpy(np.stack([b[4] for b in batch])).to(device)
        with torch.inference_mode():
            scores = predictor(x).float().cpu().numpy()
        done = [(*b[:4], s) for b, s in zip(batch, scores)]
        batch.clear()
        return done

    for k, (ri, ci, r0, c0) in enumerate(cells):
        if cancelled():
            raise JobCancelled()
        h, w = min(size, src.height - r0), min(size, src.width - c0)
        win = Window(c0, r0, w, h)
        data = src.read(window=win)
        valid = valid_mask(src, data, win)
        if not valid.any():
            continue
        arr = np.broadcast_to(fill, (fill.shape[0], size, size)).copy()
        part = data.astype(np.float32)
        part = np.where(valid[None] & np.isfinite(part), part, fill)
        arr[:, :h, :w] = part
        batch.append((ri, ci, r0, c0, arr))
        if len(batch) == batch_size:
            yield from run()
            progress(k + 1, len(cells))
    if batch:
        yield from run()
    progress(len(cells), len(cells))


def thresholds_of(card: dict, threshold: float) -> np.ndarray:
    n = len(card["classes"])
    if threshold and threshold > 0:
        return np.full(n, float(threshold), np.float32)
    return np.asarray(card.get("thresholds") or [0.5] * n, np.float32)


def classify_grid(job, ctx: JobContext) -> dict:
    import rasterio
    from osgeo import ogr, osr

    from ..environment import resolve_device
    from .networks import load_classifier

    started = time.monotonic()
    predictor, card = load_classifier(job.model, "grid")
    device = resolve_device(job.device)
    predictor = predictor.to(device)
    names = [c["name"] for c in card["classes"]]
    th = thresholds_of(card, job.threshold)
    out = Path(job.output)
    if out.suffix.lower() != ".gpkg":
        raise UserError(f"The output {out.name} is not a GeoPackage.",
                        "Give OUTPUT a name ending in .gpkg.")
    ogr.UseExceptions()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.gpkg")
    drv = ogr.GetDriverByName("GPKG")
    if tmp.exists():
        drv.DeleteDataSource(str(tmp))
    counts = {n: 0 for n in [*names, BACKGROUND]}
    with rasterio.open(job.input) as src:
        if src.count != int(card["bands"]):
            raise UserError(f"The raster has {src.count} bands, the grid model "
                            f"{card['bands']}.", "Classify a raster with the training bands.")
        size = int(card["grid_size"])
        total = len(cell_windows(src.height, src.width, size))
        ctx.log(f"Classifying {total} cells of {size} px on {device}.")
        ds = drv.CreateDataSource(str(tmp))
        srs = None
        if src.crs:
            srs = osr.SpatialReference()
            srs.ImportFromWkt(src.crs.to_wkt())
        layer = ds.CreateLayer("grid_cells", srs, ogr.wkbPolygon)
        for name, kind in (("row", ogr.OFTInteger), ("col", ogr.OFTInteger),
                           ("class", ogr.OFTString), ("score", ogr.OFTReal),
                           ("classes", ogr.OFTString)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        for n in names:
            layer.CreateField(ogr.FieldDefn(f"score_{n}", ogr.OFTReal))
        layer.StartTransaction()
        written = 0
        for ri, ci, r0, c0, scores in predict_cells(
                src, predictor, card, job.batch_size, device, lambda: ctx.cancelled,
                lambda d, t: ctx.progress("cells", d, t, f"{d} of {t} cells")):
            top = int(np.argmax(scores))
            over = [n for n, s, t in zip(names, scores, th) if s >= t]
            cls = names[top] if scores[top] >= th[top] else BACKGROUND
            counts[cls] += 1
            f = ogr.Feature(layer.GetLayerDefn())
            f.SetField("row", ri)
            f.SetField("col", ci)
            f.SetField("class", cls)
            f.SetField("score", float(scores[top]))
            f.SetField("classes", ",".join(over))
            for n, s in zip(names, scores):
                f.SetField(f"score_{n}", float(s))
            h, w = min(size, src.height - r0), min(size, src.width - c0)
            t = src.transform
            ring = ogr.Geometry(ogr.wkbLinearRing)
            for cx, cy in ((c0, r0), (c0 + w, r0), (c0 + w, r0 + h), (c0, r0 + h), (c0, r0)):
                x, y = t * (cx, cy)
                ring.AddPoint_2D(x, y)
            poly = ogr.Geometry(ogr.wkbPolygon)
            poly.AddGeometry(ring)
            f.SetGeometry(poly)
            layer.CreateFeature(f)
            written += 1
        layer.CommitTransaction()
        ds = None
    os.replace(tmp, out)
    ctx.artifact("output", str(out))
    return {"output": str(out), "cells": total, "cells_classified": written,
            "cells_skipped_nodata": total - written, "per_class": counts,
            "classes": card["classes"], "thresholds": [float(v) for v in th],
            "device": device, "seconds": round(time.monotonic() - started, 2)}
