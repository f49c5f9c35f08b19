"""Pixel regression (issue 21): a band combination learnt to R² ≥ 0.9, Predict Values' float32
GeoTIFF on the input's grid with nodata where the input is invalid, point targets widened by a
radius, the ONNX export, and one clear UserError for each bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plugin.core.errors import UserError
from plugin.core.jobs import RecordingContext
from plugin.core.regression.jobs import PredictValuesJob, TrainPixelRegressionJob
from plugin.core.regression.synthetic import (
    TARGET_NODATA,
    make_regression_scene,
    sample_points,
)

#: A CI-sized run: 32 optimiser steps of 8 windows of 64 px on a 96 px scene.
QUICK = {"patch_size": 64, "epochs": 4, "steps_per_epoch": 8, "batch_size": 8,
         "learning_rate": 0.003, "architecture": "unet", "encoder": "resnet18", "device": "cpu",
         "num_workers": 0}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_regression_scene(tmp_path_factory.mktemp("regression") / "scene", size=96)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    job = TrainPixelRegressionJob(rasters=[str(scene.raster)], targets=[str(scene.target)],
                                  split=75.0, output_model=str(out / "m.dltmodel.safetensors"),
                                  target_name="height", target_unit="m", **QUICK)
    assert job.problems() == []
    return job, job.run(RecordingContext())


def test_a_band_combination_is_learnt_to_r2_above_0_9(trained):
    job, result = trained
    from plugin.core.modelfile import read_model_card

    assert result["best_metric"] == "val_rmse"
    assert result["metrics"]["r2"] >= 0.9, result["metrics"]
    card = read_model_card(job.output_model, "pixel_regression")
    assert card["target"]["name"] == "height" and card["target"]["std"] > 0
    assert card["metrics"]["rmse"] == pytest.approx(result["best_score"])
    report = Path(result["report"]).read_text()
    assert "| MAE | RMSE | R² | bias |" in report and "predicted_vs_true.png" in report
    assert (Path(result["log_folder"]) / "predicted_vs_true.png").stat().st_size > 1000


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_predicted_values_are_float32_on_the_inputs_grid_with_nodata_where_it_is_invalid(
        trained, scene, tmp_path, engine, monkeypatch):
    import rasterio

    from plugin.core.regression.predict import NODATA

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job, _ = trained
    out = tmp_path / "values.tif"
    result = PredictValuesJob(input=str(scene.raster), model=job.output_model, output=str(out),
                              device="cpu", engine=engine, tta=engine == "torch"
                              ).run(RecordingContext())
    assert result["engine"] == engine
    with rasterio.open(out) as got, rasterio.open(scene.raster) as src, \
            rasterio.open(scene.target) as truth:
        assert got.dtypes[0] == "float32" and got.count == 1 and got.nodata == NODATA
        assert (got.crs, got.transform, got.shape) == (src.crs, src.transform, src.shape)
        values, invalid = got.read(1), (src.read() == 0).all(0)
        expected = truth.read(1)
    assert (values[invalid] == NODATA).all() and (values[~invalid] != NODATA).all()
    assert invalid.sum() == result["nodata_pixels"] == 12 * 12
    t, p = expected[~invalid], values[~invalid]
    r2 = 1 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    assert r2 > 0.85, r2   # the whole scene, training area included


def test_onnx_export_gives_the_models_values(trained, scene, tmp_path):
    import onnxruntime as ort
    import rasterio

    from plugin.core.modelfile import load_model
    from plugin.core.onnx_export import ExportOnnxJob

    job, _ = trained
    onnx_path = tmp_path / "m.onnx"
    result = ExportOnnxJob(model=job.output_model, output=str(onnx_path),
                           input_scale="raw").execute(RecordingContext())
    assert result["metadata"]["model_type"] == "Regressor"
    with rasterio.open(scene.raster) as src:
        x = src.read()[None, :, 16:80, 16:80].astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})[0]
    predictor, _ = load_model(job.output_model)
    import torch

    with torch.no_grad():
        want = predictor(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 1, 64, 64)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_points_with_a_radius_give_the_targets_and_train(scene, tmp_path):
    import rasterio

    from plugin.core.regression.data import burn_points

    points = sample_points(scene, tmp_path / "points.gpkg", n=40)
    burned = burn_points([str(scene.raster)], str(points), "height", 1, tmp_path / "t")[0]
    with rasterio.open(burned) as ds, rasterio.open(scene.target) as truth:
        target, exact = ds.read(1), truth.read(1)
    have = np.isfinite(target)
    assert 40 < have.sum() <= 40 * 5            # each point's pixel and its 4 neighbours
    from pyogrio.raw import read

    _, _, _, fields = read(str(points))
    assert set(target[have].tolist()) <= set(fields[0].astype(np.float32).tolist())
    assert np.abs(target[have] - exact[have]).mean() < 1.0   # a smooth field: neighbours agree
    job = TrainPixelRegressionJob(rasters=[str(scene.raster)], points=str(points),
                                  value_field="height", radius=1, split=80.0,
                                  output_model=str(tmp_path / "p.dltmodel.safetensors"),
                                  **{**QUICK, "epochs": 1, "steps_per_epoch": 2})
    assert job.problems() == []
    result = job.run(RecordingContext())
    assert result["steps"] == 2 and Path(job.output_model).is_file()


# -- bad input ----------------------------------------------------------------------------------
def _train(scene, target, tmp_path) -> TrainPixelRegressionJob:
    return TrainPixelRegressionJob(rasters=[str(scene.raster)], targets=[str(target)],
                                   output_model=str(tmp_path / "m.dltmodel.safetensors"),
                                   **{**QUICK, "epochs": 1, "steps_per_epoch": 1})


def _copy_target(scene, path: Path, **changes) -> Path:
    import rasterio

    with rasterio.open(scene.target) as src:
        profile, data = src.profile, src.read(1)
    profile.update(changes)
    data = changes.pop("_data", data)
    profile.pop("_data", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[:profile["height"], :profile["width"]], 1)
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"crs": "EPSG:32632"}, r"target raster t\.tif is in another CRS \(EPSG:32632\) than "
                            r"scene\.tif \(EPSG:32631\)"),
    ({"width": 90}, r"target raster t\.tif \(90 × 96 px, pixel 0\.5\) is not on the grid of "
                    r"scene\.tif \(96 × 96 px"),
])
def test_a_target_of_another_crs_or_grid_is_refused(scene, tmp_path, change, message):
    target = _copy_target(scene, tmp_path / "t.tif", **change)
    with pytest.raises(UserError, match=message) as caught:
        _train(scene, target, tmp_path).run(RecordingContext())
    assert "Warp" in caught.value.fix
    assert not (tmp_path / "m.dltmodel.safetensors").exists()


def test_an_all_nodata_target_is_refused(scene, tmp_path):
    target = _copy_target(scene, tmp_path / "t.tif",
                          _data=np.full((96, 96), TARGET_NODATA, np.float32))
    with pytest.raises(UserError, match=r"target raster t\.tif holds no value: every pixel is "
                                        r"nodata"):
        _train(scene, target, tmp_path).run(RecordingContext())


def test_a_regression_model_is_refused_by_classify_pixels_and_the_other_way_round(
        tmp_path, scene):
    from plugin.core.segmentation.jobs import ClassifyPixelsJob
    from tests.family_models import tiny_model

    regression = tiny_model("pixel_regression", tmp_path)
    segmentation = tiny_model("pixel_segmentation", tmp_path)
    classify = ClassifyPixelsJob(input=str(scene.raster), model=str(regression),
                                 output=str(tmp_path / "c.tif"))
    predict = PredictValuesJob(input=str(scene.raster), model=str(segmentation),
                               output=str(tmp_path / "v.tif"))
    for job, trained_for, needed in ((classify, "Pixel Regression", "Pixel Segmentation"),
                                     (predict, "Pixel Segmentation", "Pixel Regression")):
        with pytest.raises(UserError, match=f"was trained for {trained_for} .*this tool needs "
                                            f"{needed}"):
            job.execute(RecordingContext())
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "v.tif").exists()


def test_train_job_names_what_is_missing(tmp_path, scene):
    job = TrainPixelRegressionJob(output_model=str(tmp_path / "m.dltmodel.safetensors"))
    text = " ".join(job.problems())
    assert "PROJECT" in text and "INPUT_RASTERS" in text and "TARGETS" in text
    job = TrainPixelRegressionJob(rasters=[str(scene.raster)] * 2, targets=[str(scene.target)],
                                  output_model=str(tmp_path / "m.dltmodel.safetensors"))
    assert any("1 target raster(s) for 2 input raster(s)" in p for p in job.problems())
    job = TrainPixelRegressionJob(rasters=[str(scene.raster)], points=str(scene.raster),
                                  output_model=str(tmp_path / "m.dltmodel.safetensors"))
    assert any("VALUE_FIELD" in p for p in job.problems())
