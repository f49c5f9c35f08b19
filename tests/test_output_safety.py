"""Issue 8, core kinds: nothing the user made is lost, no traceback, no silently wrong result.

Each test feeds one bad input from the issue and asserts the message, or the kept file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plugin.core import modelfile
from plugin.core.errors import UserError
from plugin.core.jobs import Job, RecordingContext
from plugin.core.labeling.jobs import BuildLabelRastersJob, ImportLabelsJob
from plugin.core.labeling.project import LabelingProject
from plugin.core.onnx_export import ExportOnnxJob
from plugin.core.outputs import OutputLocks, absolute_paths, lock_path
from plugin.core.perclass import parse_per_class
from plugin.core.runner import WorkerRun
from plugin.core.sampling.jobs import ExportChipsJob
from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob
from plugin.core.synthetic import make_scene

ROOT = Path(__file__).resolve().parent.parent
DLTRAIN = [sys.executable, "-m", "plugin.cli"]
CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "bright", "color": "#ff0000"},
           {"id": 2, "name": "dark", "color": "#0000ff"}]


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny U-Net (random weights) trained — per its card — on uint8 3-band imagery."""
    import torch

    from plugin.core.segmentation.network import build_network

    folder = tmp_path_factory.mktemp("safety_model")
    torch.manual_seed(1)
    net = build_network("unet", "resnet18", 3, 3)
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture="unet", encoder="resnet18", classes=CLASSES,
                               bands=3, mean=[100.0] * 3, std=[50.0] * 3, nodata=None,
                               patch_size=64, pixel_size=(0.5, 0.5), crs="EPSG:32631",
                               dtype="uint8")
    path = folder / "m.dltmodel.safetensors"
    modelfile.save_model(path, net, card)
    return path


@pytest.fixture
def project(tmp_path):
    scene = make_scene(tmp_path / "scene", size=96, bands=3, seed=3)
    p = LabelingProject.create(tmp_path / "labels.gpkg", scene.crs)
    for _, name, color in scene.classes:
        p.add_class(name, color)
    p.add_raster(scene.raster)
    p.add_features([(f["class_id"], f["geometry"]) for f in scene.features])
    return scene, tmp_path / "labels.gpkg"


