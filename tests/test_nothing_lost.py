"""Issue 18: nothing lost, never a traceback, for every family.

GeoPackage outputs add or replace their own layer only; outputs inside a folder the job reads
are refused; a full disk names the file and keeps the previous one; what a failed or killed run
left (an empty lock, its own log files, temporary files) never blocks or litters the next run;
a training's log folder is never read as a class of chips.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_output_safety import CLASSES, dltrain

from plugin.core import modelfile
from plugin.core.errors import UserError
from plugin.core.jobs import RecordingContext
from plugin.core.outputs import OutputLocks, lock_path
from plugin.core.vector_output import write_vector_layer

TWO = [{"id": 1, "name": "a", "color": "#ff0000"}, {"id": 2, "name": "b", "color": "#00ff00"}]


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _points(xs, ys) -> np.ndarray:
    import shapely

    return shapely.to_wkb(np.asarray(shapely.points(xs, ys), dtype=object))


def user_geopackage(path: Path) -> Path:
    """A GeoPackage of the user: a layer ``roads`` (EPSG:4326), a layer in a CRS of its own
    (numbered 100000 like GDAL numbers a CRS without a code) and a plain table of notes."""
    import pyproj
    from pyogrio.raw import write

    write(str(path), _points([1.0, 2.0], [3.0, 4.0]), [np.array(["A1", "B2"], dtype=object)],
          ["name"], layer="roads", driver="GPKG", geometry_type="Point", crs="EPSG:4326")
    own = pyproj.CRS("+proj=tmerc +lon_0=7 +k=1 +x_0=0 +y_0=0 +ellps=GRS80 +units=m").to_wkt()
    write(str(path), _points([10.0], [20.0]), [np.array([7])], ["n"], layer="survey",
          driver="GPKG", geometry_type="Point", crs=own)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (t TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    return path


def layer_rows(path: Path, layer: str) -> tuple:
    from pyogrio.raw import read

    meta, fids, wkb, fields = read(str(path), layer=layer, return_fids=True)
    return (meta["crs"], list(meta["fields"]), fids.tolist(), list(wkb),
            [f.tolist() for f in fields])


def user_state(path: Path) -> tuple:
    with sqlite3.connect(path) as db:
        notes = db.execute("SELECT t FROM notes").fetchall()
    return layer_rows(path, "roads"), layer_rows(path, "survey"), notes


# -- GeoPackage layers --------------------------------------------------------------------------
def test_a_layer_is_added_or_replaced_and_the_other_layers_kept(tmp_path):
    import pyogrio
    import pyproj
    from pyogrio.raw import read

    gpkg = user_geopackage(tmp_path / "mine.gpkg")
    before = user_state(gpkg)
    other = pyproj.CRS("+proj=tmerc +lon_0=11 +k=1 +x_0=0 +y_0=0 +ellps=GRS80 +units=m")
    for n in (3, 2):           # added, then replaced by a run with fewer features
        write_vector_layer(gpkg, "detections", _points(np.arange(n) + 500.0, np.arange(n)),
                           {"score": np.linspace(0.5, 0.9, n)}, other.to_wkt(), "Point")
    assert user_state(gpkg) == before
    assert sorted(str(n) for n, _ in pyogrio.list_layers(gpkg)) == ["detections", "notes",
                                                                    "roads", "survey"]
    meta, _, wkb, fields = read(str(gpkg), layer="detections")
    assert len(wkb) == 2 and np.allclose(fields[0], [0.5, 0.9])
    assert pyproj.CRS(meta["crs"]).equals(other)      # not the user's CRS numbered 100000
    hit = read(str(gpkg), layer="detections", bbox=(500.5, -1, 502, 2))[2]
    assert len(hit) == 1                              # the spatial index came along
    with sqlite3.connect(gpkg) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        srs = dict(db.execute("SELECT table_name, srs_id FROM gpkg_geometry_columns"))
        blob = db.execute("SELECT geom FROM detections").fetchone()[0]
    assert srs["survey"] != srs["detections"]
    assert int.from_bytes(blob[4:8], "little" if blob[3] & 1 else "big") == srs["detections"]


def test_a_geopackage_layer_that_cannot_be_written_leaves_the_file_as_it_was(tmp_path):
    gpkg = user_geopackage(tmp_path / "mine.gpkg")
    data = gpkg.read_bytes()
    for layer, expect in (("notes", "not a layer of features"), ("gpkg_contents", "reserved"),
                          ("", "reserved")):
        with pytest.raises(UserError, match=expect):
            write_vector_layer(gpkg, layer, _points([1.0], [1.0]), {"v": np.array([1])}, None,
                               "Point")
    text = tmp_path / "report.gpkg"
    text.write_text("not a GeoPackage")
    with pytest.raises(UserError, match="is not a GeoPackage"):
        write_vector_layer(text, "x", _points([1.0], [1.0]), {"v": np.array([1])}, None, "Point")
    assert gpkg.read_bytes() == data and text.read_text() == "not a GeoPackage"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.gpkg", "report.gpkg"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random-weight models of every family (CPU, seconds)."""
    import torch

    from plugin.core.classification.network import build_classifier
    from plugin.core.detection.modelfile import make_card as detector_card
    from plugin.core.detection.network import build_detector
    from plugin.core.segmentation.network import build_network

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    common = {"bands": 3, "mean": [80.0] * 3, "std": [40.0] * 3, "nodata": None}
    out = {"detector": folder / "detector.dltmodel.safetensors",
           "grid": folder / "grid.dltmodel.safetensors",
           "chips": folder / "chips.dltmodel.safetensors",
           "pixels": folder / "pixels.dltmodel.safetensors"}
    modelfile.save_model(out["detector"], build_detector("fcos_resnet18", 3, 2, 64, [80.0] * 3,
                                                         [40.0] * 3),
                         detector_card(architecture="fcos_resnet18", classes=TWO[:1],
                                       patch_size=64, pixel_size=(1, 1), crs="EPSG:32631",
                                       score_threshold=0.0, nms_iou=0.5, max_box_px=20.0,
                                       **common))
    for task, extra in (("grid", {"grid_size": 32}),
                        ("chip_classification", {"max_side": 16, "resize": 0, "box_size": 8})):
        card = modelfile.make_card(task=task, classes=TWO, pixel_size=None, crs=None,
                                   architecture="resnet18", multi_label=False,
                                   thresholds=[0.5, 0.5], **extra, **common)
        modelfile.save_model(out["grid" if task == "grid" else "chips"],
                             build_classifier("resnet18", 3, 2), card)
    card = modelfile.make_card(task="pixel_segmentation", architecture="unet",
                               encoder="resnet18", classes=CLASSES, patch_size=64,
                               pixel_size=(1, 1), crs="EPSG:32631", dtype="uint8", **common)
    modelfile.save_model(out["pixels"], build_network("unet", "resnet18", 3, 3), card)
    return out


