"""START_WEIGHTS, the same for every family (issue 19, item 4): a matrix over the family table.

Each family's network is built as its training task builds it, from a local weights file made
from the same architecture (3-band, random weights): the tensors come from the file and, for a
5-band raster, the first convolution keeps the RGB kernels for the first three bands and their
mean for the others, scaled by 3 / 5. No download: the pretrained choice is tried offline.
"""

from __future__ import annotations

import pytest
import torch

from plugin.core.errors import UserError
from plugin.core.families import FAMILIES
from plugin.core.jobs import RecordingContext, job_class

FAMILY_PARAMS = [pytest.param(fam, id=fam.task) for fam in FAMILIES]
#: The light architecture of each family (the one that builds fastest).
LIGHT = {"pixel_segmentation": "unet", "pixel_regression": "unet",
         "object_detection": "fcos_resnet18", "instance_segmentation": "maskrcnn_resnet18",
         "grid": "resnet18", "chip_classification": "resnet18"}
CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "a", "color": "#ff0000"}, {"id": 2, "name": "b", "color": "#0000ff"}]


def test_every_family_has_a_light_architecture_here():
    assert set(LIGHT) == {fam.task for fam in FAMILIES}


def build(fam, bands: int, start: str):
    """(network, log) as the family's training task builds it with START_WEIGHTS ``start``."""
    from plugin.core.families import make_task

    job = job_class(fam.train_kind)(architecture=LIGHT[fam.task], start_weights=str(start))
    task = make_task(fam.train_kind)
    task.job, task.ctx = job, RecordingContext()
    task.bands, task.mean, task.std = bands, [100.0] * bands, [50.0] * bands
    task.architecture, task.encoder = LIGHT[fam.task], "resnet18"
    task.num_outputs, task.patch_size, task.round, task.classes = 3, 64, 1, CLASSES
    network = task.build_network(None)
    return network, [e["message"] for e in task.ctx.events if e["event"] == "log"]


def save_state(net, path):
    """``net``'s tensors as a weights file (.safetensors or a torch state dict)."""
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return state


@pytest.mark.parametrize("fam", FAMILY_PARAMS)
def test_start_weights_from_a_local_file_for_3_and_5_bands(fam, tmp_path):
    from plugin.core.training.start_weights import first_conv_name

    torch.manual_seed(1)
    source, _ = build(fam, 3, "random")
    for bands, name in ((3, "start.safetensors"), (5, "start.pth")):
        file = save_state(source, tmp_path / name)
        torch.manual_seed(2)   # other random weights than the file's
        net, log = build(fam, bands, tmp_path / name)
        own = net.state_dict()
        deep = next(k for k in own if k.endswith("layer4.1.conv2.weight"))
        assert torch.equal(own[deep], file[deep]), deep
        first = first_conv_name(net)
        assert own[first].shape[1] == bands
        if bands == 3:
            assert torch.equal(own[first], file[first])
        else:   # RGB kernels kept for bands 1–3, their mean for 4–5, all × 3/5
            rgb = file[first]
            assert torch.allclose(own[first][:, :3], rgb * 3 / 5)
            mean = rgb.mean(dim=1) * 3 / 5
            assert torch.allclose(own[first][:, 3], mean) and torch.allclose(own[first][:, 4],
                                                                               mean)
        assert any("Start weights" in line for line in log), log
        if fam.pretrained == "coco":   # torchvision detectors: backbone batch norms frozen
            bn = net.backbone.body.bn1
            net.train()
            assert not bn.training and not bn.weight.requires_grad
            assert type(bn).__name__ == "FrozenStatsBatchNorm2d"
            assert set(bn.state_dict()) == set(torch.nn.BatchNorm2d(4).state_dict())


