"""The model file (pickle-free safetensors + card), ONNX export, and the job specs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from plugin.core import modelfile
from plugin.core.errors import UserError
from plugin.core.jobs import Job, job_classes
from plugin.core.params import param_fields
from plugin.core.segmentation import export as segexport
from plugin.core.segmentation import modelfile as segmodel
from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob

CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "building", "color": "#e31a1c"},
           {"id": 2, "name": "water", "color": "#1f78b4"}]


def tiny_model(path, architecture="unet", bands=4, task=None):
    import torch

    from plugin.core.segmentation.network import build_network

    torch.manual_seed(0)
    net = build_network(architecture, "resnet18", bands, 3)
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture=architecture, encoder="resnet18", classes=CLASSES,
                               bands=bands, mean=[10.0] * bands, std=[2.0] * bands,
                               nodata=0, patch_size=64, pixel_size=(0.5, 0.5),
                               crs="EPSG:32631", training={"epochs": 1},
                               metrics={"accuracy": 0.5})
    if task:
        card["task"] = task
    modelfile.save_model(path, net, card)
    return net, card


def test_round_trip_without_pickle(tmp_path, monkeypatch):
    import torch

    path = tmp_path / "m.dltmodel.safetensors"
    net, card = tiny_model(path)

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    predictor, loaded = segmodel.load_model(path)
    assert loaded["classes"] == CLASSES and loaded["bands"] == 4
    assert loaded["task"] == "pixel_segmentation" and loaded["format_version"] == 1
    assert loaded["plugin_version"] not in ("", None)
    x = torch.rand(1, 4, 64, 64) * 20
    net.eval()
    with torch.no_grad():
        expect = torch.softmax(net((x - 10.0) / 2.0), 1)
        got = predictor(x)
    assert torch.allclose(got, expect, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp"))   # atomic write left no temporary file


def test_not_a_model_and_wrong_task_are_user_errors(tmp_path):
    from safetensors.numpy import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="not a Deep Learning Trainer model"):
        segmodel.read_card(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(plain))
    with pytest.raises(UserError, match="not a Deep Learning Trainer model"):
        segmodel.load_model(plain)
    other = tmp_path / "det.safetensors"
    tiny_model(other, task="object_detection")
    with pytest.raises(UserError, match="object_detection"):
        segmodel.load_model(other)
    with pytest.raises(UserError, match="does not exist"):
        segmodel.read_card(tmp_path / "missing.safetensors")


def test_onnx_export_matches_torch_and_carries_the_card(tmp_path):
    import onnx
    import onnxruntime as ort
    import torch

    path = tmp_path / "m.safetensors"
    tiny_model(path, bands=4)
    out = segexport.export_onnx(path, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    card = json.loads(props["dltrainer_card"])
    assert card["task"] == "pixel_segmentation" and json.loads(props["model_type"]) == "Segmentor"
    assert json.loads(props["class_names"])["2"] == "water"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(0).random((2, 4, 96, 128)) * 20).astype(np.float32)
    y = sess.run(None, {"image": x})[0]
    predictor, _ = segmodel.load_model(path)
    with torch.no_grad():
        expect = predictor(torch.from_numpy(x)).numpy()
    assert y.shape == (2, 3, 96, 128)
    np.testing.assert_allclose(y, expect, atol=1e-4)


def test_optimizer_state_round_trip(tmp_path):
    import torch

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    modelfile.save_optimizer(tmp_path / "last.safetensors", opt)
    opt2 = torch.optim.AdamW(net.parameters(), lr=0.5)
    assert modelfile.load_optimizer(tmp_path / "last.safetensors", opt2)
    a, b = opt.state_dict(), opt2.state_dict()
    assert b["param_groups"][0]["lr"] == 0.01
    for k in a["state"]:
        assert torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])
    assert not modelfile.load_optimizer(tmp_path / "other.safetensors", opt2)
    # with the training weights (the model file holding their average)
    modelfile.save_optimizer(tmp_path / "last.safetensors", opt, net)
    assert modelfile.load_optimizer(tmp_path / "last.safetensors", opt2)
    other = torch.nn.Linear(3, 2)
    assert modelfile.load_training_weights(tmp_path / "last.safetensors", other)
    assert torch.equal(other.weight, net.weight) and torch.equal(other.bias, net.bias)
    assert not modelfile.load_training_weights(tmp_path / "last.safetensors",
                                               torch.nn.Linear(3, 4))   # does not fit


def test_model_files_get_the_mode_of_other_outputs(tmp_path):
    """Model and optimizer files are 0644 under umask 022 like every other output (the
    safetensors writer alone made them 0600)."""
    import os
    import stat

    import torch

    old = os.umask(0o022)
    try:
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(net.parameters())
        path = modelfile.optimizer_path(tmp_path / "last.safetensors")
        modelfile.save_optimizer(tmp_path / "last.safetensors", opt)
        (tmp_path / "other.tif").write_bytes(b"x")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        assert stat.S_IMODE(os.stat(tmp_path / "other.tif").st_mode) == 0o644
    finally:
        os.umask(old)


def test_job_specs_and_problems(tmp_path):
    kinds = job_classes()
    assert kinds["train_pixel_segmentation"] is TrainPixelSegmentationJob
    assert kinds["classify_pixels"] is ClassifyPixelsJob
    names = [ps.name for _, ps in param_fields(TrainPixelSegmentationJob)]
    for n in ("PROJECT", "ARCHITECTURE", "ENCODER", "PATCH_SIZE", "SPLIT", "SHUFFLE",
              "FEATURE_PATCH_PERCENTAGE", "BACKGROUND_PATCH_RATIO", "EPOCHS", "BATCH_SIZE",
              "LEARNING_RATE", "AUGMENT_ROTATION", "AUGMENT_SCALE", "CLASS_WEIGHT_MIN",
              "CLASS_WEIGHT_MAX", "LOSS_WEIGHT", "DEVICE", "OUTPUT_MODEL", "OUTPUT_LAST_MODEL"):
        assert n in names
    job = TrainPixelSegmentationJob()
    assert job.architecture == "auto" and job.encoder == "auto"     # chosen for the device
    from plugin.core.segmentation.network import resolve_auto

    assert resolve_auto("auto", "auto", "cpu") == ("unet", "resnet18")
    assert resolve_auto("auto", "auto", "cuda") == ("unetplusplus", "resnet34")
    assert resolve_auto("deeplabv3plus", "auto", "cpu")[0] == "deeplabv3plus"
    assert job.background_patch_ratio == 0.15 and job.epochs == 25
    project = tmp_path / "p.gpkg"
    project.write_bytes(b"")
    job = TrainPixelSegmentationJob(project=str(project), patch_size=250,
                                    output_model=str(tmp_path / "m.safetensors"),
                                    class_weight_min=3, class_weight_max=2, device="gpu")
    text = " ".join(job.problems())
    assert "use 256" in text and "swap" in text and "DEVICE" in text
    job.save(tmp_path / "job.json")
    again = Job.load(tmp_path / "job.json")
    assert again == job
    assert again.resolved_log_folder() == str(tmp_path / "m_logs")
    c = ClassifyPixelsJob(input=str(project), model=str(project), output=str(project))
    assert any("would be overwritten" in p for p in c.problems())