def test_every_family_writes_its_own_layer_into_a_geopackage_of_the_user(models, tmp_path):
    """Detect Objects, Classify Grid, Classify Chips (vector) and Classify Pixels' polygons,
    each run twice into one GeoPackage of the user: their layers are added, then replaced; the
    user's layers and table are untouched."""
    import pyogrio
    import shapely
    from pyogrio.raw import write

    from plugin.core.classification.jobs import ClassifyChipsJob, ClassifyGridJob
    from plugin.core.detection.jobs import DetectObjectsJob
    from plugin.core.segmentation.jobs import ClassifyPixelsJob
    from plugin.core.synthetic import make_scene

    scene = make_scene(tmp_path / "scene", size=64, bands=3, seed=2)
    boxes = tmp_path / "boxes.gpkg"
    with rasterio.open(scene.raster) as src:       # two boxes on the raster, in map units
        x0, y0 = src.bounds.left, src.bounds.bottom
    write(str(boxes), shapely.to_wkb(np.array([shapely.box(x0 + a, y0 + b, x0 + c, y0 + d)
                                               for a, b, c, d in ((0, 0, 10, 10),
                                                                  (20, 20, 30, 30))],
                                              dtype=object)), [np.array([1, 2])], ["id"],
        layer="trees", driver="GPKG", geometry_type="Polygon", crs=scene.crs)
    gpkg = user_geopackage(tmp_path / "mine.gpkg")
    before = user_state(gpkg)
    raster = str(scene.raster)
    jobs = [DetectObjectsJob(input=raster, model=str(models["detector"]), output=str(gpkg),
                             engine="torch", device="cpu", max_detections=5),
            ClassifyGridJob(input=raster, model=str(models["grid"]), output=str(gpkg),
                            device="cpu"),
            ClassifyChipsJob(input=str(boxes), raster=raster, model=str(models["chips"]),
                             output=str(gpkg), device="cpu"),
            ClassifyPixelsJob(input=raster, model=str(models["pixels"]),
                              output=str(tmp_path / "classes.tif"), output_vector=str(gpkg),
                              engine="torch", device="cpu", min_pixels=0)]
    for _ in range(2):
        for job in jobs:
            assert job.problems() == [], job.kind
            job.execute(RecordingContext())
    layers = {str(n) for n, _ in pyogrio.list_layers(gpkg)}
    assert layers == {"roads", "survey", "notes", "detections", "grid_cells", "trees",
                      "classes"}
    assert user_state(gpkg) == before
    assert len(layer_rows(gpkg, "grid_cells")[2]) == 4       # 2 × 2 cells of 32 px, once
    assert len(layer_rows(gpkg, "trees")[2]) == 2
    renamed = DetectObjectsJob(input=raster, model=str(models["detector"]), output=str(gpkg),
                               output_layer="run_2", engine="torch", device="cpu")
    renamed.execute(RecordingContext())
    processing = f"ogr:dbname='{gpkg}' table=\"polygons 2\" (geom)"   # "Save to GeoPackage…"
    named = ClassifyPixelsJob(input=raster, model=str(models["pixels"]),
                              output=str(tmp_path / "classes.tif"), output_vector=processing,
                              engine="torch", device="cpu").with_absolute_paths()
    assert named.output_vector == f"{gpkg}|layername=polygons 2"
    named.execute(RecordingContext())
    assert {str(n) for n, _ in pyogrio.list_layers(gpkg)} == layers | {"run_2", "polygons 2"}
    assert user_state(gpkg) == before
    bad = ClassifyGridJob(input=raster, model=str(models["grid"]), output=str(gpkg),
                          output_layer="notes")
    assert any("not a layer of features" in p for p in bad.problems())


