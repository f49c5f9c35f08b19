"""What does "Preview on the map" cost training? The same small run, preview off and on.

    python bench/preview_cost.py [segmentation|detection|grid] [--epochs N] [--size PX]
                                 [--repeats R]

Trains the family on a synthetic grid scene (two rasters of ``--size`` px: one trains, one
validates) twice with the same seed and settings, once without a preview and once previewing
the validation raster after every validation (PREVIEW_SECONDS=0, so only the rule that previews
take at most a tenth of the time holds them back; no extent file: the whole raster, at most
one megapixel). A first short run warms up (imports, caches) and is not counted; then the two
settings alternate ``--repeats`` times (the median of each is kept: a shared machine is noisy).
Prints the training seconds side by side, the previews written and the ratio (issue 20: at
most 1.10). CPU, at most 2 threads (``--threads``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
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


def main() -> None:
    import torch

    from plugin.core.classification.synthetic import make_grid_scene

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("family", nargs="?", default="segmentation",
                    choices=("segmentation", "detection", "grid"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="preview_cost_") as tmp:
        scene = make_grid_scene(Path(tmp) / "scene", cells=args.size // 32, cell=32, rasters=2)
        raster = sorted((Path(tmp) / "scene").rglob("*.tif"))[-1]   # the validation raster
        runs: dict[str, list] = {"preview off": [], "preview on": []}
        make_job(args.family, Path(scene.project), Path(tmp) / "warm", 1).run(
            RecordingContext())
        for k, label in enumerate(list(runs) * args.repeats):
            out = Path(tmp) / f"{label.replace(' ', '_')}_{k}"
            job = make_job(args.family, Path(scene.project), out, args.epochs)
            if label == "preview on":
                job.preview_raster, job.preview_seconds = str(raster), 0.0
            ctx = RecordingContext()
            started = time.monotonic()
            result = job.run(ctx)
            seconds = time.monotonic() - started
            previews = [e for e in ctx.events
                        if e["event"] == "artifact" and e["name"] == "preview"]
            runs[label].append((seconds, result["seconds"], len(previews),
                                [e["epoch"] for e in previews]))
            print(f"{label}: {seconds:.1f} s", flush=True)
    rows = []
    for label, done in runs.items():
        mid = sorted(done)[len(done) // 2]
        rows.append((label, statistics.median(d[0] for d in done),
                     statistics.median(d[1] for d in done), mid[2], mid[3]))
    print(f"\n{args.family}, {args.epochs} epochs, {args.size} px rasters, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'run':<14}{'seconds':>9}{'engine s':>10}{'previews':>10}  epochs previewed")
    for label, seconds, engine, n, epochs in rows:
        print(f"{label:<14}{seconds:9.1f}{engine:10.1f}{n:10d}  {epochs}")
    print(f"on / off: {rows[1][1] / rows[0][1]:.3f} (issue 20: at most 1.10)")


if __name__ == "__main__":
    main()
