"""Score a Classify Grid result against a label raster of held-out cells, beside the trivial
baselines (bench and tests on real data).

Cells are those of Classify Grid (``grid_size`` px from the raster's top-left corner); a cell's
truth is :func:`.gridcells.cell_targets` of its label pixels, exactly as training labels cells.
"Background" (no class in the cell) is scored as one more class. Baselines per class: always
answering the class (the best constant answer for F1: ``2p / (1 + p)`` for a positive share
``p``), and the majority answer of the training cells (always yes when the class is in at least
half of them, else always no: F1 0).
"""

from __future__ import annotations

import numpy as np

from .gridcells import cell_targets
from .metrics import fbeta_counts

BACKGROUND = "background"


def cell_truth(labels: np.ndarray, valid: np.ndarray, class_ids: list[int], size: int,
               min_cover: float, pad_small_features: bool = False) -> dict[tuple[int, int],
                                                                            np.ndarray]:
    """{(row, col): (C,) float32 multi-hot} of every cell holding valid pixels.

    ``labels``: (H, W) integer label values (0 = background); ``valid``: (H, W) bool (inside
    the raster, not nodata); ``size``: cell side (px)."""
    out = {}
    for ri, r0 in enumerate(range(0, labels.shape[0], size)):
        for ci, c0 in enumerate(range(0, labels.shape[1], size)):
            v = valid[r0:r0 + size, c0:c0 + size]
            if not v.any():
                continue
            values, counts = np.unique(labels[r0:r0 + size, c0:c0 + size][v],
                                       return_counts=True)
            out[(ri, ci)] = cell_targets(dict(zip(values.tolist(), counts.tolist())),
                                         class_ids, min_cover, pad_small_features)
    return out


def with_background(multi_hot: np.ndarray) -> np.ndarray:
    """(N, C) → (N, C + 1) bool, the last column true where no class is."""
    m = np.asarray(multi_hot) > 0.5
    return np.concatenate([m, ~m.any(1, keepdims=True)], 1)


def f1(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(C,) F1 per column of (N, C) bool arrays (0 for a class never true nor predicted)."""
    tp = (pred & truth).sum(0)
    return fbeta_counts(tp, (pred & ~truth).sum(0), (~pred & truth).sum(0), 1.0)


def score_against_baselines(pred: np.ndarray, truth: np.ndarray, train_truth: np.ndarray,
                            names: list[str]) -> list[dict]:
    """One row per class and background: ``class``, ``cells`` (held-out cells holding it),
    ``f1`` (ours), ``f1_always`` (always the class), ``f1_majority`` (majority of the training
    cells). ``pred``, ``truth``: (N, C) multi-hot of the held-out cells; ``train_truth``:
    (M, C) of the training cells."""
    p, t, tr = with_background(pred), with_background(truth), with_background(train_truth)
    ours = f1(p, t)
    always = f1(np.ones_like(t), t)
    majority = f1(np.broadcast_to(tr.mean(0) >= 0.5, t.shape), t)
    return [{"class": name, "cells": int(t[:, k].sum()), "f1": float(ours[k]),
             "f1_always": float(always[k]), "f1_majority": float(majority[k])}
            for k, name in enumerate([*names, BACKGROUND])]


def _write(path, data: np.ndarray, profile: dict, transform):
    import rasterio

    prof = dict(profile, driver="GTiff", count=data.shape[0], dtype=str(data.dtype),
                height=data.shape[1], width=data.shape[2], transform=transform)
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        prof.pop(key, None)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(np.ascontiguousarray(data))
    return path


def train_left_classify_right(image: np.ndarray, profile: dict, labels: np.ndarray,
                              valid: np.ndarray, names: list[str], folder, ctx=None,
                              classify_kw: dict | None = None,
                              **job_kw) -> tuple[list[dict], dict]:
    """Train a grid model on the left part of a labelled raster, classify the right part with
    Classify Grid, and score the held-out cells (:func:`score_against_baselines`).

    ``image``: (bands, H, W) with ``profile`` (rasterio: transform, crs, nodata); ``labels``:
    (H, W) label values 1…len(names) for ``names`` (0 = background); ``valid``: (H, W) bool.
    The cut is the multiple of the grid size nearest the middle column, so no cell straddles
    it. ``job_kw``: :class:`.jobs.TrainGridModelJob` fields (grid_size, epochs, …);
    ``classify_kw``: :class:`.jobs.ClassifyGridJob` fields (default: its defaults). Returns
    (rows, the training job's result with ``cut``, ``cells_train``, ``cells_test``).
    Raises UserError from the jobs."""
    from pathlib import Path

    from affine import Affine
    from rasterio.features import shapes

    from ..jobs import RecordingContext
    from ..labeling.project import LabelingProject
    from .jobs import ClassifyGridJob, TrainGridModelJob

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = ctx or RecordingContext()
    job = TrainGridModelJob(project=str(folder / "labels.gpkg"),
                            output_model=str(folder / "grid.dltmodel.safetensors"), **job_kw)
    size = job.grid_size
    cut = max(size, round(image.shape[2] / 2 / size) * size)
    tf = profile["transform"]
    left = _write(folder / "left.tif", image[:, :, :cut], profile, tf)
    right = _write(folder / "right.tif", image[:, :, cut:], profile,
                   tf * Affine.translation(cut, 0))
    project = LabelingProject.create(folder / "labels.gpkg", str(profile["crs"]))
    ids = [project.add_class(name).id for name in names]
    project.add_raster(left)
    part = labels[:, :cut].astype(np.int16)
    project.add_features([(ids[int(v) - 1], geom) for geom, v in
                          shapes(part, mask=part > 0, transform=tf)])
    job.validate()
    result = job.run(ctx)
    out = folder / "cells.gpkg"
    ClassifyGridJob(input=str(right), model=job.output_model, output=str(out),
                    device=job.device, **(classify_kw or {})).run(ctx)
    values = list(range(1, len(names) + 1))
    test = cell_truth(labels[:, cut:], valid[:, cut:], values, size, job.min_cover,
                      job.pad_small_features)
    train = cell_truth(part, valid[:, :cut], values, size, job.min_cover,
                       job.pad_small_features)
    predicted = _predicted_cells(out, names)
    keys = sorted(set(test) & set(predicted))
    rows = score_against_baselines(np.array([predicted[k] for k in keys]),
                                   np.array([test[k] for k in keys]),
                                   np.array(list(train.values())), names)
    return rows, {**result, "cut": cut, "cells_train": len(train), "cells_test": len(keys)}


def _predicted_cells(path, names: list[str]) -> dict[tuple[int, int], np.ndarray]:
    """{(row, col): (C,) multi-hot of the classes over their thresholds} of a Classify Grid
    GeoPackage."""
    from pyogrio.raw import read

    meta, _, _, data = read(str(path), read_geometry=False)
    col = {name: data[k] for k, name in enumerate(meta["fields"])}
    out = {}
    for r, c, classes in zip(col["row"], col["col"], col["classes"]):
        tags = set(str(classes or "").split(","))
        out[(int(r), int(c))] = np.array([n in tags for n in names], np.float32)
    return out