def test_a_full_disk_while_writing_a_layer_or_a_csv_names_the_file_and_keeps_it(models,
                                                                               tmp_path):
    """RLIMIT_FSIZE makes writes fail like a full disk (EFBIG instead of ENOSPC)."""
    from plugin.core.classification.jobs import ClassifyChipsJob
    from plugin.core.classification.synthetic import make_chip_folder
    from plugin.core.detection.jobs import DetectObjectsJob
    from plugin.core.synthetic import make_scene

    scene = make_scene(tmp_path / "scene", size=64, bands=3, seed=2)
    gpkg = user_geopackage(tmp_path / "mine.gpkg")
    csv_out = tmp_path / "predictions.csv"
    csv_out.write_text("chip,class\nold,a\n")
    kept = {gpkg: gpkg.read_bytes(), csv_out: csv_out.read_bytes()}

    def limit(size: int):
        def apply() -> None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        return apply

    done = dltrain(DetectObjectsJob(input=str(scene.raster), model=str(models["detector"]),
                                    output=str(gpkg), engine="torch", device="cpu"),
                   tmp_path, preexec_fn=limit(60_000))      # a GeoPackage is 100 kB or more
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "disk is full" in done.stderr and str(gpkg) in done.stderr
    many = tmp_path / "many"                          # a CSV of more than 10 kB
    make_chip_folder(many, per_class=150, size=8)
    done = dltrain(ClassifyChipsJob(input=str(many), model=str(models["chips"]),
                                    output=str(csv_out), device="cpu", batch_size=64),
                   tmp_path, preexec_fn=limit(10_000))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "too large" in done.stderr and "predictions.csv" in done.stderr
    for path, data in kept.items():
        assert path.read_bytes() == data
    left = [p.name for p in tmp_path.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]
    assert left == []


