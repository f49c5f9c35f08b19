"""Training throughput: the whole pipeline against the bare model step.

    python bench/train_segmentation.py [--device auto] [--size 512] [--patch 128] [--batch 8]
                                       [--steps 20] [--workers -1] [--encoder resnet18]

Pipeline: a synthetic scene and labeling project → label rasters → sample plan → PatchDataset
(rasterio reads, normalisation, rotation/scale/flip augmentation) → DataLoader → the engine's
``train_step`` (AMP and channels-last on CUDA). Bare: the same model and ``train_step`` on one
in-memory batch already on the device. Both print patches/s after warm-up steps, and the ratio
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
    from torch.utils.data import DataLoader

    from plugin.core.jobs import JobContext
    from plugin.core.segmentation.data import Augment, PatchDataset, band_statistics
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.segmentation.models import build_network
    from plugin.core.segmentation.train import IGNORE, _device, _num_workers, prepare, train_step

    warm = 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = TrainPixelSegmentationJob(
            project=make_project(folder, args.size), architecture=args.architecture,
            encoder=args.encoder, patch_size=args.patch, batch_size=args.batch,
            device=args.device, num_workers=args.workers, split=100,
            background_patch_ratio=1.0, output_model=str(folder / "m.safetensors"))
        device = _device(job)
        setup = prepare(job, JobContext(), folder / "logs")
        patches = setup.plan.split("train")
        mean, std, _ = band_statistics(setup.sources)
        net = build_network(job.architecture, job.encoder, 3, setup.num_outputs).to(device)
        cuda = device.startswith("cuda")
        if cuda:
            net = net.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        w = torch.ones(setup.num_outputs, device=device)
        ce = torch.nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE)
        ds = PatchDataset(setup.sources, patches, mean, std, setup.num_outputs,
                          Augment(True, True, True), jitter=0.25)
        workers = _num_workers(job, device)
        n = (warm + args.steps) * args.batch
        sampler = torch.randint(0, len(ds), (n,), generator=torch.Generator().manual_seed(0))
        kw = {"num_workers": workers, "pin_memory": cuda}
        if workers:
            kw["prefetch_factor"] = 4

        def timed(batches) -> float:
            t0 = None
            for i, (img, mask, soft) in enumerate(batches):
                if i == warm:
                    sync(device)
                    t0 = time.perf_counter()
                loss, _, _ = train_step(net, opt, ce, w, img, mask, soft, device)
                float(loss.detach())   # the engine reads the loss every step too
            sync(device)
            return args.steps * args.batch / (time.perf_counter() - t0)

        # alternate bare and pipeline rounds; best of each (the machine may be shared)
        img, mask, soft = next(iter(DataLoader(ds, batch_size=args.batch)))
        img, mask = img.to(device), mask.to(device)
        bare = pipe = 0.0
        for _ in range(args.rounds):
            bare = max(bare, timed([(img, mask, soft)] * (warm + args.steps)))
            pipe = max(pipe, timed(DataLoader(ds, batch_size=args.batch,
                                              sampler=sampler.tolist(), **kw)))
        print(f"device {device}  {args.architecture}/{args.encoder}  patch {args.patch}  "
              f"batch {args.batch}  loader workers {workers}  patches in plan {len(patches)}")
        print(f"pipeline (sampler+augmentation+loader+step): {pipe:8.2f} patches/s")
        print(f"bare model step (in-memory batch):           {bare:8.2f} patches/s")
        print(f"ratio pipeline/bare: {pipe / bare:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