def dltrain(job: Job, folder: Path, *extra, **kw) -> subprocess.CompletedProcess:
    path = folder / f"{job.kind}.json"
    job.save(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*DLTRAIN, "run", str(path), *extra], cwd=kw.pop("cwd", ROOT),
                          capture_output=True, text=True, timeout=300, env=env, **kw)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` not writable, also for root (immutable attribute)."""
    folder.chmod(0o555)
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        folder.chmod(0o755)
        pytest.skip("running as root without chattr: a folder cannot be made read-only")
    try:
        yield folder
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


# -- data loss ----------------------------------------------------------------------------------
def test_train_output_on_a_training_raster_or_the_project_is_refused(project, model,
                                                                     tmp_path):
    scene, gpkg = project
    for target in (scene.raster, gpkg):     # a model never takes a raster's or project's name
        job = TrainPixelSegmentationJob(project=str(gpkg), output_model=str(target))
        assert job.output_model.endswith(".dltmodel.safetensors")
        assert Path(job.output_model) != target
    clash = TrainPixelSegmentationJob(project=str(gpkg), init_model=str(model),
                                      output_model=str(model))
    assert any("would be overwritten" in p and "INIT_MODEL" in p for p in clash.problems())
    build = BuildLabelRastersJob(project=str(gpkg), output_folder=str(scene.raster))
    assert any("training raster of the project" in p for p in build.problems())
    before = scene.raster.read_bytes()
    done = dltrain(build, tmp_path)
    assert done.returncode == 2 and "would be overwritten" in done.stderr
    assert "Traceback" not in done.stderr
    assert scene.raster.read_bytes() == before


def test_outputs_of_another_format_or_on_a_labeling_project_are_refused(project, model,
                                                                        tmp_path):
    from plugin.core.classification.jobs import ClassifyGridJob
    from plugin.core.detection.jobs import DetectObjectsJob

    scene, gpkg = project
    mine = tmp_path / "mine.tif"
    mine.write_bytes(b"the user's raster")
    boxes = DetectObjectsJob(input=str(scene.raster), model=str(model), output=str(mine))
    assert any("does not end in .gpkg" in p and "mine.gpkg" in p for p in boxes.problems())
    pixels = ClassifyPixelsJob(input=str(scene.raster), model=str(model),
                               output=str(tmp_path / "c.gpkg"))
    assert any("does not end in .tif or .tiff" in p for p in pixels.problems())
    for job in (ClassifyGridJob(input=str(scene.raster), model=str(model), output=str(gpkg)),
                ClassifyPixelsJob(input=str(scene.raster), model=str(model),
                                  output=str(tmp_path / "c.tif"), output_vector=str(gpkg))):
        assert any("is a labeling project" in p for p in job.problems()), job.kind
    before = gpkg.read_bytes()
    done = dltrain(job, tmp_path)
    assert done.returncode == 2 and "labeling project" in done.stderr
    assert gpkg.read_bytes() == before and mine.read_bytes() == b"the user's raster"


def test_a_given_log_folder_is_accepted_and_one_holding_other_files_refused(project, tmp_path):
    _scene, gpkg = project
    out = str(tmp_path / "m.dltmodel.safetensors")
    fresh = TrainPixelSegmentationJob(project=str(gpkg), output_model=out,
                                      log_folder=str(tmp_path / "new_logs"))
    assert fresh.problems() == []
    kept = tmp_path / "papers"
    kept.mkdir()
    (kept / "report.txt").write_text("mine")
    used = TrainPixelSegmentationJob(project=str(gpkg), output_model=out, log_folder=str(kept))
    assert any("holds other files and no training log" in p for p in used.problems())
    (kept / "metrics.csv").write_text("epoch\n1\n")      # a log folder of an earlier run
    assert used.problems() == []


def test_a_folder_given_as_job_file_is_named_as_a_folder(tmp_path):
    with pytest.raises(UserError, match="is a folder, not a job file"):
        Job.load(tmp_path)


def test_classify_output_equal_to_model_or_probabilities_is_refused(model, tmp_path):
    scene = make_scene(tmp_path / "s", size=64)
    job = ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(model))
    assert any("would be overwritten" in p and "MODEL" in p for p in job.problems())
    same = ClassifyPixelsJob(input=str(scene.raster), model=str(model),
                             output=str(tmp_path / "c.tif"),
                             output_probabilities=str(tmp_path / "c.tif"))
    assert any("OUTPUT_PROBABILITIES" in p and "same file" in p for p in same.problems())
    before = model.read_bytes()
    done = dltrain(job, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert model.read_bytes() == before
    onnx = ExportOnnxJob(model=str(model), output=str(model))
    assert any("would be overwritten" in p for p in onnx.problems())


def test_an_output_being_written_by_another_run_is_refused_and_stale_locks_are_taken(tmp_path):
    out = tmp_path / "best.dltmodel.safetensors"
    job = TrainPixelSegmentationJob(project=str(tmp_path / "p.gpkg"), output_model=str(out))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(out).write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename,
                                              "kind": "train_pixel_segmentation",
                                              "started": "2026-01-01 10:00:00"}))
        with pytest.raises(UserError, match="being written by another run") as info:
            OutputLocks(job).__enter__()
        assert str(other.pid) in info.value.message and "train_pixel_segmentation" in \
            info.value.message
    finally:
        other.kill()
        other.wait()
    with OutputLocks(job) as held:      # the other process is gone: its lock is stale
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match="being written by another run"):
            OutputLocks(job).__enter__()
        assert held.held
    assert not lock_path(out).exists()


def test_relative_paths_are_made_absolute_before_the_job_leaves_the_caller(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = ClassifyPixelsJob(input="in.tif", model="sub/m.model", output="rel_out.tif",
                            output_vector="v.gpkg|layername=classes")
    absolute = absolute_paths(job)
    assert absolute.output == str(tmp_path / "rel_out.tif")
    assert absolute.model == str(tmp_path / "sub/m.model")
    assert absolute.output_vector == str(tmp_path / "v.gpkg") + "|layername=classes"
    assert WorkerRun(job).job.output == str(tmp_path / "rel_out.tif")   # runner, Processing
    imp = ImportLabelsJob(project="p.gpkg", rasters=["a.tif", "/abs/b.tif"], labels="l.shp")
    assert absolute_paths(imp).rasters == [str(tmp_path / "a.tif"), "/abs/b.tif"]


# -- tracebacks ---------------------------------------------------------------------------------
def test_read_only_folder_and_folder_that_is_a_file_are_refused_before_work(project, tmp_path):
    _, gpkg = project
    locked = tmp_path / "locked"
    locked.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with read_only(locked):
        jobs = [BuildLabelRastersJob(project=str(gpkg), output_folder=str(locked / "labels")),
                TrainPixelSegmentationJob(project=str(gpkg),
                                          output_model=str(locked / "m.dltmodel.safetensors"))]
        for job in jobs:
            assert any("not writable" in p for p in job.problems()), job.kind
    build = BuildLabelRastersJob(project=str(gpkg), output_folder=str(a_file))
    assert any("is an existing file, not a folder" in p for p in build.problems())
    inside = ExportChipsJob(project=str(gpkg), output_folder=str(a_file / "chips"))
    assert any("is a file, not a folder" in p for p in inside.problems())
    done = dltrain(build, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert a_file.read_text() == "x"


def test_a_failed_write_names_the_file_removes_the_partial_output_keeps_the_previous(model,
                                                                                    tmp_path):
    """The file size limit makes writes fail like a full disk (EFBIG instead of ENOSPC)."""
    import rasterio

    scene = make_scene(tmp_path / "s", size=640, noise=0.3)
    out = tmp_path / "classes.tif"
    out.write_bytes(b"the previous class raster")
    job = ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(out),
                            output_probabilities=str(tmp_path / "p.tif"), engine="torch",
                            device="cpu", tile_size=320, overlap=0)

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    done = dltrain(job, tmp_path, preexec_fn=limit)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "too large" in done.stderr or "disk" in done.stderr
    assert out.read_bytes() == b"the previous class raster"
    assert not (tmp_path / "p.tif").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]
    assert rasterio.open(scene.raster).count == 3   # the input is untouched


def _card_file(path: Path, card, tensors=None, meta=None) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors or {"w": np.zeros(4, np.float32)}, str(path),
              metadata=meta or {"format": modelfile.FORMAT, "card": json.dumps(card)})
    return path


GOOD = {"format_version": 1, "task": "pixel_segmentation", "architecture": "unet",
        "encoder": "resnet18", "classes": CLASSES, "num_outputs": 3, "bands": 3,
        "mean": [1.0] * 3, "std": [1.0] * 3, "patch_size": 64}


@pytest.mark.parametrize("change, expect", [
    ({"__card__": [1, 2]}, "not an object"),
    ({"classes": {"0": "background"}}, "classes"),
    ({"bands": "RGB"}, "bands"),
    ({"patch_size": 1e12}, "patch_size"),
    ({"classes": [{"id": i, "name": str(i)} for i in range(100_000)]}, "100000 classes"),
    ({"std": [1.0, 0.0, 1.0]}, "std"),
    ({"format_version": 99}, "newer plugin"),
])
def test_model_cards_of_the_wrong_shape_are_not_valid_model_files(tmp_path, change, expect):
    card = change["__card__"] if "__card__" in change else {**GOOD, **change}
    path = _card_file(tmp_path / "bad.dltmodel.safetensors", card)
    with pytest.raises(UserError, match=expect) as info:
        modelfile.read_model_card(path)
    assert "not a valid model file" in str(info.value) or "newer plugin" in str(info.value)
    problems = " ".join(ClassifyPixelsJob(input=str(path), model=str(path),
                                          output=str(tmp_path / "o.tif")).problems())
    assert "MODEL" in problems


def test_truncated_models_and_offsets_past_the_end_are_refused(model, tmp_path):
    data = model.read_bytes()
    cut = tmp_path / "cut.dltmodel.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"][1] += 10**9
    text = json.dumps(header).encode()
    past = tmp_path / "past.dltmodel.safetensors"
    past.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    for path in (cut, past):
        with pytest.raises(UserError, match="not a valid model file"):
            modelfile.read_model_card(path)
        assert not modelfile.is_model_file(path)


def test_read_failure_mid_way_is_a_user_error_naming_the_file(model, tmp_path):
    from plugin.core.outputs import io_user_error

    err = io_user_error(OSError(5, "Input/output error", str(tmp_path / "scene.tif")))
    assert isinstance(err, UserError) and "scene.tif" in err.message
    import rasterio

    bad = tmp_path / "broken.tif"
    scene = make_scene(tmp_path / "s", size=256)
    bad.write_bytes(scene.raster.read_bytes()[:4000])   # the header survives, the data do not
    job = ClassifyPixelsJob(input=str(bad), model=str(model), output=str(tmp_path / "o.tif"),
                            engine="torch", device="cpu")
    done = dltrain(job, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "broken.tif" in done.stderr
    assert not (tmp_path / "o.tif").exists()
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(bad).read()


# -- silently wrong -----------------------------------------------------------------------------
def _copy(src: Path, dst: Path, dtype: str, factor: float, **extra) -> Path:
    import rasterio

    with rasterio.open(src) as ds:
        prof = {**ds.profile, "dtype": dtype, **extra}
        data = (ds.read().astype(np.float64) * factor).astype(dtype)
    with rasterio.open(dst, "w", **prof) as out:
        out.write(data)
    return dst


def test_input_of_another_dtype_is_refused_and_rescale_maps_it(model, tmp_path):
    import rasterio

    scene = make_scene(tmp_path / "s", size=96, seed=4)
    u16 = _copy(scene.raster, tmp_path / "u16.tif", "uint16", 257.0)
    unit = _copy(scene.raster, tmp_path / "unit.tif", "float32", 1 / 255)

    def classify(src: Path, name: str, **kw) -> np.ndarray:
        job = ClassifyPixelsJob(input=str(src), model=str(model), output=str(tmp_path / name),
                                engine="torch", device="cpu", **kw)
        job.execute(RecordingContext())
        return rasterio.open(tmp_path / name).read(1)

    reference = classify(scene.raster, "ref.tif")
    for src in (u16, unit):
        with pytest.raises(UserError, match="RESCALE") as info:
            classify(src, "x.tif")
        assert "uint8" in info.value.message
    for src in (u16, unit):
        got = classify(src, f"{src.stem}_rescaled.tif", rescale="dtype")
        assert (got == reference).mean() > 0.99


def test_alpha_is_a_mask_not_data_everywhere(model, tmp_path):
    import rasterio

    from plugin.core.sampling.statistics import band_statistics
    from plugin.core.validpixels import data_band_count, valid_mask

    scene = make_scene(tmp_path / "s", size=64, seed=5)
    with rasterio.open(scene.raster) as ds:
        prof, data = ds.profile, ds.read()
    alpha = np.full(data.shape[1:], 255, np.uint8)
    alpha[:, :16] = 0                                  # a transparent strip on the left
    data[:, :, :16] = 7                                # holding junk values
    rgba = tmp_path / "rgba.tif"
    with rasterio.open(rgba, "w", **{**prof, "count": 4, "photometric": "RGB",
                                     "alpha": "YES"}) as dst:
        dst.write(np.concatenate([data, alpha[None]]))
    with rasterio.open(rgba) as ds:
        assert data_band_count(ds) == 3
        assert not valid_mask(ds)[:, :16].any() and valid_mask(ds)[:, 16:].all()

    class Src:
        image, display_name = str(rgba), "rgba"
    mean, _, _ = band_statistics([Src()])
    assert np.allclose(mean, data[:, :, 16:].reshape(3, -1).mean(1), atol=1e-6)
    out = tmp_path / "c.tif"
    ClassifyPixelsJob(input=str(rgba), model=str(model), output=str(out), engine="torch",
                      device="cpu").execute(RecordingContext())
    classes = rasterio.open(out).read(1)
    assert (classes[:, :16] == 255).all() and (classes[:, 16:] != 255).all()


def test_polygon_area_in_square_metres_on_the_ellipsoid(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from plugin.core.segmentation.predict import polygonize

    cls = np.zeros((20, 20), np.uint8)
    cls[5:15, 5:15] = 1                                # 10 × 10 px of 0.0001° at the equator
    path = tmp_path / "c.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(0, 0.001, 0.0001, 0.0001),
                       nodata=255) as dst:
        dst.write(cls, 1)
    wkt = rasterio.open(path).crs.to_wkt()
    gpkg = tmp_path / "v.gpkg"
    assert polygonize(path, gpkg, CLASSES, 1.0, wkt) == 1   # MIN_AREA 1 m² keeps it
    from osgeo import ogr

    ds = ogr.Open(str(gpkg))
    feature = ds.GetLayer(0).GetNextFeature()
    assert 12_200 < feature.GetField("area") < 12_400      # 111.32 m × 110.57 m
    assert 440 < feature.GetField("perimeter") < 450
    feature = ds = None     # the layer is replaced inside the file: no reader left open
    assert polygonize(path, gpkg, CLASSES, 20_000.0, wkt) == 0


# -- messages -----------------------------------------------------------------------------------
def test_labels_in_a_wrong_crs_are_refused_at_import_with_both_extents(project, tmp_path):
    scene, gpkg = project
    shifted = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "urn:ogc:def:crs:EPSG::32632"}}, "features": [
        {"type": "Feature", "properties": {"cls": "a"}, "geometry": f["geometry"]}
        for f in scene.features[:5]]}
    labels = tmp_path / "wrong.geojson"
    labels.write_text(json.dumps(shifted))
    with pytest.raises(UserError, match="overlaps a training raster") as info:
        ImportLabelsJob(project=str(gpkg), labels=str(labels), class_field="cls").execute(
            RecordingContext())
    assert "EPSG:32632" in info.value.message and "the rasters" in info.value.message
    assert "CRS" in info.value.fix
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(UserError, match="is empty"):
        ImportLabelsJob(project=str(gpkg), labels=str(empty), class_field="cls").execute(
            RecordingContext())


def test_an_all_nodata_raster_is_warned_at_build(tmp_path):
    scene = make_scene(tmp_path / "s", size=64, nodata=0)
    _copy(scene.raster, tmp_path / "blank.tif", "uint8", 0.0)
    p = LabelingProject.create(tmp_path / "p.gpkg", scene.crs)
    p.add_class("a")
    p.add_raster(tmp_path / "blank.tif")
    p.add_features([(1, scene.features[0]["geometry"])])
    ctx = RecordingContext()
    BuildLabelRastersJob(project=str(tmp_path / "p.gpkg"),
                         output_folder=str(tmp_path / "out")).execute(ctx)
    warnings = [e["message"] for e in ctx.events if e.get("level") == "warning"]
    assert any("holds no valid pixel" in w and "nodata value 0" in w for w in warnings)


def test_dltrain_ctrl_c_exits_130_with_a_cancelled_line(tmp_path):
    from plugin.core.basic_jobs import SelfTestJob

    job = SelfTestJob(steps=200, delay=0.05)
    path = tmp_path / "job.json"
    job.save(path)
    proc = subprocess.Popen([*DLTRAIN, "run", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err


def test_models_are_recognised_by_content_and_named_by_train(model, tmp_path):
    renamed = tmp_path / "best.model"
    renamed.write_bytes(model.read_bytes())
    assert modelfile.is_model_file(renamed)
    problems = ClassifyPixelsJob(input=str(tmp_path / "in.tif"), model=str(renamed),
                                 output=str(tmp_path / "x.tif")).problems()
    assert problems and not any("MODEL" in p for p in problems)     # only INPUT is missing
    job = TrainPixelSegmentationJob(output_model=str(tmp_path / "best.model"),
                                    output_last_model=str(tmp_path / "last"))
    assert job.output_model == str(tmp_path / "best.dltmodel.safetensors")
    assert job.output_last_model == str(tmp_path / "last.dltmodel.safetensors")
    kept = TrainPixelSegmentationJob(output_model=str(tmp_path / "a.safetensors"))
    assert kept.output_model.endswith("a.safetensors")


def test_one_parser_for_per_class_values():
    assert parse_per_class("1=water, 2=forest", "V", numbers=False) == {"1": "water",
                                                                        "2": "forest"}
    assert parse_per_class('{"1": "water"}', "V", numbers=False) == {"1": "water"}
    assert parse_per_class("1=2, 3=0.5", "S") == {"1": 2.0, "3": 0.5}
    assert parse_per_class("2", "S") == [2.0]
    assert parse_per_class("2, 0, 1", "S") == [2.0, 0.0, 1.0]
    assert parse_per_class([2, 0], "S") == [2.0, 0.0]
    with pytest.raises(UserError, match="1=2, 3=0.5"):
        parse_per_class("1=abc", "S")
    job = TrainPixelSegmentationJob(solid_distances="1=2, 3=0.5", blur_distances="1")
    assert not any("SOLID" in p or "BLUR" in p for p in job.problems())
    bad = TrainPixelSegmentationJob(solid_distances="1=-2")
    assert any("0 or more" in p for p in bad.problems())


def test_export_refuses_the_patch_sizes_training_refuses(tmp_path):
    export = " ".join(ExportChipsJob(patch_size=100).problems())
    train = " ".join(TrainPixelSegmentationJob(patch_size=100).problems())
    assert "use 96" in export and "use 96" in train


def test_model_files_are_0644_and_the_optimizer_file_is_optional(model, tmp_path):
    import torch

    from plugin.core.segmentation.network import build_network

    old = os.umask(0o022)    # the usual umask: other outputs are 0644
    try:
        net = build_network("unet", "resnet18", 3, 3)
        path = modelfile.save_model(tmp_path / "m.dltmodel.safetensors", net,
                                    modelfile.read_model_card(model))
        opt = modelfile.save_optimizer(path, torch.optim.AdamW(net.parameters()))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(opt.stat().st_mode) == 0o644
    with_opt = TrainPixelSegmentationJob(output_model=str(tmp_path / "b.dltmodel.safetensors"),
                                         output_last_model=str(path))
    without = TrainPixelSegmentationJob(output_model=str(tmp_path / "b.dltmodel.safetensors"),
                                        output_last_model=str(path), save_optimizer=False)
    assert str(opt) in [p for _, p, _ in with_opt.extra_outputs()]
    assert str(opt) not in [p for _, p, _ in without.extra_outputs()]


def test_processing_takes_models_by_content_and_per_class_text(qgis_processing, model,
                                                               tmp_path):
    from qgis.core import QgsProcessingContext

    from plugin.processing.job_algorithm import JobAlgorithm

    renamed = tmp_path / "best.model"
    renamed.write_bytes(model.read_bytes())
    classify = JobAlgorithm.for_kind("classify_pixels")
    classify.initAlgorithm({})
    assert classify.parameterDefinition("MODEL").checkValueIsAcceptable(str(renamed))
    context = QgsProcessingContext()
    imp = JobAlgorithm.for_kind("import_label_raster")
    imp.initAlgorithm({})
    job = imp.job_from_parameters({"PROJECT": str(tmp_path / "p.gpkg"),
                                   "CLASSIFIED_RASTER": str(tmp_path / "lc.tif"),
                                   "VALUE_CLASSES": "1=water, 2=forest",
                                   "OUTPUT_FOLDER": str(tmp_path / "out")}, context)
    assert job.value_classes == {"1": "water", "2": "forest"}
    train = JobAlgorithm.for_kind("train_pixel_segmentation")
    train.initAlgorithm({})
    job = train.job_from_parameters({"PROJECT": str(tmp_path / "p.gpkg"),
                                     "SOLID_DISTANCES": "1=2, 3=0.5", "BLUR_DISTANCES": "1",
                                     "OUTPUT_MODEL": str(tmp_path / "best.model")}, context)
    assert job.solid_distances == {"1": 2.0, "3": 0.5} and job.blur_distances == [1.0]
    assert job.output_model == str(tmp_path / "best.dltmodel.safetensors")


def test_a_chip_export_that_fails_mid_way_leaves_no_partial_folder(project, tmp_path):
    _, gpkg = project
    out = tmp_path / "chips"
    job = ExportChipsJob(project=str(gpkg), output_folder=str(out), patch_size=64,
                         background_patch_ratio=1)

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8_000, 8_000))    # a 64² chip is 12 kB

    done = dltrain(job, tmp_path, preexec_fn=limit)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "chips" in done.stderr and "disk" in done.stderr
    assert not out.exists()


def test_every_output_kind_is_checked():
    """A new output kind in params.KINDS must be known to the safety checks."""
    from plugin.core.outputs import IN_KINDS, LIST_IN_KINDS, OUT_KINDS
    from plugin.core.params import KINDS

    paths = [k for k in KINDS if k.endswith(("_in", "_out", "_list")) and "str" not in k
             and "int" not in k and "float" not in k]
    assert set(paths) <= set(IN_KINDS + OUT_KINDS + LIST_IN_KINDS)
