"""Classify Chips: a chip classifier applied to a chips folder (→ CSV) or to the features of a
vector layer over a raster (→ a GeoPackage copy of the layer).

Each chip is prepared as in training: zero-padded (centred) to the model's ``max_side`` (a
larger chip is centre-cropped), resized to ``resize`` when the model was trained so. A feature's
chip is its pixel box on RASTER (points: a ``box_size`` px square; boxes under 25 px grown to
25 px, as Export Training Chips cuts them); pixels outside the raster are 0.

Outputs: ``chip`` (folder: the path relative to INPUT), ``class`` (the top class), ``score``
(its probability), ``prob_<class>`` for every class and, for multi-label models, ``tags``
(space-separated classes whose probability reaches their tuned threshold). TTA (default on):
the probabilities of a model trained with flips and turns are the mean over the 8 flips/turns
of the chip (``network.py``).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext
from .chips import EXTENSIONS, pad_resize, read_chip, valid_pixels


def predict_arrays(predictor, card: dict, images, batch_size: int, device: str = "cpu",
                   cancelled=lambda: False) -> np.ndarray:
    """(N, C) float32 probabilities of raw chips (each (bands, h, w))."""
    import torch

    side, resize = int(card["max_side"]), int(card.get("resize") or 0)
    out, batch = [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).to(device)
        with torch.inference_mode():
            out.append(predictor(x).float().cpu().numpy())
        batch.clear()

    for img in images:
        if cancelled():
            from ..errors import JobCancelled

            raise JobCancelled()
        if img.shape[0] != int(card["bands"]):
            raise UserError(f"A chip has {img.shape[0]} bands, the model {card['bands']}.",
                            "Classify chips with the bands the model was trained on.")
        batch.append(pad_resize(img, side, resize))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    n = len(card["classes"])
    return np.concatenate(out) if out else np.zeros((0, n), np.float32)


def predict_chips(predictor, card: dict, paths, batch_size: int = 32,
                  device: str = "cpu") -> np.ndarray:
    return predict_arrays(predictor, card, (read_chip(Path(p)) for p in paths), batch_size,
                          device)


def prediction_fields(probs: np.ndarray, card: dict) -> list[dict]:
    """Per chip: class, score, prob_<class> … and tags (multi-label). The class of a
    single-label model is decided with the card's ``decision_offsets`` (tuned on validation
    for the rarer classes, :func:`.metrics.decide`); multi-label: the top score."""
    from .metrics import decide

    names = [c["name"] for c in card["classes"]]
    th = np.asarray(card.get("thresholds") or [0.5] * len(names), np.float32)
    tops = (np.asarray(probs).argmax(1) if card.get("multi_label") or not len(probs)
            else decide(probs, card.get("decision_offsets")))
    out = []
    for p, top in zip(probs, tops):
        top = int(top)
        row = {"class": names[top], "score": round(float(p[top]), 6)}
        if card.get("multi_label"):
            row["tags"] = " ".join(n for n, v, t in zip(names, p, th) if v >= t)
        row.update({f"prob_{n}": round(float(v), 6) for n, v in zip(names, p)})
        out.append(row)
    return out


def classify_chips(job, ctx: JobContext) -> dict:
    from .network import load_for_job

    started = time.monotonic()
    predictor, card, device = load_for_job(job, "chip_classification")
    src = Path(job.input)
    out = Path(job.output)
    if out.resolve() == src.resolve():
        raise UserError("OUTPUT would overwrite INPUT.", "Choose another output file name.")
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.is_file() and
                       p.suffix.lower() in EXTENSIONS)
        if not paths:
            raise UserError(f"The folder {src} holds no chip images.",
                            "Choose a folder of .tif, .png or .jpg chips.")
        ctx.log(f"Classifying {len(paths)} chips on {device}.")
        probs = predict_arrays(predictor, card, _progress_reads(paths, ctx), job.batch_size,
                               device, lambda: ctx.cancelled)
        rows = prediction_fields(probs, card)
        _write_csv(out, [{"chip": p.relative_to(src).as_posix(), **r}
                         for p, r in zip(paths, rows)])
        kind = "csv"
    else:
        rows = classify_features(job, predictor, card, device, ctx)
        kind = "vector"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["class"]] = counts.get(r["class"], 0) + 1
    ctx.artifact("output", str(out))
    layer = (job.output_layer or _vector_layer(job.input)) if kind == "vector" else None
    return {"output": str(out), "output_kind": kind, "output_layer": layer, "device": device,
            "classes": card["classes"], "multi_label": bool(card["multi_label"]),
            "chips": len(rows),
            "seconds": round(time.monotonic() - started, 2), "per_class": counts}


def _progress_reads(paths, ctx):
    for k, p in enumerate(paths):
        if k % 32 == 0:
            ctx.progress("chips", k, len(paths), f"{k} of {len(paths)} chips")
        yield read_chip(p)


def _write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` as a CSV written atomically (a failed write keeps the previous file and names
    ``path``: :func:`~plugin.core.outputs.atomic_file`)."""
    from ..outputs import atomic_file

    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["chip", "class"])
        writer.writeheader()
        writer.writerows(rows)


