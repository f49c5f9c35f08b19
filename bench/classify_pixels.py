"""Classify Pixels throughput and memory.

    python bench/classify_pixels.py [--size 1024] [--memory-size 20000] [--tile 256]
        [--overlap 0.25] [--batch 4] [--device auto] [--engine auto] [--encoder resnet18]
        [--architecture unet] [--memory-forward auto|model|stub] [--no-memory]

``--engine torch`` on the CPU runs the device-side path (the blending band as torch tensors)
that CUDA uses; ``--batch 0`` lets the job choose the batch from free GPU memory.

Speed: a ``size`` × ``size`` 3-band uint8 GeoTIFF (a synthetic scene repeated) classified by the
Classify Pixels job (class raster written, no TTA), against bare forward passes over the same
number of tiles of the same shape on in-memory arrays with the same engine (target ≥ 0.85); plus
bare loops of the other engine (torch vs onnxruntime) for comparison. The ONNX export is cached
before timing. Memory: the job on a ``memory-size`` square raster (a VRT repeating the scene, made
in a second) in a fresh process, its peak resident memory printed (target < 2 GB). With
``--memory-forward stub`` (the default on a CPU, where 400 megapixels would take long) the network
is replaced by a cheap function of the input, so the figure is that of reading, blending, writing;
the real network's memory is measured on the ``size`` raster in the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLASSES = [{"id": i, "name": n, "color": c} for i, n, c in
           [(0, "background", "#000000"), (1, "building", "#e31a1c"), (2, "water", "#1f78b4"),
            (3, "tree", "#33a02c"), (4, "road", "#ff7f00")]]


def make_model(path: Path, architecture: str, encoder: str, patch_size: int = 256) -> Path:
    import torch

    from plugin.core import modelfile
    from plugin.core.segmentation.network import build_network

    torch.manual_seed(0)
    net = build_network(architecture, encoder, 3, len(CLASSES))
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture=architecture, encoder=encoder, classes=CLASSES,
                               bands=3, mean=[100.0] * 3, std=[50.0] * 3, nodata=None,
                               patch_size=patch_size, pixel_size=(0.5, 0.5), crs="EPSG:32631")
    return modelfile.save_model(path, net, card)


def make_rasters(folder: Path, size: int, memory_size: int) -> tuple[Path, Path]:
    """A GeoTIFF of ``size`` px and a VRT of ``memory_size`` px, both repeating a 512 px
    synthetic scene."""
    import rasterio
    from rasterio.windows import Window

    from plugin.core.synthetic import make_scene

    scene = make_scene(folder / "scene", size=512, bands=3, seed=0)
    with rasterio.open(scene.raster) as ds:
        block, prof = ds.read(), ds.profile
    tif = folder / f"big_{size}.tif"
    prof.update(width=size, height=size, tiled=True, blockxsize=256, blockysize=256,
                compress="deflate")
    with rasterio.open(tif, "w", **prof) as dst:
        for r in range(0, size, 512):
            for c in range(0, size, 512):
                h, w = min(512, size - r), min(512, size - c)
                dst.write(block[:, :h, :w], window=Window(c, r, w, h))
    src = scene.raster.resolve()
    parts = []
    for b in (1, 2, 3):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT='0'>{src}</SourceFilename>"
            f"<SourceBand>{b}</SourceBand>"
            f"<SrcRect xOff='0' yOff='0' xSize='{w}' ySize='{h}'/>"
            f"<DstRect xOff='{c}' yOff='{r}' xSize='{w}' ySize='{h}'/></SimpleSource>"
            for r in range(0, memory_size, 512) for c in range(0, memory_size, 512)
            for h, w in [(min(512, memory_size - r), min(512, memory_size - c))])
        parts.append(f"<VRTRasterBand dataType='Byte' band='{b}'>{sources}</VRTRasterBand>")
    t = prof["transform"]
    vrt = folder / f"big_{memory_size}.vrt"
    vrt.write_text(f"<VRTDataset rasterXSize='{memory_size}' rasterYSize='{memory_size}'>"
                   f"<SRS>{prof['crs'].to_wkt()}</SRS>"
                   f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"
                   + "".join(parts) + "</VRTDataset>")
    return tif, vrt


def run_job(raster: Path, model: Path, out: Path, args, engine: str | None = None) -> float:
    from plugin.core.jobs import JobContext
    from plugin.core.segmentation.jobs import ClassifyPixelsJob

    job = ClassifyPixelsJob(input=str(raster), model=str(model), output=str(out),
                            tile_size=args.tile, overlap=args.overlap, batch_size=args.batch,
                            device=args.device, engine=engine or args.engine)
    t0 = time.perf_counter()
    job.execute(JobContext())
    return time.perf_counter() - t0


def bare_loop(engine, n_tiles: int, batch: int, tile: int, device: str) -> float:
    """Seconds for ``n_tiles`` forward passes in batches on an in-memory array."""
    x = (np.random.default_rng(0).random((batch, 3, tile, tile)) * 255).astype(np.float32)
    engine(x[:1])
    t0 = time.perf_counter()
    left = n_tiles
    while left > 0:
        engine(x[:min(batch, left)])
        left -= batch
    return time.perf_counter() - t0


def child(args) -> None:
    """--child: run one job and print its peak RSS (MB) as JSON."""
    import plugin.core.segmentation.predict as cl

    if args.stub:
        class Stub:
            name = "stub"

            def __call__(self, x):
                p = np.repeat(x[:, :1] / 255.0, len(CLASSES), axis=1)
                return (p / p.sum(1, keepdims=True).clip(1e-6)).astype(np.float32)

        cl.make_engine = lambda *a, **k: Stub()
    import torch  # noqa: F401  (the libraries the job loads, counted in the baseline)

    from plugin.core.segmentation.modelfile import load_model

    load_model(args.model)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    secs = run_job(Path(args.child), Path(args.model), Path(args.out), args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"peak_rss_mb": rss, "baseline_mb": base, "seconds": secs}))


def peak_memory(raster: Path, model: Path, out: Path, args, stub: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(raster), "--model", str(model),
           "--out", str(out), "--tile", str(args.tile), "--overlap", str(args.overlap),
           "--batch", str(args.batch), "--device", args.device, "--engine", args.engine
           ] + (["--stub"] if stub else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--memory-size", type=int, default=20000)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--engine", default="auto", choices=("auto", "torch", "onnxruntime"))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--architecture", default="unet")
    ap.add_argument("--memory-forward", default="auto", choices=("auto", "model", "stub"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from plugin.core.environment import resolve_device
    from plugin.core.inference import OrtEngine, TorchEngine, make_engine, onnx_cache_path
    from plugin.core.segmentation import export as segexport
    from plugin.core.segmentation import modelfile as segmodel
    from plugin.core.tiling import tile_starts

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")   # ONNX exports stay in tmp
        model = make_model(folder / "m.dltmodel.safetensors", args.architecture, args.encoder)
        tif, vrt = make_rasters(folder, args.size, args.memory_size)
        predictor, card = segmodel.load_model(model)
        engine = make_engine(model, predictor, device, args.engine, export=segexport.export_onnx)
        stride = args.tile - int(round(args.overlap * args.tile / 2)) * 2
        n_tiles = len(tile_starts(args.size, args.tile, stride)) ** 2
        mp = args.size * args.size / 1e6
        run_job(tif, model, folder / "warm.tif", args)      # warm-up (caches, allocator)
        secs = run_job(tif, model, folder / "c.tif", args)
        from plugin.core.blend import auto_windows

        batch = args.batch or auto_windows(device, args.tile, 3, len(CLASSES))
        bare = bare_loop(engine, n_tiles, batch, args.tile, device)
        print(f"device {device}  {args.architecture}/{args.encoder}  raster {args.size}² px  "
              f"tile {args.tile} overlap {args.overlap} ({n_tiles} tiles)  batch {batch}")
        print(f"Classify Pixels job ({engine.name}):      {mp / secs:8.3f} MP/s")
        print(f"bare {engine.name} forward, same tiles:   {mp / bare:8.3f} MP/s")
        print(f"ratio job/bare: {bare / secs:.3f} (target >= 0.85)")
        others = []
        if device == "cpu" and engine.name == "onnxruntime":
            others.append(TorchEngine(predictor, device))
        elif device == "cpu":
            others.append(OrtEngine(onnx_cache_path(model) if onnx_cache_path(model).is_file()
                                    else segexport.export_onnx(model, folder / "m.onnx")))
        else:
            path = segexport.export_onnx(model, folder / "m.onnx")
            others.append(OrtEngine(path))
        for other in others:
            t = bare_loop(other, n_tiles, batch, args.tile, device)
            print(f"bare {other.name} forward (CPU), same tiles: {mp / t:8.3f} MP/s "
                  f"({bare / t:.2f} × the job's engine)")
        if args.no_memory:
            return
        stub = args.memory_forward == "stub" or (args.memory_forward == "auto" and device == "cpu")
        real = peak_memory(tif, model, folder / "mem_small.tif", args, stub=False)
        print(f"peak RSS, real network, {args.size}² raster: {real['peak_rss_mb']:.0f} MB "
              f"(libraries + model loaded: {real['baseline_mb']:.0f} MB)")
        big = peak_memory(vrt, model, folder / "mem_big.tif", args, stub=stub)
        what = "stub forward" if stub else "real network"
        print(f"peak RSS, {what}, {args.memory_size}² raster: {big['peak_rss_mb']:.0f} MB "
              f"(libraries + model loaded: {big['baseline_mb']:.0f} MB) in "
              f"{big['seconds']:.0f} s (target < 2048 MB)")


if __name__ == "__main__":
    main()
