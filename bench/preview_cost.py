"""What does "Preview on the map" cost training? The same small run, preview off and on.

    python bench/preview_cost.py [segmentation|detection|grid] [--epochs N] [--size PX]
                                 [--repeats R] [--threads T]

Trains the family on a synthetic grid scene (two rasters of ``--size`` px: one trains, one
validates) with the same seed and settings, without a preview and previewing the validation
raster after every validation (PREVIEW_SECONDS=0, so only the budget rule of
``training/preview.py`` holds previews back; no extent file: the whole raster, at most one
megapixel). A first short run warms up (imports, caches) and is not counted.

A shared machine is noisy (other jobs come and go over minutes), so the two settings are
interleaved in pairs whose order alternates (off/on, on/off, …) ``--repeats`` times, and two
figures are printed:
- wall: the median engine seconds with the preview on / off, and the median of each pair's
  ratio (the pair ran minutes apart at most, so it shares most of the machine's load);
- share: the seconds the engine itself spent in previews (its result's ``preview_seconds``,
  timed inside the Previewer) over that run's engine seconds — what the preview costs,
  whatever the machine's load does to the wall figures.
Issue 20: the preview costs at most 10 % (on / off ≤ 1.10); the budget rule aims at 5 %.
CPU, at most 2 threads (``--threads``).

Measured on 2 shared CPU cores (2 threads, 15 epochs, 512 px rasters, 3 interleaved pairs,
2026-12-05; segmentation's first pair shared the machine with a test run):

    family        off s   on s   pairs' on/off          median   previews   share (runs)
    segmentation   47.4   48.0   1.232, 1.006, 1.013     1.013   3 of 15    4.0 % (3.5, 4.1, 4.0)
    detection      36.9   37.3   1.081, 0.997, 0.952     0.997   3–4        3.9 % (3.9, 3.7, 5.0)
    grid           15.8   16.3   1.032, 1.065, 0.931     1.032   1–2        4.1 % (2.5, 4.4, 4.1)

The same "off" run took 34.5 to 41.3 s (detection): the machine's noise (±10 %) is larger than
the preview's cost, hence the pairs and the share. Every share is within the 5 % the budget rule
aims at, so the rule was left as it is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugin.core import job_catalog  # noqa: E402, F401  (registers every job class)
from plugin.core.jobs import RecordingContext  # noqa: E402


def make_job(family: str, project: Path, out: Path, epochs: int):
    from plugin.core.classification.jobs import TrainGridModelJob
    from plugin.core.detection.jobs import TrainObjectDetectionJob
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    common = {"project": str(project), "epochs": epochs, "device": "cpu", "num_workers": 0,
              "seed": 0, "output_model": str(out / "m.dltmodel.safetensors")}
    if family == "segmentation":
        return TrainPixelSegmentationJob(patch_size=64, steps_per_epoch=8, batch_size=8,
                                         **common)
    if family == "detection":
        return TrainObjectDetectionJob(patch_size=128, steps_per_epoch=4, batch_size=4,
                                       architecture="fcos_resnet18", **common)
    return TrainGridModelJob(grid_size=32, batch_size=32, architecture="resnet18", **common)


def run_once(family: str, project: Path, out: Path, epochs: int, raster: Path | None):
    """(wall seconds, the run's result dict, previews written) of one training run."""
    job = make_job(family, project, out, epochs)
    if raster is not None:
        job.preview_raster, job.preview_seconds = str(raster), 0.0
    ctx = RecordingContext()
    started = time.monotonic()
    result = job.run(ctx)
    previews = [e["epoch"] for e in ctx.events
                if e["event"] == "artifact" and e["name"] == "preview"]
    return time.monotonic() - started, result, previews


def main() -> None:
    import torch

    from plugin.core.classification.synthetic import make_grid_scene

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("family", nargs="?", default="segmentation",
                    choices=("segmentation", "detection", "grid"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="torchmetrics")   # "more than 100 detections"
    off, on, pairs, shares = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="preview_cost_") as tmp:
        scene = make_grid_scene(Path(tmp) / "scene", cells=args.size // 32, cell=32, rasters=2)
        project = Path(scene.project)
        raster = sorted((Path(tmp) / "scene").rglob("*.tif"))[-1]   # the validation raster
        run_once(args.family, project, Path(tmp) / "warm", 1, raster)
        for k in range(args.repeats):
            pair = {}
            for label in (("off", "on") if k % 2 == 0 else ("on", "off")):
                wall, result, previews = run_once(
                    args.family, project, Path(tmp) / f"{label}_{k}", args.epochs,
                    raster if label == "on" else None)
                pair[label] = result["seconds"]
                if label == "on":
                    spent = result["preview_seconds"] or 0.0
                    shares.append(spent / result["seconds"])
                    print(f"#{k + 1} on:  {result['seconds']:7.1f} s engine ({wall:.1f} s "
                          f"wall), {len(previews)} previews {previews}, {spent:.2f} s in "
                          f"them = {shares[-1]:.1%}", flush=True)
                else:
                    print(f"#{k + 1} off: {result['seconds']:7.1f} s engine ({wall:.1f} s "
                          "wall)", flush=True)
            off.append(pair["off"])
            on.append(pair["on"])
            pairs.append(pair["on"] / pair["off"])
    print(f"\n{args.family}, {args.epochs} epochs, {args.size} px rasters, "
          f"{args.threads} thread(s), {args.repeats} interleaved pairs")
    print(f"engine seconds, median: off {statistics.median(off):.1f}, "
          f"on {statistics.median(on):.1f}")
    print(f"wall: on / off of the medians {statistics.median(on) / statistics.median(off):.3f},"
          f" median of the pairs' ratios {statistics.median(pairs):.3f} "
          f"(pairs: {', '.join(f'{r:.3f}' for r in pairs)})")
    print(f"share: previews' own time / training time, median {statistics.median(shares):.1%}"
          f" (runs: {', '.join(f'{s:.1%}' for s in shares)}); issue 20: at most 10 %")


if __name__ == "__main__":
    main()
