"""Several processes (torch.distributed, gloo on the CPU): Classify Pixels splits the rows across
ranks and rank 0 assembles one GeoTIFF equal to the single-process one; the row shares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plugin.core.segmentation.predict import predict_raster
from plugin.core.tiling import rank_rows

ROOT = Path(__file__).resolve().parent.parent


def _stub(x: np.ndarray) -> np.ndarray:
    """Deterministic per-tile 'probabilities' that vary across the tile (3 classes)."""
    n, _, h, w = x.shape
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, None, None]
    p = np.concatenate([x[:, :1] / 255.0, x[:, 1:2] / 255.0 + ramp, 1 - x[:, 2:3] / 255.0 + 0 *
                        ramp], axis=1)
    return (p / p.sum(1, keepdims=True).clip(1e-6)).astype(np.float32)


def test_rank_shares_cover_every_row_once():
    for height, tile, overlap, world in [(200, 64, 0.25, 2), (1000, 256, 0.5, 3), (64, 64, 0, 4),
                                         (517, 128, 0.1, 5)]:
        spans = [rank_rows(height, 300, tile, overlap, r, world)[1:] for r in range(world)]
        assert spans[0][0] == 0 and spans[-1][1] == height
        assert all(spans[k][1] == spans[k + 1][0] for k in range(world - 1))


def test_ranks_rows_equal_the_whole_run(make_synthetic):
    """Each rank predicts every tile that overlaps its rows: blending gives the same rows."""
    import rasterio

    scene = make_synthetic("dist", size=200, bands=3, seed=3, nodata=0)

    def collect(part=None) -> tuple[np.ndarray, np.ndarray]:
        classes = np.full((200, 200), 77, np.uint8)
        probs = np.zeros((3, 200, 200), np.float32)

        def on_rows(r0, p, c, valid):
            classes[r0:r0 + c.shape[0]] = c
            probs[:, r0:r0 + c.shape[0]] = p

        with rasterio.open(scene.raster) as src:
            predict_raster(src, _stub, 3, [100.0] * 3, 64, 0.25, 3, False, on_rows, part=part)
        return classes, probs

    whole_c, whole_p = collect()
    world = 3
    parts = [collect(rank_rows(200, 200, 64, 0.25, r, world)[0]) for r in range(world)]
    for r, (c, p) in enumerate(parts):
        _, y0, y1 = rank_rows(200, 200, 64, 0.25, r, world)
        assert y1 > y0
        np.testing.assert_array_equal(c[y0:y1], whole_c[y0:y1])
        np.testing.assert_allclose(p[:, y0:y1], whole_p[:, y0:y1], rtol=0, atol=1e-6)
        assert (np.delete(c, np.s_[y0:y1], axis=0) == 77).all()   # nothing else written


@pytest.mark.timeout(300)
def test_classify_pixels_in_two_processes_equals_one(tmp_path, make_synthetic):
    """`dltrain run job.json --processes 2` (torchrun, gloo): one GeoTIFF (and probabilities),
    equal to the single-process run; no part files left."""
    import rasterio
    import torch

    from plugin.core import modelfile
    from plugin.core.segmentation.network import build_network

    torch.manual_seed(1)
    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "bright", "color": "#ff0000"},
               {"id": 2, "name": "dark", "color": "#0000ff"}]
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture="unet", encoder="resnet18", classes=classes, bands=3,
                               mean=[100.0] * 3, std=[50.0] * 3, nodata=0, patch_size=64,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631")
    model = modelfile.save_model(tmp_path / "m.dltmodel.safetensors",
                                 build_network("unet", "resnet18", 3, 3), card)
    scene = make_synthetic("dist2", size=200, bands=3, seed=2, nodata=0)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    outputs = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        job = {"kind": "classify_pixels", "version": 1, "params": {
            "input": str(scene.raster), "model": str(model), "output": str(out / "c.tif"),
            "output_probabilities": str(out / "p.tif"), "tile_size": 64, "overlap": 0.25,
            "batch_size": 2, "device": "cpu", "engine": "onnxruntime"}}
        (tmp_path / f"job{n}.json").write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "plugin.cli", "run", str(tmp_path / f"job{n}.json")]
        done = subprocess.run(cmd + (["--processes", "2"] if n == 2 else []), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=280)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        outputs[n] = out
    assert sorted(p.name for p in outputs[2].iterdir()) == ["c.tif", "p.tif"]
    for name in ("c.tif", "p.tif"):
        with rasterio.open(outputs[1] / name) as a, rasterio.open(outputs[2] / name) as b:
            assert (a.transform, a.crs, a.count, a.nodata) == (b.transform, b.crs, b.count,
                                                               b.nodata)
            np.testing.assert_array_equal(a.read(), b.read())
            if name == "c.tif":
                assert a.colormap(1)[1] == b.colormap(1)[1]
                assert len(np.unique(a.read())) >= 2


@pytest.mark.timeout(400)
def test_training_in_two_processes_writes_one_model(tmp_path):
    """`dltrain run train.json --processes 2` (torchrun, gloo, DistributedDataParallel): one best
    and one last model, one metrics.csv row per epoch, each rank half the steps; the ranks'
    private folders are gone."""
    import csv

    from plugin.core.demo import make_sample_project
    from plugin.core.segmentation.modelfile import load_model

    scene, project = make_sample_project(tmp_path / "data", 128)
    model = tmp_path / "out" / "model.dltmodel.safetensors"
    job = {"kind": "train_pixel_segmentation", "version": 1, "params": {
        "project": str(project), "architecture": "unet", "encoder": "resnet18", "patch_size": 64,
        "split": 75.0, "epochs": 2, "batch_size": 4, "steps_per_epoch": 4, "num_workers": 0,
        "device": "cpu", "output_model": str(model),
        "output_last_model": str(tmp_path / "out" / "last.dltmodel.safetensors")}}
    (tmp_path / "train.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "run", str(tmp_path / "train.json"),
                           "--processes", "2", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=380)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = [json.loads(line)["result"] for line in done.stdout.splitlines()
               if line.startswith('{"event": "result"')]
    main = next(r for r in results if "output_model" in r)
    assert main["epochs_run"] == 2 and main["steps"] == 4      # 2 epochs × 4 steps / 2 ranks
    assert sorted(p.name for p in model.parent.iterdir()) == [
        "last.dltmodel.safetensors", "last.dltmodel.safetensors.optim.safetensors",
        "model.dltmodel.safetensors", "model_logs"]
    logs = Path(main["log_folder"])
    assert not list(logs.glob(".rank*"))
    with open(logs / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    predictor, card = load_model(model)
    assert card["state"]["epoch"] in (1, 2) and card["state"]["global_step"] >= 2
