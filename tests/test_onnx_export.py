"""Export Model to ONNX: input scale folded into the graph, Deepness/GeoDeep metadata, the job."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qgis_helpers import dltrainer_provider

from plugin.core import modelfile, onnxfile
from plugin.core.errors import UserError
from plugin.core.jobs import RecordingContext
from plugin.core.onnx_export import ExportOnnxJob, check_input_scale, eight_bit_problem
from plugin.core.segmentation import export as segexport
from plugin.core.segmentation import modelfile as segmodel

# class id 2 is never learnt: Deepness needs consecutive class names all the same
CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "building", "color": "#e31a1c"},
           {"id": 3, "name": "water", "color": "#1f78b4"}]
MEAN, STD = [120.0, 110.0, 90.0], [50.0, 45.0, 40.0]


def make_model(path, **card_changes):
    """An untrained 3-band U-Net (resnet18) with an 8-bit card, saved to ``path``."""
    import torch

    from plugin.core.segmentation.network import build_network

    torch.manual_seed(0)
    net = build_network("unet", "resnet18", 3, 4)
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture="unet", encoder="resnet18", classes=CLASSES,
                               bands=3, mean=MEAN, std=STD, nodata=None, patch_size=64,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631", dtype="uint8")
    card.update(card_changes)
    modelfile.save_model(path, net, card)
    return card


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.dltmodel.safetensors"
    make_model(path)
    return path


def torch_probabilities(model_path, raw: np.ndarray) -> np.ndarray:
    import torch

    predictor, _ = segmodel.load_model(model_path)
    with torch.no_grad():
        return predictor(torch.from_numpy(raw)).numpy()


def ort_session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def raw_tiles(n=2, size=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, size, size)).astype(np.float32)


def test_unit_export_gives_the_torch_probabilities_on_pixels_over_255(model, tmp_path):
    job = ExportOnnxJob(model=str(model), output=str(tmp_path / "m.onnx"))
    assert job.input_scale == "unit" and job.scale == 255 and not job.problems()
    ctx = RecordingContext()
    result = job.run(ctx)
    assert result["OUTPUT"] == job.output and result["input_scale"] == 255.0
    assert any(e["event"] == "artifact" and e["path"] == job.output for e in ctx.events)
    sess = ort_session(job.output)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    # Deepness and GeoDeep take the tile size from a fixed square input shape
    assert inp.name == "image" and inp.shape[1:] == [3, 64, 64]
    assert out.shape[1:] == [4, 64, 64]
    raw = raw_tiles()
    got = sess.run(None, {"image": raw / np.float32(255)})[0]
    expect = torch_probabilities(model, raw)
    np.testing.assert_allclose(got, expect, atol=1e-4)
    assert np.allclose(got.sum(axis=1), 1, atol=1e-5)
    # the raw export (our own classifier's convention) takes the pixel values themselves
    raw_onnx = segexport.export_onnx(model, tmp_path / "raw.onnx", input_scale=1.0,
                                     tile_size=64)
    np.testing.assert_allclose(ort_session(raw_onnx).run(None, {"image": raw})[0], expect,
                               atol=1e-4)


def test_metadata_is_what_deepness_and_geodeep_parse(model, tmp_path):
    out = segexport.export_onnx(model, tmp_path / "m.onnx", input_scale=255.0, tile_size=64)
    meta = ort_session(out).get_modelmeta().custom_metadata_map
    values = {k: json.loads(v) for k, v in meta.items()}     # every value is JSON text
    assert values["model_type"] == "Segmentor"
    assert values["class_names"] == {"0": "background", "1": "building", "2": "unused_2",
                                      "3": "water"}
    assert isinstance(values["resolution"], float) and values["resolution"] == 50.0
    assert values["tiles_size"] == values["tile_size"] == 64
    assert isinstance(values["tiles_size"], int) and values["tiles_overlap"] == 25
    assert values["seg_thresh"] == 0.0 and values["seg_small_segment"] == 0
    assert values["dltrainer_input_scale"] == 255.0
    card = values["dltrainer_card"]
    assert card["classes"] == CLASSES and card["mean"] == MEAN and card["dtype"] == "uint8"
    # Deepness feeds (uint8 tile / 255 − standardization_mean) / standardization_std
    raw = raw_tiles(1, seed=1)
    mean = np.float32(values["standardization_mean"]).reshape(1, -1, 1, 1)
    std = np.float32(values["standardization_std"]).reshape(1, -1, 1, 1)
    fed = ((raw / np.float32(255) - mean) / std).astype(np.float32)
    np.testing.assert_allclose(ort_session(out).run(None, {"image": fed})[0],
                               torch_probabilities(model, raw), atol=1e-4)
    # a raw export tells Deepness to undo its division by 255
    raw_out = segexport.export_onnx(model, tmp_path / "raw.onnx", tile_size=64)
    raw_meta = {k: json.loads(v) for k, v in
                ort_session(raw_out).get_modelmeta().custom_metadata_map.items()}
    std = np.float32(raw_meta["standardization_std"]).reshape(1, -1, 1, 1)
    fed = ((raw / np.float32(255) - 0) / std).astype(np.float32)
    np.testing.assert_allclose(ort_session(raw_out).run(None, {"image": fed})[0],
                               torch_probabilities(model, raw), atol=1e-4)


def test_resolution_in_cm_follows_the_crs_units():
    card = {"pixel_size": [2.0, 2.0], "crs": "EPSG:2229"}         # US survey feet
    assert onnxfile.resolution_cm(card) == pytest.approx(2 * 30.48006, rel=1e-5)
    card = {"pixel_size": [1e-5, 1e-5], "crs": "EPSG:4326"}       # degrees ≈ 1.11 m
    assert onnxfile.resolution_cm(card) == pytest.approx(111.32, rel=1e-3)
    assert onnxfile.resolution_cm({"pixel_size": None, "crs": None}) is None


def test_unit_scale_refuses_models_not_trained_on_8bit_data(tmp_path):
    from safetensors.numpy import save_file

    card = {"dtype": "uint16", "mean": [1500.0], "std": [400.0]}
    path = tmp_path / "u16.safetensors"     # the card alone is enough for the job's checks
    save_file({"w": np.zeros(1, np.float32)}, str(path), metadata={
        "format": modelfile.FORMAT, "card": json.dumps({
            **card, "task": segmodel.TASK, "bands": 1, "patch_size": 64,
            "architecture": "unet", "encoder": "resnet18",
            "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "a"}]})})
    job = ExportOnnxJob(model=str(path), output=str(tmp_path / "m.onnx"))
    assert any("uint16" in p and "SCALE" in p for p in job.problems())
    job.scale = 65535.0
    assert job.problems() == []
    with pytest.raises(UserError, match="uint16") as info:
        check_input_scale(card, "unit", 255.0)
    assert "SCALE" in info.value.fix and "raw" in info.value.fix
    assert check_input_scale(card, "unit", 65535.0) == 65535.0   # the user knows the scale
    assert check_input_scale(card, "raw", 255.0) == 1.0
    # no dtype in older cards: the statistics decide
    assert "impossible for 8-bit" in eight_bit_problem({"mean": [1500.0], "std": [400.0]})
    assert "impossible for 8-bit" in eight_bit_problem({"mean": [128.0], "std": [200.0]})
    assert "0–1" in eight_bit_problem({"mean": [0.2, 0.3], "std": [0.1, 0.1]})
    assert eight_bit_problem({"mean": MEAN, "std": STD}) is None
    assert eight_bit_problem({"dtype": "uint8", "mean": [0.2], "std": [0.1]}) is None
    with pytest.raises(UserError, match="0–1"):
        check_input_scale({"mean": [0.2], "std": [0.1]}, "unit", 255.0)


def test_a_file_that_is_not_a_model_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    job = ExportOnnxJob(model=str(junk), output=str(tmp_path / "m.onnx"))
    with pytest.raises(UserError, match="not a Deep Learning Trainer model") as info:
        job.run(RecordingContext())
    assert "Train" in info.value.fix
    assert not (tmp_path / "m.onnx").exists()
    problems = " ".join(ExportOnnxJob(model=str(tmp_path / "none.safetensors"), output="",
                                      tile_size=100).problems())
    assert "does not exist" in problems and "OUTPUT" in problems and "use 96" in problems


def test_processing_runs_the_export_in_a_worker(qgis_processing, model, tmp_path):
    import processing  # noqa: PLC0415 - needs the QGIS app made by pytest-qgis
    from qgis.core import QgsProcessingException

    with dltrainer_provider():
        out = str(tmp_path / "deepness.onnx")
        result = processing.run("dltrainer:exportonnx", {
            "MODEL": str(model), "OUTPUT": out, "INPUT_SCALE": "unit", "SCALE": 255.0})
        assert result["OUTPUT"] == out and result["tile_size"] == 64
        meta = ort_session(out).get_modelmeta().custom_metadata_map
        assert json.loads(meta["class_names"])["3"] == "water"
        raw = raw_tiles(1, seed=2)
        np.testing.assert_allclose(
            ort_session(out).run(None, {"image": raw / np.float32(255)})[0],
            torch_probabilities(model, raw), atol=1e-4)
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"\x00" * 64)
        with pytest.raises(QgsProcessingException, match="not a Deep Learning Trainer model"):
            processing.run("dltrainer:exportonnx", {"MODEL": str(junk),
                                                    "OUTPUT": str(tmp_path / "j.onnx")})
