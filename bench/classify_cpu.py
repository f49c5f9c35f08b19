"""Classify Pixels on the CPU (onnxruntime): fixed cost and throughput against bare loops.

    python bench/classify_cpu.py [--size 1024] [--tile 256] [--overlap 0.25] [--batch 4]
        [--encoder resnet34] [--geodeep PATH_TO_GEODEEP_PACKAGE_PARENT] [--skip-fixed]
        [--rounds 2]

1. Fixed cost: a fresh process classifying a one-tile raster with a cached ONNX export, wall
   seconds from interpreter start to the job's end and peak resident memory, as the job was
   before (torch imported and the torch model loaded, then onnxruntime) and as it is now.
2. Throughput on a ``size``² 3-band uint8 GeoTIFF (tiled 256): the Classify Pixels job, a bare
   onnxruntime loop over the same number of tiles of the same shape (in memory), and GeoDeep
   (``geodeep.segment``, when importable) on the same network exported for it (input 0–1,
   tile size and overlap in its metadata), same raster, tiles and overlap. The three alternate
   for ``--rounds`` rounds and the best time of each is kept (the machine may be shared).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from classify_pixels import bare_loop, make_model, make_rasters  # noqa: E402


def _job(raster: Path, model: Path, out: Path, args) -> float:
    from plugin.core.jobs import JobContext
    from plugin.core.segmentation.jobs import ClassifyPixelsJob

    t0 = time.perf_counter()
    ClassifyPixelsJob(input=str(raster), model=str(model), output=str(out), tile_size=args.tile,
                      overlap=args.overlap, batch_size=args.batch, device="cpu",
                      engine="onnxruntime").run(JobContext())
    return time.perf_counter() - t0


def child(args) -> None:
    """--child: one job in this fresh process; prints wall seconds since start and peak RSS."""
    if args.mode == "before":   # what the job did before: torch and the torch model first
        from plugin.core.segmentation.modelfile import load_model

        load_model(args.model)
    _job(Path(args.child), Path(args.model), Path(args.out), args)
    print(json.dumps({"seconds": time.time() - args.t0, "rss_mb": _peak_rss_mb(),
                      "torch": "torch" in sys.modules}))


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, which
    a child inherits across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fixed_cost(raster: Path, model: Path, folder: Path, args, mode: str) -> dict:
    runs = []
    for i in range(3):
        cmd = [sys.executable, __file__, "--child", str(raster), "--model", str(model),
               "--out", str(folder / f"fixed_{mode}_{i}.tif"), "--mode", mode,
               "--tile", str(args.tile), "--t0", repr(time.time())]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["seconds"])


def geodeep_seconds(raster: Path, model: Path, folder: Path, args) -> float | None:
    try:
        import geodeep
    except ImportError:
        return None
    from plugin.core.jobs import JobContext
    from plugin.core.onnx_export import ExportOnnxJob

    onnx = folder / "geodeep.onnx"
    if not onnx.exists():
        ExportOnnxJob(model=str(model), output=str(onnx), tile_size=args.tile,
                      tiles_overlap=int(round(args.overlap * 100))).run(JobContext())
        geodeep.segment(str(raster), str(onnx))               # warm-up
    t0 = time.perf_counter()
    geodeep.segment(str(raster), str(onnx))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--geodeep", help="folder holding the geodeep package (if not installed)")
    ap.add_argument("--skip-fixed", action="store_true", help="skip the fixed-cost part")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.geodeep:
        sys.path.insert(0, args.geodeep)

    from plugin.core.inference import OrtEngine, make_engine
    from plugin.core.segmentation.export import export_onnx
    from plugin.core.tiling import tile_starts

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")   # the child processes share it
        model = make_model(folder / "m.dltmodel.safetensors", "unet", args.encoder)
        tif, _ = make_rasters(folder, args.size, 512)
        (folder / "small").mkdir()
        small, _ = make_rasters(folder / "small", args.tile, 512)
        engine = make_engine(model, None, "cpu", "onnxruntime", export=export_onnx)
        assert isinstance(engine, OrtEngine)
        if not args.skip_fixed:
            before = fixed_cost(small, model, folder, args, "before")
            now = fixed_cost(small, model, folder, args, "now")
            print(f"U-Net/{args.encoder}, CPU ({os.cpu_count()} cores), onnxruntime")
            print(f"{'fixed cost, one-tile raster':34s} {'before':>10s} {'now':>10s} "
                  f"{'ratio':>7s}")
            print(f"{'  seconds from process start':34s} {before['seconds']:10.2f} "
                  f"{now['seconds']:10.2f} {now['seconds'] / before['seconds']:7.2f}")
            print(f"{'  peak resident memory (MB)':34s} {before['rss_mb']:10.0f} "
                  f"{now['rss_mb']:10.0f} {now['rss_mb'] / before['rss_mb']:7.2f}")
            print(f"{'  torch imported':34s} {before['torch']!s:>10s} {now['torch']!s:>10s}")

        stride = args.tile - int(round(args.overlap * args.tile / 2)) * 2
        n_tiles = len(tile_starts(args.size, args.tile, stride)) ** 2
        mp = args.size * args.size / 1e6
        _job(tif, model, folder / "warm.tif", args)
        job_s = bare_s = gd_s = float("inf")
        for _ in range(args.rounds):
            job_s = min(job_s, _job(tif, model, folder / "c.tif", args))
            bare_s = min(bare_s, bare_loop(engine, n_tiles, args.batch, args.tile, "cpu"))
            gd = geodeep_seconds(tif, model, folder, args)
            gd_s = None if gd is None else min(gd_s, gd)
        print(f"\nthroughput, {args.size}² px uint8 RGB, tiles {args.tile}, overlap "
              f"{args.overlap}, batch {args.batch} ({n_tiles} tiles)")
        print(f"  Classify Pixels job        {mp / job_s:8.3f} MPix/s")
        print(f"  bare onnxruntime loop      {mp / bare_s:8.3f} MPix/s   job/bare "
              f"{bare_s / job_s:.2f} (target >= 0.85)")
        if gd_s is None:
            print("  GeoDeep                    not importable (pass --geodeep FOLDER)")
        else:
            print(f"  GeoDeep (same network)     {mp / gd_s:8.3f} MPix/s   job/GeoDeep "
                  f"{gd_s / job_s:.2f} (target >= 1.2)")


if __name__ == "__main__":
    main()
