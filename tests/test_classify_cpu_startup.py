"""Classify Pixels on onnxruntime (CPU) loads neither torch nor the torch model once the model's
ONNX export is cached: the fixed cost before the first tile is onnxruntime's alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
t = time.perf_counter()
from plugin.core.jobs import RecordingContext
from plugin.core.segmentation.jobs import ClassifyPixelsJob
job = ClassifyPixelsJob(input=sys.argv[1], model=sys.argv[2], output=sys.argv[3], tile_size=64,
                        device=sys.argv[4])
result = job.run(RecordingContext())
print(json.dumps({"engine": result["engine"], "torch": "torch" in sys.modules,
                  "seconds": time.perf_counter() - t}))
"""


def test_cpu_classify_never_imports_torch(tmp_path, make_synthetic):
    import torch

    from plugin.core import modelfile
    from plugin.core.inference import make_engine
    from plugin.core.segmentation.export import export_onnx
    from plugin.core.segmentation.network import build_network

    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "thing", "color": "#ff0000"}]
    torch.manual_seed(0)
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture="unet", encoder="resnet18", classes=classes, bands=3,
                               mean=[100.0] * 3, std=[50.0] * 3, nodata=None, patch_size=64,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631")
    model = modelfile.save_model(tmp_path / "m.dltmodel.safetensors",
                                 build_network("unet", "resnet18", 3, 2), card)
    scene = make_synthetic("startup", size=96, bands=3, seed=1)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    try:
        assert make_engine(model, None, "cpu", export=export_onnx).name == "onnxruntime"
    finally:
        del os.environ["XDG_CACHE_HOME"]
    for device in ("cpu", "auto"):
        done = subprocess.run([sys.executable, "-c", CHILD, str(scene.raster), str(model),
                               str(tmp_path / f"c_{device}.tif"), device], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        if device == "auto" and Path("/proc/driver/nvidia/version").exists():
            continue   # a GPU machine classifies on CUDA with torch
        assert out["engine"] == "onnxruntime" and out["torch"] is False, out
        assert (tmp_path / f"c_{device}.tif").stat().st_size > 0
