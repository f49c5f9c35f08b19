"""Bad input to ``dltrain`` and to the detection settings (issue 18): ``--set`` values count
before a job is checked, ``--processes`` beyond the machine is refused, a failing rank is named
with the first line of its error, and Detect Objects' "-1 = the model's value" fields refuse
other values outside 0–1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin import cli
from plugin.core import distributed
from plugin.core.errors import UserError
from plugin.core.labeling.project import LabelingProject

ROOT = Path(__file__).resolve().parent.parent


def _project(tmp_path: Path, scene) -> Path:
    p = LabelingProject.create(tmp_path / "labels.gpkg", scene.crs)
    p.add_class("building")
    p.add_raster(scene.raster)
    p.add_features([(1, scene.features[0]["geometry"])])
    return p.path


def _job_file(tmp_path: Path, kind: str, **params) -> str:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps({"kind": kind, "version": 1, "params": params}))
    return str(path)


def test_set_values_count_before_the_processes_check(tmp_path, synthetic_scene, capsys,
                                                     monkeypatch):
    """`run job.json --processes N --set project=… --set output_model=…`: the job is checked
    with the --set values; without them it is refused for the missing PROJECT."""
    monkeypatch.setattr(distributed, "process_limit", lambda device: (2, "two cores"))
    job = _job_file(tmp_path, "train_pixel_segmentation", device="cpu", epochs=1)
    gpkg = _project(tmp_path, synthetic_scene)
    assert cli.main(["run", job, "--processes", "2"]) == 2
    assert "PROJECT" in capsys.readouterr().err
    rc = cli.main(["run", job, "--processes", "3", "--set", f"project={gpkg}",
                   "--set", f"output_model={tmp_path / 'm.dltmodel.safetensors'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "PROJECT" not in err and "OUTPUT_MODEL" not in err
    assert "--processes 3 is more than this machine can run: two cores" in err
    assert "Use --processes 2 or fewer" in err


def test_more_processes_than_cpu_cores_are_refused(tmp_path, synthetic_scene, capsys):
    """On the CPU one process per core at most; launching nothing (no torchrun dump)."""
    from plugin.core.training.runtime import available_cpus

    cores = available_cpus()
    job = _job_file(tmp_path, "build_label_rasters", project=str(_project(
        tmp_path, synthetic_scene)), output_folder=str(tmp_path / "out"))
    assert cli.main(["run", job, "--processes", str(cores + 62)]) == 2
    err = capsys.readouterr().err
    assert f"{cores} CPU core(s)" in err and f"Use --processes {cores} or fewer" in err
    assert not (tmp_path / "out").exists()
    most, why = distributed.process_limit("cpu")
    assert most == cores and "CPU" in why


def test_cuda_processes_are_limited_to_the_gpus(monkeypatch):
    import torch

    from plugin.core import environment

    monkeypatch.setattr(environment, "resolve_device", lambda d: "cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.process_limit("cuda")[0] == 2
    distributed.check_processes(2, "cuda")
    with pytest.raises(Exception, match="2 CUDA GPU"):
        distributed.check_processes(3, "cuda")


@pytest.mark.timeout(120)
def test_a_failing_rank_is_named_with_its_error(tmp_path, synthetic_scene):
    """Every rank fails on a 5-band model for a 3-band raster (found only when the job runs):
    one line naming the rank and its error, not torch's ChildFailedError table."""
    from plugin.core import modelfile
    from plugin.core.segmentation.network import build_network

    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "a", "color": "#ff0000"}]
    card = modelfile.make_card(task="pixel_segmentation", architecture="unet",
                               encoder="resnet18", classes=classes, bands=5,
                               mean=[100.0] * 5, std=[50.0] * 5, nodata=None, patch_size=64,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631", dtype="uint8")
    model = modelfile.save_model(tmp_path / "m5.dltmodel.safetensors",
                                 build_network("unet", "resnet18", 5, 2), card)
    job = _job_file(tmp_path, "classify_pixels", input=str(synthetic_scene.raster),
                    model=str(model), output=str(tmp_path / "c.tif"), device="cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "run", job, "--processes", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "error: Process 0 of 2 failed: The input raster has 3 band(s)" in done.stderr or \
        "error: Process 1 of 2 failed: The input raster has 3 band(s)" in done.stderr
    for raw in ("ChildFailedError", "Traceback", "Root Cause", "elastic"):
        assert raw not in done.stderr
    assert not (tmp_path / "c.tif").exists()


def test_record_failure_writes_the_first_line_for_the_launcher(tmp_path, monkeypatch):
    from plugin.core.errors import UserError

    path = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
    monkeypatch.setenv("WORLD_SIZE", "1")
    distributed.record_failure(UserError("not in a run"))
    assert not path.exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.record_failure(ValueError("bad value\nmore detail"))
    assert json.loads(path.read_text())["message"] == "ValueError: bad value"
    distributed.record_failure(UserError("Clear cause.", "The fix."))
    assert json.loads(path.read_text())["message"] == "Clear cause."


@pytest.mark.parametrize("field", ["nms_iou", "score_threshold"])
def test_detect_objects_thresholds_take_only_minus_one_as_the_models(tmp_path, field):
    """-1 means the model's value; -0.5 (or any other value outside 0–1) is refused, naming
    the field and the allowed values; 0 and 1 are accepted."""
    from plugin.core.detection.jobs import DetectObjectsJob

    def problems(value: float) -> str:
        job = DetectObjectsJob(output=str(tmp_path / "b.gpkg"), **{field: value})
        return " ".join(job.problems())

    name = field.upper()
    assert f"{name} -0.5 is neither between 0 and 1 nor -1" in problems(-0.5)
    assert f"{name} -0.999" in problems(-0.999)
    for fine in (-1.0, 0.0, 0.45, 1.0):
        assert name not in problems(fine)


def test_detect_objects_negative_nms_refused_by_dltrain(tmp_path, capsys):
    job = _job_file(tmp_path, "detect_objects", input=str(tmp_path / "none.tif"),
                    model=str(tmp_path / "none.safetensors"), output=str(tmp_path / "b.gpkg"),
                    nms_iou=-0.5)
    assert cli.main(["run", job]) == 2
    assert "NMS_IOU -0.5 is neither between 0 and 1 nor -1" in capsys.readouterr().err


@pytest.mark.parametrize(("exitcode", "said"), [
    (-9, "Process 1 of 4 failed: it was ended by signal 9 (SIGKILL; a SIGKILL is often the "
         "system running out of memory)"),
    (1, "Process 1 of 4 failed: exit code 1 (its output above says why)")])
def test_a_killed_rank_is_named_with_its_signal(monkeypatch, tmp_path, exitcode, said):
    """torch's ChildFailedError (one entry per rank) becomes one line about the first failure."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def failing(args):
        first = ProcessFailure(local_rank=1, pid=11, exitcode=exitcode,
                               error_file=str(tmp_path / "none.json"))
        later = ProcessFailure(local_rank=0, pid=10, exitcode=-15,
                               error_file=str(tmp_path / "none.json"))
        later.timestamp = first.timestamp + 1
        raise ChildFailedError("plugin.cli", {1: first, 0: later, 2: later, 3: later})

    monkeypatch.setattr(torchrun, "run", failing)
    with pytest.raises(UserError) as err:
        distributed.launch(["run", "job.json"], 4)
    assert err.value.message == said
    assert "--processes" in err.value.fix