# -- outputs inside what the job reads ------------------------------------------------------------
def test_outputs_inside_a_folder_the_job_reads_are_refused(models, tmp_path):
    from plugin.core.classification.jobs import ClassifyChipsJob, TrainChipClassifierJob
    from plugin.core.classification.synthetic import make_chip_folder
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    chips = tmp_path / "tags"
    make_chip_folder(chips, layout="multilabel_csv", per_class=3, multi_label=True)
    labels = chips / "labels.csv"
    before = labels.read_bytes()
    job = ClassifyChipsJob(input=str(chips), model=str(models["chips"]), output=str(labels))
    assert any("inside the Chips folder" in p for p in job.problems())
    done = dltrain(job, tmp_path)
    assert done.returncode == 2 and "inside the Chips folder" in done.stderr
    assert labels.read_bytes() == before
    folder = tmp_path / "imagefolder"
    make_chip_folder(folder, per_class=2)
    chip = next(folder.rglob("*.tif"))
    for kw in ({"output_model": str(chip.with_suffix(".safetensors"))},
               {"output_model": str(tmp_path / "m.dltmodel.safetensors"),
                "log_folder": str(folder / "logs")}):
        train = TrainChipClassifierJob(input=str(folder), **kw)
        assert any("inside the Chips folder or labeling project (INPUT)" in p
                   for p in train.problems()), kw
    beside = TrainPixelSegmentationJob(project=str(tmp_path / "p.gpkg"),
                                       output_model=str(tmp_path / "m.dltmodel.safetensors"))
    assert not any(" is inside the " in p for p in beside.problems())   # beside a project
    fine = ClassifyChipsJob(input=str(chips), model=str(models["chips"]),
                            output=str(tmp_path / "predictions.csv"))
    assert not any(" is inside the " in p for p in fine.problems())


# -- what a failed or killed run leaves -------------------------------------------------------
def test_an_empty_lock_of_a_failed_run_is_stale_and_a_failed_lock_write_leaves_none(
        tmp_path, monkeypatch):
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    out = tmp_path / "best.dltmodel.safetensors"
    job = TrainPixelSegmentationJob(project=str(tmp_path / "p.gpkg"), output_model=str(out))
    lock = lock_path(out)
    lock.write_bytes(b"")                          # a full disk while the lock was written
    with pytest.raises(UserError, match="being written by another run"):
        OutputLocks(job).__enter__()               # just made: may still be being written
    os.utime(lock, (time.time() - 60, time.time() - 60))
    with OutputLocks(job):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(UserError, match="disk is full"):
        OutputLocks(job).__enter__()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".lock")]