def _vector_layer(path: str) -> str | None:
    """The layer of ``path`` to classify: ``label_polygons`` of a labeling project, else the
    first layer with geometries."""
    import pyogrio

    layers = [(str(n), g) for n, g in pyogrio.list_layers(path)]
    names = [n for n, g in layers if g]
    if "label_polygons" in names:
        return "label_polygons"
    return names[0] if names else None


def classify_features(job, predictor, card: dict, device: str, ctx: JobContext) -> list[dict]:
    """Cut a chip around every feature of the vector INPUT on RASTER, classify, and write a
    GeoPackage copy of the layer with the prediction fields; returns the predictions."""
    from types import SimpleNamespace

    import pyogrio
    import shapely
    from pyogrio.raw import read
    from rasterio.windows import Window

    from ..raster_input import check_input, open_raster
    from ..sampling.boxes import feature_boxes
    from ..sampling.exporters.feature_chips import chip_window

    try:
        layer = _vector_layer(job.input)
    except pyogrio.errors.DataSourceError:
        layer = None
    if layer is None:
        raise UserError(f"{job.input} is not a vector layer with geometries.",
                        "Choose a vector file (INPUT).")
    meta, fids, wkb, fields = read(job.input, layer=layer, return_fids=True)
    geoms = shapely.from_wkb(wkb)
    with open_raster(job.raster, "raster (RASTER)") as ds:
        check_input(ds, card, ctx.log)
        if meta.get("crs") and ds.crs:
            from pyproj import CRS, Transformer

            src_crs, dst_crs = CRS.from_user_input(meta["crs"]), CRS.from_wkt(ds.crs.to_wkt())
            if not src_crs.equals(dst_crs):
                tr = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
                geoms = shapely.transform(geoms, lambda xy: np.column_stack(
                    tr.transform(xy[:, 0], xy[:, 1])))
        feats = []
        for fid, g in zip(fids, geoms):
            if g is None or g.is_empty:
                continue
            kind = "points" if g.geom_type in ("Point", "MultiPoint") else "polygons"
            feats.append(SimpleNamespace(fid=int(fid), class_id=0, layer=kind,
                                         geometry=shapely.geometry.mapping(g)))
        boxes = {b.fid: b for b in feature_boxes(feats, ds.transform, ds.width, ds.height,
                                                  point_box=float(card.get("box_size", 25.0)))}
        order = [int(f) for f in fids if int(f) in boxes]
        if not order:
            raise UserError(f"None of the {len(fids)} features of {Path(job.input).name} lies "
                            f"on the raster {Path(job.raster).name} (RASTER).",
                            "Choose the raster the features were drawn on, or a vector layer "
                            "over this raster.")
        ctx.log(f"Classifying {len(order)} of {len(fids)} features on {device}.")

        def images():
            for k, fid in enumerate(order):
                if k % 32 == 0:
                    ctx.progress("chips", k, len(order), f"{k} of {len(order)} features")
                row, col, h, w = chip_window(boxes[fid])
                yield valid_pixels(ds, Window(col, row, w, h))

        probs = predict_arrays(predictor, card, images(), job.batch_size, device,
                               lambda: ctx.cancelled)
    rows = dict(zip(order, prediction_fields(probs, card)))
    _write_layer_copy(Path(job.output), meta, fids, wkb, fields, rows, card,
                      job.output_layer or layer)
    return list(rows.values())


def _write_layer_copy(out: Path, meta: dict, fids, wkb, fields, rows: dict, card: dict,
                      layer: str) -> None:
    """The input features with their fields and the prediction fields (empty where a feature
    was not classified), as the layer ``layer`` of the GeoPackage ``out`` (its other layers
    kept, a previous ``layer`` replaced atomically)."""
    from ..vector_output import write_vector_layer

    names = [n for n in ["class", "score", "tags"] if n != "tags" or card.get("multi_label")]
    names += [f"prob_{c['name']}" for c in card["classes"]]
    own = [n for n in meta["fields"] if n not in names]
    data = [f for n, f in zip(meta["fields"], fields) if n in own]
    for n in names:
        text = n in ("class", "tags")
        values = [rows.get(int(fid), {}).get(n) for fid in fids]
        data.append(np.array([v if v is not None else ("" if text else np.nan)
                              for v in values], dtype=object if text else np.float64))
    write_vector_layer(out, layer or "chips", wkb, dict(zip(own + names, data)), meta.get("crs"),
                       meta.get("geometry_type") or "Unknown")
