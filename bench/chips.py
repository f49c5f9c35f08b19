"""Chip export throughput: Export Training Chips vs bare rasterio read + write of the same windows.

    python bench/chips.py [--size 8192] [--patch 256] [--repeat 2]

Writes a synthetic RGB uint8 raster (tiled GeoTIFF) and its label raster into a temporary folder,
then measures, side by side and alternating (best of ``--repeat`` runs each):
- segmentation export (image + mask GeoTIFF pairs, planning included) vs bare read + write of the
  image and label windows as GeoTIFF pairs;
- an image-only export (ImageFolder) vs bare read + write of the image windows.
Prints chips/s and the ratio export / bare (target ≥ 0.5).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugin.core.sampling import SampleSource, SamplingConfig  # noqa: E402
from plugin.core.sampling.export import export_chips  # noqa: E402
from plugin.core.sampling.exporters.common import ExportInput, ExportOptions  # noqa: E402


def make_inputs(folder: Path, size: int, patch: int) -> SampleSource:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:32631",
               "transform": from_origin(500000, 5600000, 0.5, 0.5), "tiled": True,
               "blockxsize": 256, "blockysize": 256}
    rng = np.random.default_rng(0)
    image, labels = folder / "big.tif", folder / "big_labels.tif"
    strip = 1024
    with rasterio.open(image, "w", count=3, dtype="uint8", **profile) as img, \
            rasterio.open(labels, "w", count=1, dtype="uint8", nodata=255, **profile) as lab:
        for r0 in range(0, size, strip):
            h = min(strip, size - r0)
            img.write(rng.integers(0, 255, (3, h, size), dtype=np.uint8),
                      window=Window(0, r0, size, h))
            lab_strip = np.zeros((h, size), np.uint8)
            for r in range(r0 - r0 % patch, r0 + h, patch):   # a feature in every other patch
                for c in range(0, size, 2 * patch):
                    lo, hi = max(r + 20 - r0, 0), max(min(r + 60 - r0, h), 0)
                    lab_strip[lo:hi, c + 20:c + 60] = 1 + (c // patch) % 3
            lab.write(lab_strip, 1, window=Window(0, r0, size, h))
    return SampleSource(str(image), str(labels), "auto", "big")


def bare(src: SampleSource, out: Path, patch: int, with_mask: bool) -> int:
    import rasterio
    from rasterio.windows import Window

    n = 0
    with rasterio.open(src.image) as img, rasterio.open(src.labels) as lab:
        for r in range(0, img.height, patch):
            for c in range(0, img.width, patch):
                window = Window(c, r, patch, patch)
                profile = {"driver": "GTiff", "width": patch, "height": patch,
                           "crs": img.crs, "transform": img.window_transform(window)}
                with rasterio.open(out / f"{r}_{c}.tif", "w", count=3, dtype="uint8",
                                   **profile) as dst:
                    dst.write(img.read(window=window))
                if with_mask:
                    with rasterio.open(out / f"{r}_{c}_mask.tif", "w", count=1, dtype="uint8",
                                       nodata=255, **profile) as dst:
                        dst.write(lab.read(1, window=window), 1)
                n += 1
    return n


def timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dltrainer-bench-"))
    try:
        t0 = time.perf_counter()
        src = make_inputs(tmp, args.size, args.patch)
        print(f"raster {args.size} x {args.size} x 3 uint8 written in "
              f"{time.perf_counter() - t0:.1f} s; {args.patch} px chips", flush=True)
        data = ExportInput([src], [(1, "a", "#ff0000"), (2, "b", "#00ff00"),
                                   (3, "c", "#0000ff")])
        # every patch (feature and background) so both sides write the same windows
        config = SamplingConfig(patch_size=args.patch, split=80, background_patch_ratio=100)

        def export(fmt: str):
            def go() -> int:
                out = tmp / f"export_{fmt}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                return export_chips(data, out, config, ExportOptions(format=fmt))["count"]
            return go

        def raw(with_mask: bool):
            def go() -> int:
                out = tmp / f"bare_{with_mask}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                return bare(src, out, args.patch, with_mask)
            return go

        for label, ours, theirs in (("image + mask pairs (segmentation)", export("segmentation"),
                                     raw(True)),
                                    ("image only (imagefolder)", export("imagefolder"),
                                     raw(False))):
            best_ours = best_bare = float("inf")
            n_ours = n_bare = 0
            for _ in range(args.repeat):   # alternate, keep the best of each
                t, n_bare = timed(theirs)
                best_bare = min(best_bare, t)
                t, n_ours = timed(ours)
                best_ours = min(best_ours, t)
            ours_rate, bare_rate = n_ours / best_ours, n_bare / best_bare
            print(f"{label}: export {n_ours} chips in {best_ours:.2f} s = {ours_rate:.1f} "
                  f"chips/s | bare rasterio {n_bare} in {best_bare:.2f} s = {bare_rate:.1f} "
                  f"chips/s | ratio {ours_rate / bare_rate:.2f} (target >= 0.5)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
