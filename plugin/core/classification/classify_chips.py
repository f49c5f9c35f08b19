"""Classify Chips: a chip classifier applied to a chips folder (→ CSV) or to the features of a
vector layer over a raster (→ a GeoPackage copy of the layer).

Each chip is prepared as in training: zero-padded (centred) to the model's ``max_side`` (a
larger chip is centre-cropped), resized to ``resize`` when the model was trained so. A feature's
chip is its pixel box on RASTER (points: a ``box_size`` px square; boxes under 25 px grown to
25 px, as Export Training Chips cuts them); pixels outside the raster are 0.

Outputs: ``chip`` (folder: the path relative to INPUT), ``class`` (the top class), ``score``
(its probability), ``prob_<class>`` for every class and, for multi-label models, ``tags``
(space-separated classes whose probability reaches their tuned threshold).
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext
from .chips import EXTENSIONS, pad_resize, read_chip


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
    """Per chip: class, score, prob_<class> … and tags (multi-label)."""
    names = [c["name"] for c in card["classes"]]
    th = np.asarray(card.get("thresholds") or [0.5] * len(names), np.float32)
    out = []
    for p in probs:
        top = int(np.argmax(p))
        row = {"class": names[top], "score": round(float(p[top]), 6)}
        if card.get("multi_label"):
            row["tags"] = " ".join(n for n, v, t in zip(names, p, th) if v >= t)
        row.update({f"prob_{n}": round(float(v), 6) for n, v in zip(names, p)})
        out.append(row)
    return out


def _device(requested: str) -> str:
    from ..environment import resolve_device

    return resolve_device(requested)


def classify_chips(job, ctx: JobContext) -> dict:
    from .networks import load_classifier

    started = time.monotonic()
    predictor, card = load_classifier(job.model, "chip_classification")
    device = _device(job.device)
    predictor = predictor.to(device)
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
    return {"output": str(out), "output_kind": kind, "device": device,
            "classes": card["classes"], "multi_label": bool(card["multi_label"]),
            "chips": len(rows),
            "seconds": round(time.monotonic() - started, 2), "per_class": counts}


def _progress_reads(paths, ctx):
    for k, p in enumerate(paths):
        if k % 32 == 0:
            ctx.progress("chips", k, len(paths), f"{k} of {len(paths)} chips")
        yield read_chip(p)


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["chip", "class"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def classify_features(job, predictor, card: dict, device: str, ctx: JobContext) -> list[dict]:
    """Cut a chip around every feature of the vector INPUT on RASTER, classify, and write a
    GeoPackage copy of the layer with the prediction fields; returns the predictions."""
    import json
    from types import SimpleNamespace

    import rasterio
    from osgeo import ogr, osr
    from rasterio.windows import Window

    from ..sampling.boxes import feature_boxes
    from ..sampling.exporters.feature_chips import chip_window

    ogr.UseExceptions()
    osr.UseExceptions()
    src_ds = ogr.Open(str(job.input))
    if src_ds is None or src_ds.GetLayerCount() == 0:
        raise UserError(f"{job.input} is not a vector layer.", "Choose a vector file (INPUT).")
    layer = src_ds.GetLayer(0)
    with rasterio.open(job.raster) as ds:
        layer_srs = layer.GetSpatialRef()
        transform_geom = None
        if ds.crs and layer_srs is not None:
            target = osr.SpatialReference()
            target.ImportFromWkt(ds.crs.to_wkt())
            for s in (target, layer_srs):
                s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            if not target.IsSame(layer_srs):
                transform_geom = osr.CoordinateTransformation(layer_srs, target)
        feats, fids = [], []
        for f in layer:
            g = f.GetGeometryRef()
            if g is None:
                continue
            g = g.Clone()
            if transform_geom is not None:
                g.Transform(transform_geom)
            kind = "points" if "POINT" in g.GetGeometryName() else "polygons"
            feats.append(SimpleNamespace(fid=f.GetFID(), class_id=0, layer=kind,
                                         geometry=json.loads(g.ExportToJson())))
            fids.append(f.GetFID())
        boxes = {b.fid: b for b in feature_boxes(feats, ds.transform, ds.width, ds.height,
                                                  point_box=float(card.get("box_size", 25.0)))}
        ctx.log(f"Classifying {len(boxes)} of {len(fids)} features on {device}.")

        def images():
            for k, fid in enumerate(f for f in fids if f in boxes):
                if k % 32 == 0:
                    ctx.progress("chips", k, len(boxes), f"{k} of {len(boxes)} features")
                row, col, h, w = chip_window(boxes[fid])
                data = ds.read(window=Window(col, row, w, h), boundless=True, fill_value=0)
                yield data.astype(np.float32)

        probs = predict_arrays(predictor, card, images(), job.batch_size, device,
                               lambda: ctx.cancelled)
    rows = dict(zip([f for f in fids if f in boxes], prediction_fields(probs, card)))
    _write_layer_copy(layer, Path(job.output), rows, card)
    return list(rows.values())


def _write_layer_copy(layer, out: Path, rows: dict, card: dict) -> None:
    from osgeo import ogr

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.gpkg")
    drv = ogr.GetDriverByName("GPKG")
    if tmp.exists():
        drv.DeleteDataSource(str(tmp))
    ds = drv.CreateDataSource(str(tmp))
    layer.ResetReading()
    copy = ds.CopyLayer(layer, layer.GetName() or "chips")
    fields = ["class", "score"] + (["tags"] if card.get("multi_label") else []) + [
        f"prob_{c['name']}" for c in card["classes"]]
    for name in fields:
        kind = ogr.OFTString if name in ("class", "tags") else ogr.OFTReal
        if copy.FindFieldIndex(name, True) < 0:
            copy.CreateField(ogr.FieldDefn(name, kind))
    copy.StartTransaction()
    for f in copy:
        r = rows.get(f.GetFID())
        if r is None:
            continue
        for k, v in r.items():
            f.SetField(k, v)
        copy.SetFeature(f)
    copy.CommitTransaction()
    ds = None
    os.replace(tmp, out)
