"""Optimized classification: Classify Pixels with a grid model (GRID_MODEL) against the plain
run, on a sparse scene (objects in under 10 % of the grid cells).

    python bench/optimized_classification.py [--cells 24] [--cell 64] [--share 0.08]
        [--grid-epochs 6] [--encoder resnet34] [--device cpu] [--tile 0]

The scene: ``make_grid_scene`` (one raster, ``cells × cells`` cells of ``cell`` px, objects in
``share`` of them) as a labeling project. A grid model (resnet18) is trained on it with the
engine; the pixel model is a U-Net of ``--encoder`` with random weights written as a model
file (the forward pass costs the same whatever its weights; pass ``--pixel-model`` to use a
trained one). Both runs use the same tiles (``--tile``, default the grid cell size: a tile is
skipped only when no cell it covers is flagged). Printed side by side: seconds of the plain and
the optimized run (grid model included), their ratio (speed-up), the share of cells skipped, and
the share of the true feature cells and feature pixels the grid model kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def random_pixel_model(path: Path, encoder: str, bands: int, classes: list[dict]) -> str:
    from plugin.core import modelfile
    from plugin.core.segmentation.network import build_network

    net = build_network("unet", encoder, bands, len(classes) + 1)
    card = modelfile.make_card(task="pixel_segmentation", architecture="unet", encoder=encoder,
                               classes=[{"id": 0, "name": "background", "color": "#000000"},
                                        *classes], bands=bands, mean=[100.0] * bands,
                               std=[20.0] * bands, nodata=None, patch_size=256,
                               pixel_size=None, crs=None)
    modelfile.save_model(path, net, card)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=24)
    ap.add_argument("--cell", type=int, default=64)
    ap.add_argument("--share", type=float, default=0.08)
    ap.add_argument("--grid-epochs", type=int, default=6)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--pixel-model", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tile", type=int, default=0,
                    help="Classify Pixels tile size for both runs (0: the grid cell size)")
    args = ap.parse_args()

    import numpy as np
    import rasterio

    from plugin.core.classification.jobs import TrainGridModelJob
    from plugin.core.classification.synthetic import make_grid_scene
    from plugin.core.gridfilter import grid_filter
    from plugin.core.jobs import RecordingContext
    from plugin.core.segmentation.jobs import ClassifyPixelsJob

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = make_grid_scene(tmp / "scene", cells=args.cells, cell=args.cell,
                                feature_share=args.share, seed=5, rasters=2)
        grid = TrainGridModelJob(project=str(scene.project), architecture="resnet18",
                                 grid_size=args.cell, epochs=args.grid_epochs, batch_size=16,
                                 learning_rate=0.002, background_patch_ratio=1.0,
                                 device=args.device, output_model=str(tmp / "grid.safetensors"))
        t0 = time.perf_counter()
        grid.run(RecordingContext())
        train_s = time.perf_counter() - t0
        classes = [{"id": i + 1, "name": n, "color": "#ff0000"}
                   for i, n in enumerate(scene.class_names)]
        pixel = args.pixel_model or random_pixel_model(tmp / "pixel.safetensors", args.encoder,
                                                       3, classes)
        common = {"input": str(scene.raster), "model": pixel, "device": args.device,
                  "engine": "torch", "overlap": 0.0, "tile_size": args.tile or args.cell}
        ClassifyPixelsJob(output=str(tmp / "warm.tif"), **common).run(RecordingContext())
        t0 = time.perf_counter()
        plain = ClassifyPixelsJob(output=str(tmp / "plain.tif"), **common).run(
            RecordingContext())
        plain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = ClassifyPixelsJob(output=str(tmp / "fast.tif"), grid_model=grid.output_model,
                                 **common).run(RecordingContext())
        fast_s = time.perf_counter() - t0
        with rasterio.open(scene.raster) as src:
            cells = grid_filter(src, grid.output_model, 0.0, 16, args.device)
        truth_cells = scene.truth.any(axis=2)
        kept_cells = float(cells.flagged[truth_cells].mean()) if truth_cells.any() else 1.0
        with rasterio.open(tmp / "scene" / "scene0.tif") as src:
            img = src.read()
        feature_px = (np.abs(img.astype(int) - 100).max(axis=0) > 70)   # painted objects
        mask = cells.mask(0, 0, *feature_px.shape)
        kept_px = float(mask[feature_px].mean()) if feature_px.any() else 1.0
    print(f"scene {args.cells}×{args.cells} cells of {args.cell} px, objects in "
          f"{truth_cells.mean():.1%} of the cells; grid model trained in {train_s:.0f} s")
    print(f"{'plain run':<28}{plain_s:>8.2f} s   ({plain['tiles']} tiles)")
    print(f"{'with grid model':<28}{fast_s:>8.2f} s   ({fast['tiles_skipped']} tiles skipped, "
          f"grid model {fast['grid_seconds']:.2f} s)")
    print(f"{'speed-up':<28}{plain_s / fast_s:>8.2f} x")
    print(f"{'cells skipped':<28}{fast['grid_cells_skipped_share']:>8.1%}")
    print(f"{'true feature cells kept':<28}{kept_cells:>8.1%}")
    print(f"{'true feature pixels kept':<28}{kept_px:>8.1%}")


if __name__ == "__main__":
    main()
