"""Training throughput: the whole pipeline against the bare model step.

    python bench/train_segmentation.py [--device auto] [--size 512] [--patch 128] [--batch 8]
                                       [--steps 20] [--workers -1] [--encoder resnet18]

Pipeline: a synthetic scene and labeling project → the pixel segmentation task's epoch
loader (label rasters, sample plan, rasterio reads, normalisation, rotation/scale/flip
augmentation, sampler, DataLoader) → the engine's ``train_batch`` (AMP and channels-last on
CUDA). Bare: the same model and ``train_batch`` on one in-memory batch already on the device.
Both print patches/s after warm-up steps, and the ratio (target ≥ 0.9).
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
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best kept)")
    ap.add_argument("--workers", type=int, default=-1, help="-1: the engine's automatic choice")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--architecture", default="unet")
    args = ap.parse_args()

    import torch

    from plugin.core.jobs import JobContext
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.segmentation.task import PixelSegmentationTask
    from plugin.core.training import runtime
    from plugin.core.training.engine import train_batch

    warm = 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = TrainPixelSegmentationJob(
            project=make_project(folder, args.size), architecture=args.architecture,
            encoder=args.encoder, patch_size=args.patch, batch_size=args.batch,
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

        def timed(batches) -> float:
            t0 = None
            for i, batch in enumerate(batches):
                if i == warm:
                    sync(device)
                    t0 = time.perf_counter()
                loss, _ = train_batch(task, net, opt, scaler, batch, device)
                float(loss.detach())   # the engine reads the loss every step too
            sync(device)
            return args.steps * args.batch / (time.perf_counter() - t0)

        # alternate bare and pipeline rounds; best of each (the machine may be shared)
        img, mask, soft = next(iter(task.train_loader(0, device)))
        batch = (img.to(device), mask.to(device), soft)
        bare = pipe = 0.0
        for r in range(args.rounds):
            bare = max(bare, timed([batch] * (warm + args.steps)))
            pipe = max(pipe, timed(task.train_loader(r + 1, device)))
        print(f"device {device}  {args.architecture}/{args.encoder}  patch {args.patch}  "
              f"batch {args.batch}  loader workers {workers}  "
              f"patches in plan {len(task.train_patches)}")
        print(f"pipeline (sampler+augmentation+loader+step): {pipe:8.2f} patches/s")
        print(f"bare model step (in-memory batch):           {bare:8.2f} patches/s")
        print(f"ratio pipeline/bare: {pipe / bare:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
