"""Detect Objects on the CPU runs through onnxruntime without importing torch once the model's
export is cached (the fixed cost before the first tile is onnxruntime's alone), and the NMS that
merges boxes across tiles without torch keeps exactly what torchvision's ``batched_nms`` keeps.
(The same boxes as torch from a trained detector: test_detection_train.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
from plugin.core.jobs import RecordingContext
from plugin.core.detection.jobs import DetectObjectsJob
job = DetectObjectsJob(input=sys.argv[1], model=sys.argv[2], output=sys.argv[3], device="cpu",
                       score_threshold=float(sys.argv[4]))
result = job.run(RecordingContext())
print(json.dumps({"engine": result["engine"], "torch": "torch" in sys.modules,
                  "detections": result["detections"]}))
"""


def test_cpu_detect_objects_never_imports_torch(tmp_path):
    import torch

    from plugin.core.detection.jobs import DetectObjectsJob
    from plugin.core.detection.modelfile import make_card, read_card, save_model
    from plugin.core.detection.network import build_detector
    from plugin.core.detection.predict import auto_tile
    from plugin.core.detection.predict_onnx import ort_tile_detector
    from plugin.core.detection.synthetic import make_object_scene

    torch.manual_seed(0)
    card = make_card(architecture="fcos_resnet18", classes=[{"id": 1, "name": "car",
                                                              "color": "#ff0000"}],
                     bands=3, mean=[80.0] * 3, std=[40.0] * 3, nodata=None, patch_size=64,
                     pixel_size=(0.5, 0.5), crs="EPSG:32631", score_threshold=0.3,
                     nms_iou=0.5, max_box_px=30.0)
    model = save_model(tmp_path / "m.dltmodel.safetensors",
                       build_detector("fcos_resnet18", 3, 2, 64, [80.0] * 3, [40.0] * 3), card)
    scene = make_object_scene(tmp_path / "s", size=128, n_objects=4, seed=3)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    try:   # caches the export the child then finds (random weights: scores near 0.01)
        job = DetectObjectsJob(input=str(scene.raster), model=str(model),
                               output=str(tmp_path / "x.gpkg"), score_threshold=0.001)
        card = read_card(model)
        assert ort_tile_detector(job, card, auto_tile(card, 0), 0.001, 0.5, "cpu").name == (
            "onnxruntime")
    finally:
        del os.environ["XDG_CACHE_HOME"]
    done = subprocess.run([sys.executable, "-c", CHILD, str(scene.raster), str(model),
                           str(tmp_path / "found.gpkg"), "0.001"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["engine"] == "onnxruntime" and out["torch"] is False, out
    assert out["detections"] > 0 and (tmp_path / "found.gpkg").stat().st_size > 0


def test_numpy_nms_keeps_what_batched_nms_keeps():
    import torch
    from torchvision.ops import batched_nms

    from plugin.core.detection.predict_onnx import nms_numpy

    rng = np.random.default_rng(0)
    for n in (0, 1, 50, 400):
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(5, 40, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.random(n)
        labels = rng.integers(1, 4, n)
        for iou in (0.3, 0.5, 0.7):
            ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                              torch.from_numpy(labels), iou).numpy()
            assert nms_numpy(boxes, scores, labels, iou).tolist() == ref.tolist()
