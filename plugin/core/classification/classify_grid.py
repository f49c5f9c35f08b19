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
    import shapely
    from pyogrio.raw import write

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
    counts = {n: 0 for n in [*names, BACKGROUND]}
    rows: dict[str, list] = {k: [] for k in ("row", "col", "class", "score", "classes")}
    scores_all: list[np.ndarray] = []
    geoms = []
    with rasterio.open(job.input) as src:
        if src.count != int(card["bands"]):
            raise UserError(f"The raster has {src.count} bands, the grid model "
                            f"{card['bands']}.", "Classify a raster with the training bands.")
        size = int(card["grid_size"])
        total = len(cell_windows(src.height, src.width, size))
        crs_wkt = src.crs.to_wkt() if src.crs else None
        ctx.log(f"Classifying {total} cells of {size} px on {device}.")
        t = src.transform
        for ri, ci, r0, c0, scores in predict_cells(
                src, predictor, card, job.batch_size, device, lambda: ctx.cancelled,
                lambda d, n: ctx.progress("cells", d, n, f"{d} of {n} cells")):
            top = int(np.argmax(scores))
            cls = names[top] if scores[top] >= th[top] else BACKGROUND
            counts[cls] += 1
            for key, value in (("row", ri), ("col", ci), ("class", cls),
                               ("score", float(scores[top])),
                               ("classes", ",".join(n for n, v, k in zip(names, scores, th)
                                                    if v >= k))):
                rows[key].append(value)
            scores_all.append(scores)
            h, w = min(size, src.height - r0), min(size, src.width - c0)
            geoms.append(shapely.Polygon([t * (c0, r0), t * (c0 + w, r0),
                                          t * (c0 + w, r0 + h), t * (c0, r0 + h)]))
    score = np.asarray(scores_all, np.float64).reshape(-1, len(names))
    fields = ["row", "col", "class", "score", "classes"] + [f"score_{n}" for n in names]
    data = [np.asarray(rows["row"], np.int32), np.asarray(rows["col"], np.int32),
            np.asarray(rows["class"], dtype=object), np.asarray(rows["score"], np.float64),
            np.asarray(rows["classes"], dtype=object)] + [score[:, k] for k in range(len(names))]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.gpkg")
    tmp.unlink(missing_ok=True)
    try:
        write(str(tmp), shapely.to_wkb(np.array(geoms, dtype=object)), data, fields,
              layer="grid_cells", driver="GPKG", geometry_type="Polygon", crs=crs_wkt)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    ctx.artifact("output", str(out))
    return {"output": str(out), "cells": total, "cells_classified": len(geoms),
            "cells_skipped_nodata": total - len(geoms), "per_class": counts,
            "classes": card["classes"], "thresholds": [float(v) for v in th],
            "device": device, "seconds": round(time.monotonic() - started, 2)}
