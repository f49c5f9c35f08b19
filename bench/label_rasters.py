"""Label raster building: time and peak memory on a large synthetic raster.

    python bench/label_rasters.py [--size 10000] [--bands 1] [--window 2048] [--folder DIR]

Writes a ``size`` x ``size`` uint8 GeoTIFF (tiled, deflate, a nodata strip on the right) and a
labeling project with polygons, points and lines (solid distances 0, 2, 3) spread over it, then
builds its label raster in a fresh process and prints the wall time, the peak resident memory
added by the build (VmHWM after minus VmRSS before) and the raster's size in
memory for comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CRS = "EPSG:32631"


def make_inputs(folder: Path, size: int, bands: int) -> tuple[Path, Path]:
    """A tiled uint8 raster of ``size`` pixels a side and a project with ~200 labels on it."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from plugin.core.labeling.project import LabelingProject

    raster = folder / f"big_{size}.tif"
    transform = from_origin(500000.0, 6000000.0, 0.5, 0.5)
    nodata_cols = size // 20
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=bands,
                       dtype="uint8", crs=CRS, transform=transform, nodata=0, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as dst:
        step = 2048
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            rows = (np.arange(r0, r0 + h) % 200 + 1).astype(np.uint8)[:, None]
            block = np.broadcast_to(rows, (h, size)).copy()
            block[:, size - nodata_cols:] = 0
            for b in range(1, bands + 1):
                dst.write(block, b, window=Window(0, r0, size, h))
    project = LabelingProject.create(folder / f"big_{size}.gpkg", CRS)
    field = project.add_class("field", "#ffff00")
    well = project.add_class("well", "#0000ff", solid_distance=3)
    road = project.add_class("road", "#ff0000", solid_distance=2)
    project.add_raster(raster)
    rng = np.random.default_rng(0)
    items = []
    for _ in range(80):
        c, r = rng.uniform(0, size, 2)
        w, h = rng.uniform(20, size / 5, 2)
        ring = [transform * xy for xy in ((c, r), (c + w, r), (c + w, r + h), (c, r + h),
                                          (c, r))]
        items.append((field.id, {"type": "Polygon", "coordinates": [ring]}))
    for _ in range(100):
        c, r = rng.uniform(0, size, 2)
        items.append((well.id, {"type": "Point", "coordinates": transform * (c, r)}))
    for _ in range(20):
        pts = [transform * tuple(rng.uniform(0, size, 2)) for _ in range(4)]
        items.append((road.id, {"type": "LineString", "coordinates": pts}))
    project.add_features(items)
    return raster, project.path


def measure(project_path: str, out: str, window: int | None) -> dict:
    """Build the first raster's label raster in this process; time and memory figures."""
    import rasterio.features  # noqa: F401 - imported before measuring: not part of the build

    from plugin.core.labeling.labelraster import build_label_raster
    from plugin.core.labeling.project import LabelingProject

    project = LabelingProject.open(project_path)
    raster = project.rasters()[0]

    def status_kib(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    before = status_kib("VmRSS")
    t0 = time.perf_counter()
    kwargs = {} if window is None else {"window_size": window}
    report = build_label_raster(project, raster, out, **kwargs)
    seconds = time.perf_counter() - t0
    peak = status_kib("VmHWM")  # not ru_maxrss: it can keep the parent's peak across exec
    return {"seconds": round(seconds, 2), "peak_added_mib": round((peak - before) / 1024, 1),
            "features": report["features"], "pixels": report["pixels"],
            "ignore_pixels": report["ignore_pixels"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--bands", type=int, default=1)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--folder", default=None, help="keep the inputs here (reused)")
    parser.add_argument("--measure", nargs=2, metavar=("PROJECT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.window)))
        return
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_labels_"))
    folder.mkdir(parents=True, exist_ok=True)
    project = folder / f"big_{args.size}.gpkg"
    if not project.exists():
        make_inputs(folder, args.size, args.bands)
    cmd = [sys.executable, __file__, "--measure", str(project), str(folder / "labels.tif")]
    if args.window:
        cmd += ["--window", str(args.window)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                       text=True).stdout.splitlines()[-1])
    full_mib = args.size * args.size / 2**20
    print(f"raster {args.size} x {args.size} x {args.bands} band(s) uint8 "
          f"(label array {full_mib:.0f} MiB): {result['seconds']} s, peak memory added "
          f"{result['peak_added_mib']} MiB ({result['peak_added_mib'] / full_mib:.2f} x the "
          f"label array); {result['features']} labels")
    print(json.dumps(result["pixels"]), "ignore", result["ignore_pixels"])


if __name__ == "__main__":
    main()
