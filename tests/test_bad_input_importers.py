"""Bad box annotation files (issue 18): rows that cannot be boxes of the raster are skipped with a
warning naming the file and row, boxes beyond the image clipped to it; malformed files and files
with no usable box are refused naming the file, the row and the fix, with no project left behind;
Import Labels in Processing and qgis_process takes the annotation files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from qgis_helpers import dltrainer_provider

from plugin.core.errors import UserError
from plugin.core.jobs import RecordingContext
from plugin.core.labeling.box_importers import import_box_annotations
from plugin.core.labeling.jobs import ImportLabelsJob
from plugin.core.labeling.project import LabelingProject
from plugin.core.synthetic import make_scene

SIZE = 64   # the scene is 64 × 64 px, named scene.tif


@pytest.fixture
def scene(tmp_path):
    return make_scene(tmp_path / "s", size=SIZE, bands=3, seed=1)


def _coco(path: Path, annotations: list, categories=None, images=None) -> Path:
    data = {"images": images if images is not None else [{"id": 1, "file_name": "scene.tif"}],
            "annotations": annotations,
            "categories": categories if categories is not None else [{"id": 1, "name": "car"}]}
    path.write_text(json.dumps(data))
    return path


def _ann(i: int, bbox, category: int = 1) -> dict:
    return {"id": i, "image_id": 1, "category_id": category, "bbox": bbox}


def _voc(path: Path, objects: list[tuple[str, str, str, str, str]], filename="scene.tif"
         ) -> Path:
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for n, a, b, c, d in objects)
    path.write_text(f"<annotation><filename>{filename}</filename>{body}</annotation>")
    return path


def _warnings(ctx: RecordingContext) -> str:
    return " ".join(e["message"] for e in ctx.events
                    if e["event"] == "log" and e.get("level") == "warning")


def _bounds_px(project: Path, scene) -> list[tuple[float, float, float, float]]:
    """Each stored box as pixel edges (x0, y0, x1, y1) of the scene."""
    import rasterio

    with rasterio.open(scene.raster) as ds:
        inv = ~ds.transform
    out = []
    for f in LabelingProject.open(project).features("polygons"):
        ring = np.asarray(f.geometry["coordinates"], float).reshape(-1, 2)
        px = [inv * (float(x), float(y)) for x, y in ring]
        xs, ys = [p[0] for p in px], [p[1] for p in px]
        out.append(tuple(round(v, 6) for v in (min(xs), min(ys), max(xs), max(ys))))
    return out


def _import(tmp_path, labels, scene, ctx=None):
    return import_box_annotations(tmp_path / "p.gpkg", labels, scene.raster, ctx=ctx)


# -- silently wrong before: now skipped / clipped with a warning naming file and row -----------
def test_coco_unknown_category_is_skipped_with_a_warning(tmp_path, scene):
    ctx = RecordingContext()
    coco = _coco(tmp_path / "a.json", [_ann(5, [1, 2, 10, 10]), _ann(6, [20, 20, 5, 5], 2)])
    rep = _import(tmp_path, coco, scene, ctx)
    assert rep["boxes"] == {"car": 1} and rep["skipped"] == 1
    assert [c.name for c in LabelingProject.open(tmp_path / "p.gpkg").classes()] == ["car"]
    assert "a.json were skipped: annotation 2 (id 6): category_id 2 is not in 'categories'" \
        in _warnings(ctx)


def test_coco_with_only_unknown_categories_is_refused_and_creates_nothing(tmp_path, scene):
    coco = _coco(tmp_path / "a.json", [_ann(6, [20, 20, 5, 5], 2)])
    with pytest.raises(UserError, match=r"a.json holds no box on scene.tif to import: "
                                        r"annotation 1 \(id 6\): category_id 2 is not in"):
        _import(tmp_path, coco, scene)
    assert not (tmp_path / "p.gpkg").exists()


def test_voc_of_another_image_is_refused(tmp_path, scene):
    voc = _voc(tmp_path / "other.xml", [("tree", "1", "1", "10", "10")], filename="other.jpg")
    with pytest.raises(UserError) as err:
        _import(tmp_path, voc, scene)
    assert "other.xml describes the image other.jpg (its <filename>), not scene.tif" in str(
        err.value)
    assert not (tmp_path / "p.gpkg").exists()
    same_stem = _voc(tmp_path / "ok.xml", [("tree", "1", "1", "10", "10")],
                     filename="scene.png")   # the same image in another format
    assert _import(tmp_path, same_stem, scene)["boxes"] == {"tree": 1}


def test_yolo_box_beyond_the_image_is_clipped_with_a_warning(tmp_path, scene):
    ctx = RecordingContext()
    (tmp_path / "classes.txt").write_text("car\n")
    yolo = tmp_path / "scene.txt"
    yolo.write_text("0 0.5 0.5 3 3\n0 0.25 0.25 0.25 0.25\n")
    rep = _import(tmp_path, yolo, scene, ctx)
    assert rep["boxes"] == {"car": 2} and rep["clipped"] == 1
    assert sorted(_bounds_px(tmp_path / "p.gpkg", scene)) == [(0, 0, 64, 64), (8, 8, 24, 24)]
    assert "1 box(es) of scene.txt reach beyond scene.tif (64 × 64 px) and were clipped to " \
           "it: line 1: x -64–128, y -64–128 px" in _warnings(ctx)


def test_yolo_class_indices_outside_the_names_are_skipped(tmp_path, scene):
    ctx = RecordingContext()
    (tmp_path / "classes.txt").write_text("car\ntruck\n")
    yolo = tmp_path / "scene.txt"
    yolo.write_text("-1 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.1 0.1\n")
    rep = _import(tmp_path, yolo, scene, ctx)
    assert rep["boxes"] == {"truck": 1} and rep["skipped"] == 2
    text = _warnings(ctx)
    assert "2 row(s) of scene.txt were skipped: line 1: class -1 is not a class index (0 to 1 " \
           "in the class names file); line 3: class 9 is not a class index" in text
    names = [c.name for c in LabelingProject.open(tmp_path / "p.gpkg").classes()]
    assert names == ["truck"]


# -- tracebacks before: malformed files are refused naming file, row and fix ------------------
MALFORMED = {
    "coco bbox of 3 values": ("a.json", lambda p: _coco(p, [_ann(4, [1, 2, 3])]),
                              "a.json, annotation 1 (id 4): bbox [1, 2, 3] is not [x, y, width, "
                              "height]."),
    "coco image without id": ("a.json", lambda p: _coco(p, [], images=[{"file_name": "x.tif"}]),
                              "a.json, image 1 (x.tif): it has no 'id'."),
    "coco bbox not numbers": ("a.json", lambda p: _coco(p, [_ann(4, [1, "two", 3, 4])]),
                              "a.json, annotation 1 (id 4): bbox[1] 'two' is not a number."),
    "coco top-level array": ("a.json", lambda p: p.write_text("[1, 2]") and p,
                             "a.json is not a COCO annotation file: its top level is a list"),
    "voc xmin text": ("a.xml", lambda p: _voc(p, [("tree", "1", "1", "9", "9"),
                                                  ("tree", "a", "1", "9", "9")]),
                      "a.xml, object 2 ('tree'): <xmin> 'a' is not a number."),
    "deepforest xmin text": ("a.csv", lambda p: p.write_text(
        "image_path,xmin,ymin,xmax,ymax,label\nscene.tif,1,1,9,9,Tree\n"
        "scene.tif,abc,1,9,9,Tree\n") and p, "a.csv, line 3: xmin 'abc' is not a number."),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotation_files_are_refused_naming_the_row(tmp_path, scene, case):
    name, write, message = MALFORMED[case]
    labels = write(tmp_path / name)
    with pytest.raises(UserError) as err:
        _import(tmp_path, labels, scene)
    assert message in err.value.message
    assert err.value.fix
    assert not (tmp_path / "p.gpkg").exists()



def test_a_json_array_with_format_auto_is_refused_as_a_coco_file(tmp_path, scene):
    """Sweep (issue 18): FORMAT auto took a .json array for a vector layer and asked for a
    CLASS_FIELD; an array is no GeoJSON, so the COCO reader names what is wrong."""
    labels = tmp_path / "boxes.json"
    labels.write_text("[1, 2]")
    job = ImportLabelsJob(project=str(tmp_path / "new.gpkg"), labels=str(labels),
                          rasters=[str(scene.raster)])
    assert job.label_format() == "coco" and job.problems() == []
    with pytest.raises(UserError, match="boxes.json is not a COCO annotation file: its top level "
                                        "is a list"):
        job.execute(RecordingContext())
    assert not (tmp_path / "new.gpkg").exists()
    labels.write_text('{"type": "FeatureCollection", "features": []}')
    assert job.label_format() == "vector"

# -- unclear before: say which rows and what was wrong ------------------------------------------
def test_empty_boxes_are_named_in_the_refusal(tmp_path, scene):
    coco = _coco(tmp_path / "a.json", [_ann(3, [30, 30, -10, 5])])
    with pytest.raises(UserError, match=r"annotation 1 \(id 3\): width -10 × height 5 is not a "
                                        r"box"):
        _import(tmp_path, coco, scene)
    voc = _voc(tmp_path / "b.xml", [("tree", "30", "5", "10", "20")])
    with pytest.raises(UserError, match=r"b.xml holds no box on scene.tif to import: object 1 "
                                        r"\('tree'\): x 29–10, y 4–20 px is empty"):
        _import(tmp_path, voc, scene)
    assert not (tmp_path / "p.gpkg").exists()


def test_deepforest_empty_label_is_named_and_a_refused_job_leaves_no_project(tmp_path, scene):
    csv = tmp_path / "trees.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nscene.tif,1,1,9,9,\n")
    job = ImportLabelsJob(project=str(tmp_path / "new.gpkg"), labels=str(csv),
                          rasters=[str(scene.raster)])
    with pytest.raises(UserError, match="trees.csv holds no box on scene.tif to import: line 2: "
                                        "its label is empty"):
        job.execute(RecordingContext())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "trees.csv"]
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nscene.tif,1,1,9,9,\n"
                   "scene.tif,10,10,20,20,Tree\n")
    ctx = RecordingContext()
    assert job.execute(ctx)["boxes"] == {"Tree": 1}
    assert "1 row(s) of trees.csv were skipped: line 2: its label is empty." in _warnings(ctx)


def test_a_failed_write_removes_the_project_it_created(tmp_path, scene, monkeypatch):
    from plugin.core.labeling import box_importers

    coco = _coco(tmp_path / "a.json", [_ann(1, [1, 2, 10, 10])])

    def broken(project, items, raster_id=None):
        raise OSError("disk full")

    monkeypatch.setattr(LabelingProject, "add_features", broken)
    with pytest.raises(OSError):
        box_importers.import_box_annotations(tmp_path / "p.gpkg", coco, scene.raster)
    assert not (tmp_path / "p.gpkg").exists()
    existing = LabelingProject.create(tmp_path / "kept.gpkg", scene.crs)
    with pytest.raises(OSError):
        box_importers.import_box_annotations(existing.path, coco, scene.raster)
    assert LabelingProject.open(tmp_path / "kept.gpkg").crs == existing.crs   # kept


# -- Processing and qgis_process take the annotation files --------------------------------------
def _annotation_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "classes.txt").write_text("car\n")
    yolo = tmp_path / "scene.txt"
    yolo.write_text("0 0.25 0.25 0.25 0.25\n")
    return {"coco": _coco(tmp_path / "a.json", [_ann(1, [8, 8, 16, 16])]),
            "voc": _voc(tmp_path / "a.xml", [("car", "9", "9", "24", "24")]),
            "yolo": yolo}


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_processing_import_labels_takes_box_files(qgis_processing, tmp_path, scene, fmt):
    import processing

    with dltrainer_provider():
        labels = _annotation_files(tmp_path)[fmt]
        result = processing.run("dltrainer:importlabels", {
            "PROJECT": str(tmp_path / "p.gpkg"), "RASTERS": [str(scene.raster)],
            "LABELS": str(labels)})
        assert result["boxes"] == {"car": 1}
        assert _bounds_px(tmp_path / "p.gpkg", scene) == [(8, 8, 24, 24)]
        from qgis.core import QgsProcessingException

        with pytest.raises(QgsProcessingException, match="in pixels of one image: give "
                                                         "exactly that raster in RASTERS"):
            processing.run("dltrainer:importlabels", {
                "PROJECT": str(tmp_path / "q.gpkg"), "RASTERS": [str(tmp_path / "no.tif")],
                "LABELS": str(labels)})
        missing = f"The labels file {tmp_path}/no.xml does not exist"
        with pytest.raises(QgsProcessingException, match=missing):
            processing.run("dltrainer:importlabels", {
                "PROJECT": str(tmp_path / "q.gpkg"), "RASTERS": [str(scene.raster)],
                "LABELS": str(tmp_path / "no.xml")})
        assert not (tmp_path / "q.gpkg").exists()


@pytest.mark.skipif(not Path("/usr/bin/qgis_process.bin").exists(),
                    reason="qgis_process is not installed")
def test_qgis_process_import_labels_takes_a_voc_file(tmp_path, scene):
    from tests.test_processing import QGIS_PROCESS, deployed_env

    env = deployed_env(tmp_path)
    voc = _annotation_files(tmp_path)["voc"]
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "dltrainer:importlabels",
                           f"--PROJECT={tmp_path / 'p.gpkg'}", f"--RASTERS={scene.raster}",
                           f"--LABELS={voc}"], env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout[done.stdout.index("{"):])["results"]["boxes"] == {"car": 1}
    assert os.path.exists(tmp_path / "p.gpkg")