def test_the_files_a_failed_training_made_do_not_block_its_rerun(models, tmp_path):

    from plugin.core.labeling.project import LabelingProject
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.synthetic import make_scene

    scene = make_scene(tmp_path / "scene", size=96, bands=3, seed=3)
    gpkg = tmp_path / "labels.gpkg"
    p = LabelingProject.create(gpkg, scene.crs)
    for _, name, color in scene.classes:
        p.add_class(name, color)
    p.add_raster(scene.raster)
    p.add_features([(f["class_id"], f["geometry"]) for f in scene.features])
    out = tmp_path / "m.dltmodel.safetensors"
    failing = TrainPixelSegmentationJob(project=str(gpkg), output_model=str(out),
                                        init_model=str(models["grid"]), device="cpu")
    with pytest.raises(UserError):                 # a grid model cannot start a U-Net
        failing.execute(RecordingContext())
    logs = tmp_path / "m_logs"
    (logs / "label_rasters").mkdir(parents=True, exist_ok=True)   # what a later failure leaves
    (logs / "label_rasters" / "scene_labels.tif").write_bytes(b"II*\0")
    rerun = TrainPixelSegmentationJob(project=str(gpkg), output_model=str(out))
    assert not any("LOG_FOLDER" in p for p in rerun.problems())
    papers = tmp_path / "papers"
    (papers / "label_rasters").mkdir(parents=True)  # the user's own label rasters: no log
    (papers / "report.txt").write_text("mine")
    kept = TrainPixelSegmentationJob(project=str(gpkg), output_model=str(out),
                                     log_folder=str(papers))
    assert any("holds other files and no training log" in p for p in kept.problems())


def test_a_log_folder_inside_an_imagefolder_is_not_read_as_a_class(tmp_path):
    from plugin.core.classification.chips import read_chips_folder
    from plugin.core.classification.synthetic import make_chip_folder

    folder = tmp_path / "chips"
    make_chip_folder(folder, per_class=2)
    classes = read_chips_folder(folder).class_names
    logs = folder / "m_logs"
    (logs / "tensorboard").mkdir(parents=True)
    (logs / "metrics.csv").write_text("epoch\n1\n")
    (logs / "learning_curves.png").write_bytes(next(folder.rglob("*.tif")).read_bytes())
    chipset = read_chips_folder(folder)
    assert chipset.class_names == classes and "m_logs" not in chipset.class_names
    assert not [c for c in chipset.chips if "m_logs" in c.path.parts]


def test_temporaries_of_killed_writes_are_removed_before_the_next_write(tmp_path):
    import torch

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target = tmp_path / "m.dltmodel.safetensors"
        stale = [tmp_path / f".m.dltmodel.{dead.pid}.tmp.safetensors",
                 tmp_path / f".m.dltmodel.safetensors.{dead.pid}.tmp"]   # the older name
        busy = tmp_path / f".m.dltmodel.{alive.pid}.tmp.safetensors"
        for p in [*stale, busy]:
            p.write_bytes(b"\0" * 1000)
        other = tmp_path / f".other.{dead.pid}.tmp.safetensors"
        other.write_bytes(b"x")
        old = os.umask(0o022)
        try:
            modelfile.write_safetensors({"w": torch.zeros(2)}, target, {"k": "v"})
        finally:
            os.umask(old)
        assert not any(p.exists() for p in stale)
        assert busy.exists() and other.exists()    # a live writer's, another file's
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        alive.kill()
        alive.wait()


def test_a_failed_atomic_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    from plugin.core.outputs import atomic_file

    target = tmp_path / "predictions.csv"
    target.write_text("previous")
    with pytest.raises(UserError, match="predictions.csv") as info, atomic_file(target) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert "disk is full" in info.value.message
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == [
        "predictions.csv"]


def test_classify_chips_on_a_damaged_chip_names_it(tmp_path):
    """A damaged image in the chips folder stops Classify Chips with a message naming the chip
    and the fix (it was a rasterio traceback), and writes no output."""
    from family_models import tiny_model

    from plugin.core.classification.jobs import ClassifyChipsJob
    from plugin.core.classification.synthetic import make_chip_folder
    from plugin.core.errors import UserError
    from plugin.core.jobs import RecordingContext

    make_chip_folder(tmp_path / "chips", per_class=2, size=32)
    broken = next((tmp_path / "chips").rglob("*.tif")).parent / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    job = ClassifyChipsJob(input=str(tmp_path / "chips"), output=str(tmp_path / "out.csv"),
                           model=str(tiny_model("chip_classification", tmp_path)), device="cpu")
    with pytest.raises(UserError, match="broken.png cannot be read") as info:
        job.execute(RecordingContext())
    assert "export the chips again" in info.value.fix
    assert not (tmp_path / "out.csv").exists()
