"""The demo (`python3 build.py demo`): label -> train -> classify on the sample, end to end."""

from __future__ import annotations

import rasterio

from plugin.core.demo import run_demo
from plugin.core.jobs import RecordingContext


def test_demo_runs_end_to_end_and_lists_its_outputs(tmp_path):
    ctx = RecordingContext()
    result = run_demo(tmp_path / "demo", ctx, epochs=2, size=128, detector_epochs=1)
    for key in ("labeling_project", "model", "class_raster", "polygons", "report",
                "grid_model", "grid_cells", "chip_model", "chips_classified", "detector",
                "detections", "detection_centres", "regression_model", "value_raster"):
        assert result[key] and __import__("pathlib").Path(result[key]).exists(), key
    assert len(result["label_rasters"]) == 1
    with rasterio.open(result["sample_raster"]) as src, \
            rasterio.open(result["class_raster"]) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
    phases = [e["phase"] for e in ctx.events if e["event"] == "progress"]
    assert "epoch" in phases
