"""Training throughput: the whole pipeline against the bare model step, at one or more batch sizes.

    python bench/train_segmentation.py [--device auto] [--size 512] [--patch 128]
        [--batches 32,128] [--steps 20] [--workers -1] [--encoder resnet18]

Pipeline: a synthetic scene and labeling project → the pixel segmentation task's epoch
loader (label rasters, sample plan, rasterio reads, normalisation, sampler, DataLoader) → the
engine's ``train_batch`` with the task's per-batch augmentation on the device (AMP and
channels-last on CUDA), the weight average updated and the loss read every
``runtime.LOSS_READ_STEPS`` steps, as the engine does. Before: the same loader with the former
per-patch augmentation in the loader workers (``data.Augment``) and the loss read every step
(without the weight average, which came later). Bare: the same model and step, without
augmentation, on one in-memory batch already on the device. Prints patches/s after warm-up
steps side by side, and the ratios (target ≥ 0.9 of bare).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_project(folder: Path, size: int) -> str:
    from plugin.core.labeling.project import LabelingProject
    from plugin.core.synthetic import make_scene

    scene = make_scene(folder / "scene", size=size, bands=3, seed=0)
    project = LabelingProject.create(folder / "p.gpkg", scene.crs)
    for cid, name, color in scene.classes:
        project.add_class(name, color, solid_distance={3: 2, 4: 1}.get(cid, 0))
    project.add_raster(scene.raster)
    project.add_features([(f["class_id"], f["geometry"]) for f in scene.features])
    return str(folder / "p.gpkg")


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=512, help="synthetic scene size (px)")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batches", default="32,128", help="batch sizes, comma-separated")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best kept)")
    ap.add_argument("--workers", type=int, default=-1, help="-1: the engine's automatic choice")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--architecture", default="unet")
    args = ap.parse_args()
    rows = [run(args, int(b)) for b in args.batches.split(",")]
    print(f"\n{'batch':>6s} {'bare':>10s} {'before':>10s} {'pipeline':>10s} "
          f"{'before/bare':>12s} {'pipe/bare':>10s} {'pipe/before':>12s}   (patches/s)")
    for b, bare, before, pipe in rows:
        print(f"{b:6d} {bare:10.2f} {before:10.2f} {pipe:10.2f} {before / bare:12.3f} "
              f"{pipe / bare:10.3f} {pipe / before:12.3f}")
    print("target: pipeline/bare >= 0.9")


def run(args, batch_size: int) -> tuple[int, float, float, float]:
    import torch

    from plugin.core.batch_augment import BatchAugment
    from plugin.core.jobs import JobContext
    from plugin.core.segmentation.data import Augment
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.segmentation.task import PixelSegmentationTask
    from plugin.core.training import runtime
    from plugin.core.training.engine import train_batch
    from plugin.core.training.weight_average import WeightAverage

    warm = 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = TrainPixelSegmentationJob(
            project=make_project(folder, args.size), architecture=args.architecture,
            encoder=args.encoder, patch_size=args.patch, batch_size=batch_size,
            device=args.device, num_workers=args.workers, split=100,
            background_patch_ratio=1.0, steps_per_epoch=warm + args.steps,
            output_model=str(folder / "m.safetensors"))
        device = runtime.resolve_device(job.device)
        task = PixelSegmentationTask()
        task.prepare(job, JobContext(), folder / "logs")
        net = task.build_network(None).to(device)
        cuda = device.startswith("cuda")
        if cuda:
            net = net.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        workers = runtime.num_workers(job.num_workers, device)

        def timed(batches, read_every: int, average=None) -> float:
            t0 = None
            sums = runtime.DeviceSums(device)
            for i, batch in enumerate(batches):
                if i == warm:
                    sync(device)
                    t0 = time.perf_counter()
                loss, _ = train_batch(task, net, opt, scaler, batch, device)
                if average is not None:
                    average.update(net)
                sums.add(loss=loss)
                if (i + 1) % read_every == 0:
                    sums.read()
            sums.read()
            sync(device)
            return args.steps * batch_size / (time.perf_counter() - t0)

        loader = task.train_loader(0, device)   # builds the dataset and the device augment
        device_augment = task._augment
        img, mask, soft = next(iter(loader))
        batch = (img.to(device), mask.to(device), soft.to(device))
        no_augment = BatchAugment(False, False, False)
        old_augment = Augment(job.augment_rotation, job.augment_scale, job.augment_flip)
        bare = pipe = before = 0.0
        for r in range(args.rounds):   # alternating; best of each (the machine may be shared)
            task._augment = no_augment
            bare = max(bare, timed([batch] * (warm + args.steps), 10 ** 9))
            if getattr(args, "before", True):   # bench/gpu_suite.py leaves it out
                task._train_ds.augment = old_augment       # as before: per patch, in workers
                before = max(before, timed(task.train_loader(2 * r + 1, device), 1))
            task._train_ds.augment, task._augment = None, device_augment
            pipe = max(pipe, timed(task.train_loader(2 * r + 2, device),
                                   runtime.LOSS_READ_STEPS, WeightAverage(net, 300)))
        print(f"device {device}  {args.architecture}/{args.encoder}  patch {args.patch}  "
              f"batch {batch_size}  loader workers {workers}  "
              f"patches in plan {len(task.train_patches)}")
        print(f"  pipeline (loader + device augmentation + step + weight average): "
              f"{pipe:8.2f} patches/s")
        if before:
            print(f"  before (augmentation in the loader, loss read every step): {before:8.2f}")
        print(f"  bare model step (in-memory batch, no augmentation): {bare:8.2f}")
        return batch_size, bare, before, pipe


if __name__ == "__main__":
    main()
