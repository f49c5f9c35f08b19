"""Predict Values: a pixel regression model over a raster of any size, tile by tile with the
shared tiled, blended loop (:mod:`..tiled_predict`: smooth blending, optional TTA, bounded
memory), into a float32 GeoTIFF on the input's grid with :data:`NODATA` where the input has no
valid pixel (:mod:`..validpixels`).

On the CPU the forward pass runs through onnxruntime when it is installed (the model is exported
once to a cache folder, :mod:`.export`); on CUDA through torch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..atomic import remove_stale_temporaries, temp_path
from ..inference import make_engine
from ..jobs import JobContext
from ..outputs import gdal_write_guard
from ..tiled_predict import network_window, predict_raster, raster_profile

NODATA = -3.4028234663852886e38   # the lowest float32: no value a model predicts


def predict_values(job, ctx: JobContext) -> dict:
    """Run a PredictValuesJob (see the module docstring); the result holds the output path
    and the minimum, maximum and mean of the predicted values."""
    import rasterio
    from rasterio.windows import Window

    from ..blend import auto_windows
    from ..environment import resolve_device
    from ..raster_input import check_input, open_raster
    from .export import export_onnx
    from .modelfile import load_model, read_card

    started = time.monotonic()
    card = read_card(job.model)
    device = resolve_device(job.device)
    out_path = Path(job.output)
    src = open_raster(job.input)
    tmp = temp_path(out_path)
    stats = {"min": np.inf, "max": -np.inf, "sum": 0.0, "valid": 0, "nodata": 0}
    try:
        with src:
            scale = check_input(src, card, ctx.log, job.rescale)
            tile, batch = network_window(card, job.tile_size, job.batch_size)
            if not job.batch_size:
                batch = auto_windows(device, tile, int(card["bands"]), 1)
            engine = make_engine(job.model, lambda: load_model(job.model)[0], device,
                                 job.engine, ctx=ctx, export=export_onnx)
            ctx.log(f"Predicting {src.width} × {src.height} px with {engine.name} on {device}, "
                    f"tiles of {tile} px, overlap {job.overlap:g}" + (", TTA" if job.tta else ""))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out_path)
            guard = gdal_write_guard(str(out_path))
            guard.__enter__()
            dst = rasterio.open(tmp, "w", **raster_profile(src, 1, "float32", NODATA))
            target = card["target"]
            dst.set_band_description(1, target["name"] + (f" ({target['unit']})"
                                                          if target.get("unit") else ""))

            def on_rows(r0, values, _classes, valid) -> None:   # in the writer thread
                v = np.where(valid, values[0], NODATA).astype(np.float32)
                dst.write(v, 1, window=Window(0, r0, src.width, v.shape[0]))
                if valid.any():
                    inside = values[0][valid]
                    stats["min"] = min(stats["min"], float(inside.min()))
                    stats["max"] = max(stats["max"], float(inside.max()))
                    stats["sum"] += float(inside.sum(dtype=np.float64))
                stats["valid"] += int(valid.sum())
                stats["nodata"] += int((~valid).sum())

            try:
                tiles = predict_raster(
                    src, engine, 1, card["mean"], tile, job.overlap, batch, job.tta, on_rows,
                    progress=lambda d, t: ctx.progress("tile", d, t, "Predicting"),
                    cancelled=lambda: ctx.cancelled, scale=scale, probs="float")
            finally:
                dst.close()
                guard.__exit__(*sys.exc_info())
        os.replace(tmp, out_path)
        ctx.artifact("value_raster", str(out_path))
    finally:
        if tmp.exists():
            tmp.unlink()
    valid = stats["valid"]
    return {"output": str(out_path), "engine": engine.name, "device": device,
            "target": card["target"].get("name"), "unit": card["target"].get("unit", ""),
            "min": stats["min"] if valid else None, "max": stats["max"] if valid else None,
            "mean": stats["sum"] / valid if valid else None, "valid_pixels": valid,
            "nodata_pixels": stats["nodata"], "tiles": tiles["tiles"],
            "seconds": round(time.monotonic() - started, 2)}
