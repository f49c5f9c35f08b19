"""Classify Grid: a grid model applied cell by cell to a raster → a GeoPackage layer of cells
(OUTPUT_LAYER, ``grid_cells``; the file's other layers are kept).

Cells of the model's ``grid_size`` px from the raster's top-left corner (the last row and column
may reach past the edge; the part outside is filled with the band means and the polygon is
clipped to the raster). Cells whose pixels are all nodata are skipped (no feature). Nodata
pixels inside a cell are set to the band means (0 after normalisation).

Fields: ``row``, ``col`` (cell indices), ``class`` (the top class when it passes its threshold,
else ``background``), ``score`` (the top class's score), ``classes`` (the classes passing
their thresholds, comma-separated), ``score_<class>`` per class and the cell's area
(``area_m2``, on the ellipsoid for a geographic CRS: :func:`..areas.area_and_length`;
``area_px`` for an ungeoreferenced image). Thresholds: THRESHOLD, or
with 0 the per-class thresholds tuned on validation (model card). TTA (default on): the scores
of a model trained with flips and turns are the mean over the 8 flips/turns of the cell
(``network.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..areas import area_field, areas
from ..errors import UserError
from ..gridfilter import cell_windows, predict_cells, thresholds_of
from ..jobs import JobContext

BACKGROUND = "background"


def classify_grid(job, ctx: JobContext) -> dict:
    import shapely

    from ..raster_input import check_input, is_georeferenced, open_raster
    from ..vector_output import write_vector_layer
    from .network import load_for_job

    started = time.monotonic()
    predictor, card, device = load_for_job(job, "grid")
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
    with open_raster(job.input) as src:
        check_input(src, card, ctx.log)
        size = int(card["grid_size"])
        total = len(cell_windows(src.height, src.width, size))
        crs_wkt = src.crs.to_wkt() if src.crs else None
        georeferenced = is_georeferenced(src)
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
    fields = ["row", "col", "class", "score", "classes"] + [f"score_{n}" for n in names] + [
        area_field(crs_wkt, georeferenced)]
    data = [np.asarray(rows["row"], np.int32), np.asarray(rows["col"], np.int32),
            np.asarray(rows["class"], dtype=object), np.asarray(rows["score"], np.float64),
            np.asarray(rows["classes"], dtype=object)] + [score[:, k] for k in range(len(names))
                                                          ] + [areas(geoms, crs_wkt)]
    write_vector_layer(out, job.output_layer, shapely.to_wkb(np.array(geoms, dtype=object)),
                       dict(zip(fields, data)), crs_wkt, "Polygon")
    ctx.artifact("output", str(out))
    return {"output": str(out), "output_layer": job.output_layer,
            "cells": total, "cells_classified": len(geoms),
            "cells_skipped_nodata": total - len(geoms), "per_class": counts,
            "classes": card["classes"], "thresholds": [float(v) for v in th],
            "device": device, "seconds": round(time.monotonic() - started, 2)}