@pytest.mark.parametrize("fam", FAMILY_PARAMS)
def test_a_missing_file_or_another_architectures_file_is_a_user_error(fam, tmp_path):
    job = job_class(fam.train_kind)(architecture=LIGHT[fam.task],
                                    start_weights=str(tmp_path / "nowhere.pth"))
    problem = [p for p in job.problems() if "START_WEIGHTS" in p]
    assert problem and "nowhere.pth" in problem[0] and fam.pretrained in problem[0]
    with pytest.raises(UserError, match="does not exist"):
        build(fam, 3, tmp_path / "nowhere.pth")
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.Conv2d(8, 8, 3))
    save_state(other, tmp_path / "other.pth")
    with pytest.raises(UserError, match="another architecture") as err:
        build(fam, 3, tmp_path / "other.pth")
    assert "START_WEIGHTS random" in err.value.fix
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    with pytest.raises(UserError, match="not a safetensors file"):
        build(fam, 3, tmp_path / "junk.safetensors")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download works: torch hub (torchvision, timm's hub weights) fails with the URLError
    an unreachable host gives, the Hugging Face hub (timm, smp) is offline; both caches empty."""
    import urllib.error

    import huggingface_hub.constants

    def unreachable(*_args, **_kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


@pytest.mark.parametrize("fam", FAMILY_PARAMS)
def test_the_pretrained_choice_offline_names_the_cache_and_a_local_file(fam, offline):
    with pytest.raises(UserError) as err:
        build(fam, 4, fam.pretrained)
    assert str(err.value).startswith("Offline:")
    assert str(offline) in err.value.fix and "local weights file" in err.value.fix


def test_older_weight_settings_still_load_as_start_weights(tmp_path):
    from plugin.core.jobs import Job

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")

    def load(kind, **params):
        return Job.from_dict({"kind": kind, "params": params}).start_weights

    assert load("train_pixel_segmentation", encoder_weights="imagenet") == "imagenet"
    assert load("train_pixel_segmentation", encoder_weights="none") == "random"
    assert load("train_pixel_segmentation", encoder_weights="imagenet",
                encoder_weights_file=str(weights)) == str(weights)
    assert load("train_pixel_regression", encoder_weights="imagenet") == "imagenet"
    assert load("train_grid_model", weights="imagenet") == "imagenet"
    assert load("train_chip_classifier", weights="none", weights_file=str(weights)) == str(
        weights)
    assert load("train_pixel_segmentation", encoder_weights="imagenet",
                start_weights="random") == "random"
    with pytest.raises(UserError, match="Unknown setting"):   # never a setting of detection
        load("train_object_detection", encoder_weights="imagenet")


def test_the_first_convolution_rule_for_fewer_bands():
    from plugin.core.training.start_weights import adapt_first_conv_weight

    rgb = torch.randn(8, 3, 7, 7)
    one = adapt_first_conv_weight(rgb, 1)
    assert torch.allclose(one, rgb[:, :1] * 3)
    assert adapt_first_conv_weight(rgb, 3) is rgb


@pytest.mark.parametrize("fam", FAMILY_PARAMS)
def test_training_from_a_weights_file_writes_a_model_that_loads(fam, tmp_path):
    """A short training of every family from a START_WEIGHTS file: the log names it, the model
    file loads strictly into the plain network (frozen batch norms keep nn.BatchNorm2d's keys)
    and, for the torchvision detectors, the backbone's batch-norm statistics are the file's."""
    from family_models import rgba_project, train_job
    from safetensors.torch import load_file

    from plugin.core import modelfile

    torch.manual_seed(3)
    file = save_state(build(fam, 3, "random")[0], tmp_path / "start.safetensors")
    model = tmp_path / "m.dltmodel.safetensors"
    job = train_job(fam.task, rgba_project(tmp_path / "scene"), model)
    job.start_weights = str(tmp_path / "start.safetensors")
    assert job.problems() == []
    ctx = RecordingContext()
    job.run(ctx)
    assert any(e.get("message", "").startswith("Start weights") for e in ctx.events)
    modelfile.load_model(model, fam.task)
    if fam.pretrained == "coco":
        saved = load_file(str(model))
        for key in ("backbone.body.bn1.running_mean", "backbone.body.layer1.0.bn1.weight"):
            assert torch.equal(saved[key], file[key]), key


@pytest.mark.parametrize("fam", FAMILY_PARAMS)
def test_bad_start_weights_are_named_before_the_job_starts(fam, tmp_path):
    """What a user types or picks by mistake is refused by the job's checks (the dialog's
    message, Processing's parameter check, dltrain before any work), each saying what is
    wrong: found by trying them (a text file renamed .pth used to fail only once the network
    was built, with "IndexError: pop from empty list")."""
    from safetensors.torch import save_file

    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "notes.pth").write_text("not weights")
    (tmp_path / "notes.safetensors").write_text("not weights")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"w": torch.zeros(2)}, tmp_path / "good.pth")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "good.safetensors"))
    save_file({}, str(tmp_path / "none.safetensors"))
    expected = {"": "is empty", " Random": "write random (lower case",
                str(tmp_path / "folder.pth"): "is a folder",
                str(tmp_path / "nowhere" / "w.pth"): "does not exist",
                "nowhere.safetensors": "does not exist",
                str(tmp_path / "notes.pth"): "nor a file saved with torch.save",
                str(tmp_path / "notes.safetensors"): "not a safetensors file",
                str(tmp_path / "empty.pth"): "is empty",
                str(tmp_path / "none.safetensors"): "holds no tensors",
                "imagnet": "is neither random"}
    for value, words in expected.items():
        job = job_class(fam.train_kind)(start_weights=value)
        found = [p for p in job.problems() if "START_WEIGHTS" in p]
        assert len(found) == 1 and words in found[0], (value, found)
    for value in ("random", fam.pretrained, tmp_path / "good.pth", tmp_path / "good.safetensors"):
        job = job_class(fam.train_kind)(start_weights=str(value))
        assert not [p for p in job.problems() if "START_WEIGHTS" in p], value


def test_a_pickled_network_is_refused_with_the_state_dict_fix(tmp_path):
    from plugin.core.training.start_weights import read_state_file

    torch.save(torch.nn.Conv2d(3, 4, 1), tmp_path / "whole.pth")
    with pytest.raises(UserError, match="objects besides tensors") as err:
        read_state_file(tmp_path / "whole.pth")
    assert "model.state_dict()" in err.value.fix and "\x1b" not in err.value.message


def test_a_download_failure_reads_in_one_plain_line():
    """A URLError's text is ``<urlopen error …>``: the Training Model window and the message
    bar render messages as rich text and showed "(URLError: )"."""
    import urllib.error

    from plugin.core.training.start_weights import reason

    assert reason(urllib.error.URLError(OSError(-2, "Name or service not known"))) == (
        "URLError: [Errno -2] Name or service not known")
    assert reason(RuntimeError("\x1b[1mbold\x1b[0m first\nsecond")) == "RuntimeError: bold first"


def test_hub_weights_come_from_the_cache_first_and_offline_fails_at_once(monkeypatch):
    """timm's and smp's weights: one try in the hub's offline mode (the cache; no request),
    then, with the hub unreachable, the offline message at once (the hub's own retries took
    25–50 s here, printing a warning each)."""
    from huggingface_hub import constants

    from plugin.core.training import start_weights

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    probes, modes = [], []
    monkeypatch.setattr(start_weights, "reachable", lambda url, t: probes.append(url) or False)

    def not_cached():
        modes.append(constants.HF_HUB_OFFLINE)
        raise OSError("not in the cache")

    with pytest.raises(UserError, match="^Offline: w could not be downloaded") as err:
        start_weights.hf_hub_state("w", not_cached)
    assert modes == [True] and probes == [constants.ENDPOINT]
    assert "cannot be reached" in err.value.message and constants.HF_HUB_OFFLINE is False
    assert start_weights.hf_hub_state("w", lambda: {"cached": modes.append(1)}) == {
        "cached": None}
    assert len(probes) == 1   # found in the cache: the hub is not asked


def test_an_unknown_older_weights_choice_is_refused_not_made_random():
    """ENCODER_WEIGHTS / WEIGHTS were none / imagenet (0 / 1 in Processing); anything else was
    refused and must not quietly train from random weights."""
    from plugin.core.jobs import Job

    for kind, name in (("train_pixel_segmentation", "encoder_weights"),
                       ("train_grid_model", "weights")):
        with pytest.raises(UserError, match=f"{name.upper()} 'imagnet'") as err:
            Job.from_dict({"kind": kind, "params": {name: "imagnet"}})
        assert "START_WEIGHTS" in err.value.fix
        assert Job.from_dict({"kind": kind, "params": {name: 1}}).start_weights == "imagenet"
        assert Job.from_dict({"kind": kind, "params": {name: "0"}}).start_weights == "random"


@pytest.mark.parametrize("fam", FAMILY_PARAMS)
def test_a_relative_start_weights_file_is_made_absolute_before_the_job_leaves(fam, tmp_path,
                                                                              monkeypatch):
    """START_WEIGHTS is free text, not a file field: `qgis_process … --START_WEIGHTS=w.pth`
    passed the checks in the caller's folder, then the worker (another folder) did not find
    it. A path that exists is made absolute; words stay as typed, even with a file of that
    name in the folder."""
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    (tmp_path / fam.pretrained).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    kind = job_class(fam.train_kind)
    assert kind(start_weights="w.pth").with_absolute_paths().start_weights == str(
        tmp_path / "w.pth")
    for word in ("random", fam.pretrained, "imagnet", "nowhere.pth"):
        assert kind(start_weights=word).with_absolute_paths().start_weights == word
    monkeypatch.setenv("HOME", str(tmp_path))   # ~ is checked (the dialog) and read as home
    assert not [p for p in kind(start_weights="~/w.pth").problems() if "START_WEIGHTS" in p]
