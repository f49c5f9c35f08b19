"""QGIS side of object detection: the Train Object Detection and Detect Objects dialogs build the
same jobs as Processing, the Processing algorithms run Detect Objects in a worker with only the
paths given, and the boxes are added to the map styled by class."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsCategorizedSymbolRenderer, QgsProcessingContext, QgsProject

from plugin.core.detection.jobs import DetectObjectsJob, TrainObjectDetectionJob
from plugin.core.detection.synthetic import make_object_scene, scene_project
from plugin.core.jobs import RecordingContext
from plugin.core.segmentation.jobs import ClassifyPixelsJob
from plugin.gui.detect_objects_dialog import DetectObjectsDialog, detector_card_html
from plugin.gui.output_layers import add_detections
from plugin.gui.train_detection_dialog import TrainDetectionDialog, detection_summary_html
from plugin.processing.job_algorithm import JobAlgorithm
from plugin.processing.provider import DeepLearningTrainerProvider

_RANDOM_DETECTOR = """
import sys
from plugin.core.detection.network import build_detector
from plugin.core import modelfile
patch = int(sys.argv[2])
classes = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "car", "color": "#e31a1c"}]
net = build_detector("fcos_resnet18", 3, 2, patch, [80.0] * 3, [40.0] * 3)
card = modelfile.make_card(task="object_detection", classes=classes, bands=3, mean=[80.0] * 3,
                           std=[40.0] * 3, nodata=None, pixel_size=(0.5, 0.5), crs="EPSG:32631",
                           dtype="uint8", architecture="fcos_resnet18", encoder="",
                           patch_size=patch, score_threshold=0.3, nms_iou=0.5, max_box_px=30.0)
modelfile.save_model(sys.argv[1], net, card)
"""


def random_detector(path: Path, patch: int = 64) -> Path:
    """A detector model file with random weights (no training), written by a separate Python
    (torch never enters the QGIS process)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _RANDOM_DETECTOR, str(path), str(patch)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return path


@pytest.fixture(scope="module")
def provider(qgis_processing):
    registry = QgsApplication.processingRegistry()
    own = registry.providerById("dltrainer") is None
    p = DeepLearningTrainerProvider()
    if own:
        registry.addProvider(p)
    yield registry.providerById("dltrainer")
    if own:
        registry.removeProvider(p)


def test_train_dialog_builds_the_processing_job(qgis_iface, tmp_path):
    scene = make_object_scene(tmp_path / "s", size=128, n_objects=4)
    project = scene_project(scene, tmp_path / "p.gpkg")
    dialog = TrainDetectionDialog(None, plugin=None, project_path=str(project.path),
                                  remember=False, live_summary=False)
    job = dialog.job()
    assert job.project == str(project.path) and job.output_model.endswith(
        "_detector.dltmodel.safetensors")
    algorithm = JobAlgorithm.for_kind("train_object_detection")
    params = {"PROJECT": job.project, "OUTPUT_MODEL": job.output_model,
              "OUTPUT_LAST_MODEL": job.output_last_model}
    from_processing = algorithm.job_from_parameters(params, QgsProcessingContext())
    assert from_processing.architecture == job.architecture == "auto"
    assert from_processing.patch_size == job.patch_size == 0
    dialog.patch_spin.setValue(100)
    assert not dialog.ok_button.isEnabled()
    assert any("use 96" in p for p in dialog.problems())
    summary = dialog.summary_job().run(RecordingContext())
    assert sum(summary["boxes"]["train"].values()) + sum(
        summary["boxes"]["validation"].values()) >= 4
    assert "Boxes per class" in detection_summary_html(summary)
    steps = summary["steps"]      # the pre-flight summary shows the training length
    assert f"{steps['total']} optimiser steps" in detection_summary_html(summary)
    assert steps["total"] == steps["per_epoch"] * job.epochs and steps["per_epoch"] >= 12
    labels = [dialog.arch_combo.itemText(i) for i in range(dialog.arch_combo.count())]
    assert labels[0].startswith("Automatic: FCOS (ResNet-18 FPN) on a CPU")


