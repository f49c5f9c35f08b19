"""Synthetic pixel regression scenes with an exact answer, for tests and the demo.

:func:`make_regression_scene` writes a 3-band uint8 raster of smooth random fields and its
target, a fixed combination of the bands (:data:`WEIGHTS`, in "m"): a network can learn it
exactly, pixel by pixel. A nodata corner (input and target) checks that invalid pixels are
neither learnt nor predicted. :func:`band_target` writes such a target for any raster;
:func:`sample_points` draws points carrying the target's value (for point targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS = (0.06, -0.03, 0.02)   # value = Σ w_b · band_b + OFFSET (bands 0–255 → about −4…21)
OFFSET = 2.0
TARGET_NODATA = -9999.0


@dataclass
class RegressionScene:
    raster: Path       # 3-band uint8, nodata 0 on the corner rows/cols < ``corner``
    target: Path       # float32 value, TARGET_NODATA on the corner
    size: int


def make_regression_scene(folder: str | Path, size: int = 128, seed: int = 0,
                          corner: int = 12, pixel_size: float = 0.5) -> RegressionScene:
    """Write ``scene.tif`` (smooth random fields: 8 px blocks blurred, plus fine noise; values
    1–255) and ``target.tif`` (:func:`band_target`) into ``folder``; EPSG:32631."""
    import rasterio
    from rasterio.transform import from_origin
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    coarse = rng.uniform(0, 1, (3, size // 8 + 1, size // 8 + 1))
    fields = np.kron(coarse, np.ones((8, 8)))[:, :size, :size]
    fields = np.stack([gaussian_filter(f, 2.0) for f in fields])
    fields += rng.normal(0, 0.01, fields.shape)
    data = np.clip(1 + fields * 254, 1, 255).astype(np.uint8)
    data[:, :corner, :corner] = 0
    raster = folder / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs="EPSG:32631", nodata=0,
                       transform=from_origin(500_000.0, 5_600_000.0, pixel_size,
                                             pixel_size)) as dst:
        dst.write(data)
    target = band_target(raster, folder / "target.tif")
    return RegressionScene(raster, target, size)


def band_target(raster: str | Path, out: str | Path) -> Path:
    """A float32 target on ``raster``'s grid: ``Σ WEIGHTS[b] · band_b + OFFSET`` over its first
    three data bands (alpha is a mask), TARGET_NODATA where the raster is not valid."""
    import rasterio

    from ..validpixels import read_data, valid_mask

    with rasterio.open(raster) as src:
        data = read_data(src).astype(np.float32)
        valid = valid_mask(src, data)
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": "float32", "crs": src.crs, "transform": src.transform,
                   "nodata": TARGET_NODATA}
    value = sum(w * data[b] for b, w in enumerate(WEIGHTS)) + OFFSET
    value = np.where(valid, value, TARGET_NODATA).astype(np.float32)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(value, 1)
    return Path(out)


def sample_points(scene: RegressionScene, out: str | Path, n: int = 60, seed: int = 1,
                  field: str = "height") -> Path:
    """A GeoPackage of ``n`` random points on valid pixels of ``scene`` (at pixel centres),
    each with the target's value there in ``field``."""
    import rasterio
    import shapely
    from pyogrio.raw import write

    rng = np.random.default_rng(seed)
    with rasterio.open(scene.target) as ds:
        target, t, crs = ds.read(1), ds.transform, ds.crs.to_wkt()
    rows, cols = np.nonzero(target != TARGET_NODATA)
    pick = rng.choice(len(rows), n, replace=False)
    xs, ys = t * (cols[pick] + 0.5, rows[pick] + 0.5)
    geoms = shapely.points(xs, ys)
    write(str(out), shapely.to_wkb(geoms), [target[rows[pick], cols[pick]].astype(np.float64)],
          [field], layer="points", driver="GPKG", geometry_type="Point", crs=crs)
    return Path(out)
