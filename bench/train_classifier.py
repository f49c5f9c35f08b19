"""Classifier training throughput: the whole pipeline against the bare model step.

    python bench/train_classifier.py [--family grid|chips] [--device auto] [--size 64]
                                     [--batch 16] [--steps 20] [--workers -1]
                                     [--architecture resnet18]

Pipeline: synthetic data (grid: a labelling project, label rasters, grid cells; chips: an
ImageFolder of GeoTIFF chips) → the family's TrainingTask (``prepare``, ``train_loader``: rasterio
reads, normalisation, augmentation, DataLoader) → the engine's ``train_batch`` (forward, loss,
backward, AdamW step; AMP and channels-last on CUDA). Bare: the same network and
``train_batch`` on one in-memory batch already on the device. Printed: samples/s after warm-up
steps, for the first epoch (chips read from their files) and for later ones (chips served from
the dataset's memory cache; grid cells are always read), and their ratio to the bare step
(target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_task(family: str, folder: Path, args):
    from plugin.core.classification.jobs import TrainChipClassifierJob, TrainGridModelJob
    from plugin.core.classification.synthetic import make_chip_folder, make_grid_scene
    from plugin.core.classification.task import ChipTask, GridTask
    from plugin.core.jobs import RecordingContext

    common = {"architecture": args.architecture, "batch_size": args.batch, "device": args.device,
              "num_workers": args.workers, "output_model": str(folder / "m.safetensors")}
    if family == "grid":
        scene = make_grid_scene(folder / "scene", cells=12, cell=args.size, rasters=1,
                                feature_share=0.5)
        job = TrainGridModelJob(project=str(scene.project), grid_size=args.size, split=100,
                                background_patch_ratio=1.0, **common)
        task = GridTask()
    else:
        make_chip_folder(folder / "chips", "imagefolder", per_class=60, size=args.size)
        job = TrainChipClassifierJob(input=str(folder / "chips"), test_size=0, split=100,
                                     **common)
        task = ChipTask(1)
    task.prepare(job, RecordingContext(), folder / "logs")
    return job, task


def resolve_device(name: str) -> str:
    from plugin.core.training import runtime

    return runtime.resolve_device(name)


def measure(task, network, optimizer, scaler, batches, device: str, steps: int,
            warmup: int = 3) -> float:
    from plugin.core.training.engine import train_batch

    it = iter(batches)
    for _ in range(warmup):
        train_batch(task, network, optimizer, scaler, next(it), device)
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        batch = next(it)
        train_batch(task, network, optimizer, scaler, batch, device)
        n += len(batch[0])
    sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=("grid", "chips"), default="grid")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=64, help="grid cell / chip side (px)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
    ap.add_argument("--workers", type=int, default=-1, help="-1: the automatic choice")
    ap.add_argument("--architecture", default="resnet18")
    args = ap.parse_args()

    import itertools

    import torch

    args.device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        job, task = make_task(args.family, Path(tmp), args)
        network = task.build_network(None).to(args.device)
        if args.device.startswith("cuda"):
            network = network.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=args.device.startswith("cuda")
                                      and not torch.cuda.is_bf16_supported())
        network.train()

        def pipeline():
            for epoch in itertools.count():
                yield from task.train_loader(epoch, args.device)

        first = next(iter(task.train_loader(0, args.device)))
        on_device = tuple(t.to(args.device) for t in first)
        bare = measure(task, network, optimizer, scaler, itertools.repeat(on_device),
                       args.device, args.steps)
        full = measure(task, network, optimizer, scaler, pipeline(), args.device, args.steps)
        for _ in task.train_loader(0, args.device):   # one more pass: later epochs
            pass
        later = measure(task, network, optimizer, scaler, pipeline(), args.device, args.steps)
    print(f"{args.family} {args.architecture} {args.size}px batch {args.batch} on {args.device}")
    print(f"{'bare step':<24}{bare:>10.1f} samples/s")
    print(f"{'pipeline, first epoch':<24}{full:>10.1f} samples/s   ratio {full / bare:.2f}")
    print(f"{'pipeline, later epochs':<24}{later:>10.1f} samples/s   ratio {later / bare:.2f}"
          "   (target >= 0.9)")


if __name__ == "__main__":
    main()