def test_detect_dialog_reads_the_card_and_refuses_wrong_models(qgis_iface, tmp_path):
    model = random_detector(tmp_path / "det.safetensors")
    scene = make_object_scene(tmp_path / "s", size=96, n_objects=2)
    dialog = DetectObjectsDialog(None, plugin=None, remember=False)
    dialog.set_input(str(scene.raster))
    dialog.model_edit.setText(str(model))
    assert dialog.problems() == [] and dialog.ok_button.isEnabled()
    # the line under the input names the pixel size's unit, as in Classify Pixels
    assert dialog.input_label.text() == "96 × 96 px, 3 bands, pixel size 0.5 m"
    assert "car" in detector_card_html(dialog.card)
    job = dialog.job()
    assert job.output.endswith("_objects.gpkg") and job.score_threshold == -1
    not_a_model = tmp_path / "x.safetensors"
    not_a_model.write_bytes(b"nothing")
    dialog.model_edit.setText(str(not_a_model))
    assert not dialog.ok_button.isEnabled()


def test_processing_detect_objects_with_paths_only(provider, tmp_path):
    import processing
    from osgeo import ogr

    model = random_detector(tmp_path / "det.safetensors")
    scene = make_object_scene(tmp_path / "s", size=150, n_objects=3)
    out = tmp_path / "boxes.gpkg"
    result = processing.run("dltrainer:detectobjects", {
        "INPUT": str(scene.raster), "MODEL": str(model), "OUTPUT": str(out), "DEVICE": "cpu"})
    assert Path(result["OUTPUT"]) == out and out.is_file()
    ds = ogr.Open(str(out))          # keep the data source alive while its layer is used
    layer = ds.GetLayer(0)
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName()
             for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert names == ["class_id", "class_name", "score", "area_m2"]


def test_boxes_added_to_the_map_styled_by_class(qgis_iface, tmp_path):
    import numpy as np
    from rasterio.crs import CRS

    from plugin.core.detection.predict import write_detections

    out = tmp_path / "d.gpkg"
    write_detections(out, np.array([[0.0, 0, 2, 3]]), np.array([0.8]), np.array([1]),
                     {1: "car"}, CRS.from_epsg(32631).to_wkt(), ("area_m2", 1.0))
    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "car", "color": "#e31a1c"}]
    project = QgsProject.instance()
    layers = add_detections({"output": str(out)}, classes, "found", project, show_scores=True)
    try:
        assert len(layers) == 1 and layers[0].featureCount() == 1
        renderer = layers[0].renderer()
        assert isinstance(renderer, QgsCategorizedSymbolRenderer)
        assert [c.label() for c in renderer.categories()] == ["1 car"]
        assert layers[0].labelsEnabled()
    finally:
        for layer in layers:
            project.removeMapLayer(layer.id())


def test_jobs_round_trip_through_job_files(tmp_path):
    job = DetectObjectsJob(input="a.tif", model="m.safetensors", output="o.gpkg", tta=True)
    job.save(tmp_path / "j.json")
    assert DetectObjectsJob.load(tmp_path / "j.json") == job
    train = TrainObjectDetectionJob(project="p.gpkg", output_model="m.safetensors")
    assert TrainObjectDetectionJob.from_dict(train.to_dict()) == train


def test_classify_dialogs_ask_before_replacing_outputs(qgis_app, tmp_path, monkeypatch):
    """Classify Pixels and Detect Objects ask before replacing an output file that exists, as
    the other dialogs do; declining keeps the file and starts nothing."""
    from qgis.PyQt.QtWidgets import QMessageBox

    from plugin.gui.classify_pixels_dialog import ClassifyPixelsDialog
    from plugin.gui.detect_objects_dialog import DetectObjectsDialog

    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.No)
    out = tmp_path / "mine.gpkg"
    out.write_bytes(b"a user's file")
    for dialog_cls, job in ((DetectObjectsDialog, DetectObjectsJob(output=str(out))),
                            (ClassifyPixelsDialog, ClassifyPixelsJob(
                                output=str(tmp_path / "c.tif"), output_vector=str(out)))):
        dialog = dialog_cls(None, remember=False)
        assert dialog.confirm(job) is False
        assert str(out) in asked[-1]
        dialog.close()
    assert out.read_bytes() == b"a user's file"
    assert ClassifyPixelsDialog(None, remember=False).confirm(
        ClassifyPixelsJob(output=str(tmp_path / "new.tif"))) is True
