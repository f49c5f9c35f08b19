"""Object detection throughput: Detect Objects against bare forward passes, and the training
pipeline against bare optimisation steps.

    python bench/detect_objects.py [--size 1024] [--tile 256] [--batch 2] [--patch 128]
        [--train-batch 4] [--steps 8] [--architecture fcos_resnet18] [--device auto]

1. Detect Objects: the job on a ``size`` × ``size`` 3-band uint8 GeoTIFF (synthetic objects),
   megapixels per second of the whole job (reading, tiling, detection, merging across tiles,
   GeoPackage), against the same engine's forward passes (onnxruntime on the CPU, torch on
   CUDA) over the same tiles on an in-memory array (target ≥ 0.85).
2. Training: patches per second of the engine's step fed by the task's data loader (reading
   patches, box-aware augmentation, collation, forward + loss, backward, AdamW), against the same
   step on one in-memory batch repeated (target ≥ 0.9).

The model has random weights (a trained one costs the same per tile); figures are printed side by
side with their ratio.
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


def make_model(path: Path, architecture: str, patch: int) -> Path:
    import torch

    from plugin.core import modelfile
    from plugin.core.detection.network import build_detector

    torch.manual_seed(0)
    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "car", "color": "#e31a1c"}]
    net = build_detector(architecture, 3, 2, patch, [80.0] * 3, [40.0] * 3)
    card = modelfile.make_card(task="object_detection", classes=classes, bands=3,
                               mean=[80.0] * 3, std=[40.0] * 3, nodata=None,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631", dtype="uint8",
                               architecture=architecture, encoder="", patch_size=patch,
                               score_threshold=0.3, nms_iou=0.5, max_box_px=40.0)
    return modelfile.save_model(path, net, card)


def bench_detect(folder: Path, args) -> tuple[float, float, int, str]:
    """(job seconds, bare seconds, tiles, engine) for Detect Objects on the big raster."""
    import torch

    from plugin.core.detection.jobs import DetectObjectsJob
    from plugin.core.detection.modelfile import load_detector, read_card
    from plugin.core.detection.network import set_inference
    from plugin.core.detection.predict import TileDetector
    from plugin.core.detection.predict_onnx import ort_tile_detector
    from plugin.core.detection.synthetic import make_object_scene
    from plugin.core.environment import resolve_device
    from plugin.core.jobs import JobContext

    scene = make_object_scene(folder / "big", size=args.size, n_objects=args.size // 12,
                              seed=1)
    model = make_model(folder / "det.safetensors", args.architecture, args.patch)
    job = DetectObjectsJob(input=str(scene.raster), model=str(model),
                           output=str(folder / "found.gpkg"), tile_size=args.tile,
                           batch_size=args.batch, device=args.device)
    job.run(JobContext())                        # warm-up (first allocations)
    t0 = time.perf_counter()
    result = job.run(JobContext())
    job_s = time.perf_counter() - t0
    device = resolve_device(args.device)
    card = read_card(model)
    detector = ort_tile_detector(job, card, args.tile, card["score_threshold"],
                                 card["nms_iou"], device)          # the job's engine
    if detector is None:
        net, card = load_detector(model)
        net.transform.min_size, net.transform.max_size = (args.tile,), args.tile
        set_inference(net, card["score_threshold"], card["nms_iou"], job.max_detections)
        detector = TileDetector(net, device, False, card["nms_iou"])
    assert getattr(detector, "name", "torch") == result["engine"]
    tiles = same_tiles(scene.raster, args.tile, result["overlap"], card["mean"])
    detector(tiles[:1])
    with torch.inference_mode():
        t0 = time.perf_counter()
        for k in range(0, len(tiles), args.batch):
            detector(tiles[k:k + args.batch])
        bare_s = time.perf_counter() - t0
    return job_s, bare_s, result["tiles"], result["engine"]


def same_tiles(raster: Path, tile: int, overlap: int, fill: list[float]) -> np.ndarray:
    """The tiles Detect Objects reads, in memory (N, bands, tile, tile) float32."""
    import rasterio

    from plugin.core.tiling import read_tile, tile_starts

    with rasterio.open(raster) as src:
        rows = tile_starts(src.height, tile, tile - overlap)
        cols = tile_starts(src.width, tile, tile - overlap)
        fill_a = np.asarray(fill, np.float32)[:, None, None]
        return np.stack([read_tile(src, r0, c0, tile, tile, fill_a)[0]
                         for r0 in rows for c0 in cols])


def bench_train(folder: Path, args) -> tuple[float, float, int]:
    """(pipeline seconds, bare seconds, patches) for ``steps`` optimisation steps."""
    import torch

    from plugin.core.detection.jobs import TrainObjectDetectionJob
    from plugin.core.detection.synthetic import make_object_scene, scene_project
    from plugin.core.detection.task import ObjectDetectionTask
    from plugin.core.jobs import JobContext
    from plugin.core.training.engine import train_batch

    scene = make_object_scene(folder / "train", size=512, n_objects=60, seed=2)
    scene_project(scene, folder / "p.gpkg")
    job = TrainObjectDetectionJob(project=str(folder / "p.gpkg"), architecture=args.architecture,
                                  patch_size=args.patch, batch_size=args.train_batch,
                                  steps_per_epoch=args.steps, device=args.device,
                                  output_model=str(folder / "m.safetensors"))
    task = ObjectDetectionTask()
    task.prepare(job, JobContext(), folder / "logs")
    from plugin.core.environment import resolve_device

    device = resolve_device(args.device)
    net = task.build_network(None).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    batches = iter(task.train_loader(0, device))
    first = next(batches)
    train_batch(task, net, opt, scaler, first, device)       # warm-up
    t0 = time.perf_counter()
    n = 0
    for batch in task.train_loader(1, device):
        train_batch(task, net, opt, scaler, batch, device)
        n += len(batch[0])
    pipe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        train_batch(task, net, opt, scaler, first, device)
    bare_s = time.perf_counter() - t0
    return pipe_s, bare_s * n / (args.steps * len(first[0])), n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--architecture", default="fcos_resnet18")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        folder = Path(tmp)
        job_s, bare_s, tiles, engine = bench_detect(folder, args)
        mpix = args.size * args.size / 1e6
        print(f"Detect Objects, {args.size}² px, {tiles} tiles of {args.tile} px, "
              f"{args.architecture} on {args.device} ({engine}):")
        print(f"  job           {mpix / job_s:8.3f} MPix/s  ({job_s:.2f} s)")
        print(f"  bare forward  {mpix / bare_s:8.3f} MPix/s  ({bare_s:.2f} s)")
        print(f"  ratio job / bare = {bare_s / job_s:.3f}  (target ≥ 0.85)")
        pipe_s, bare_s, n = bench_train(folder, args)
        print(f"Training, {n} patches of {args.patch} px in batches of {args.train_batch}:")
        print(f"  pipeline      {n / pipe_s:8.3f} patches/s  ({pipe_s:.2f} s)")
        print(f"  bare step     {n / bare_s:8.3f} patches/s  ({bare_s:.2f} s)")
        print(f"  ratio pipeline / bare = {bare_s / pipe_s:.3f}  (target ≥ 0.9)")


if __name__ == "__main__":
    main()
