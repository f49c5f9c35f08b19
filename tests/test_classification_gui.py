"""QGIS side of grid models and chip classifiers: the dialogs build the jobs Processing builds,
keep OK disabled with the reason, and the outputs are added to the map styled by class."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
from qgis.core import QgsCategorizedSymbolRenderer, QgsProcessingContext, QgsProject

from plugin.core.classification.jobs import (
    ClassifyChipsJob,
    ClassifyGridJob,
    TrainChipClassifierJob,
    TrainGridModelJob,
)
from plugin.gui.classification_dialogs import JobFormDialog
from plugin.gui.output_layers import add_class_layer
from plugin.processing.job_algorithm import JobAlgorithm


def _write_card_only_model(path) -> None:
    """A model file holding a card and no tensor (enough for the dialogs' checks)."""
    card = {"format": "dltrainer-model", "format_version": 1, "task": "grid",
            "classes": [{"id": 1, "name": "a", "color": "#ff0000"}], "num_outputs": 2,
            "bands": 3, "mean": [0.0] * 3, "std": [1.0] * 3, "nodata": None,
            "architecture": "resnet18", "multi_label": False, "grid_size": 224}
    header = json.dumps({"__metadata__": {"format": "dltrainer-model", "format_version": "1",
                                          "card": json.dumps(card)}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.mark.parametrize("job_cls", [TrainGridModelJob, ClassifyGridJob,
                                     TrainChipClassifierJob, ClassifyChipsJob])
def test_dialog_builds_the_processing_job_and_explains_what_blocks_ok(qgis_processing, job_cls,
                                                                      tmp_path):
    dialog = JobFormDialog(job_cls, remember=False)
    assert not dialog.ok_button.isEnabled()
    assert "required" in dialog.reason_label.text() or "Choose" in dialog.reason_label.text()
    expected = job_cls(device="auto")
    assert dialog.job() == dataclasses.replace(expected, device=dialog.job().device)
    folder = tmp_path / "chips"
    folder.mkdir()
    model = tmp_path / "m.dltmodel.safetensors"
    _write_card_only_model(model)
    raster = tmp_path / "r.tif"
    raster.write_bytes(b"x")
    project = tmp_path / "p.gpkg"
    project.write_bytes(b"x")
    paths = {"project": str(project), "input": str(folder), "model": str(model),
             "output_model": str(tmp_path / "out.dltmodel.safetensors"),
             "output": str(tmp_path / ("out.gpkg" if job_cls is ClassifyGridJob else "o.csv"))}
    if job_cls is ClassifyGridJob:
        paths["input"] = str(raster)
    values = {k: v for k, v in paths.items() if hasattr(expected, k)}
    if hasattr(expected, "architecture"):
        values["architecture"] = "resnet18"
    if job_cls is TrainChipClassifierJob:
        values.update(classes=["red", "blue"], multi_label=True, two_rounds=True)
    job = dataclasses.replace(expected, device="cpu", **values)
    dialog.set_job(job)
    dialog._changed()
    assert dialog.job() == job
    assert dialog.problems() == [] and dialog.ok_button.isEnabled()
    algorithm = JobAlgorithm.for_kind(job_cls.kind)
    back = algorithm.job_from_parameters(algorithm.parameters_from_job(job),
                                         QgsProcessingContext())
    assert back == job
    if hasattr(job, "grid_size"):
        dialog.widgets["grid_size"][1].setValue(100)
        assert "multiple of 16: use 96" in dialog.reason_label.text()
        assert not dialog.ok_button.isEnabled()


def test_grid_cells_are_styled_by_class_name(qgis_app, tmp_path):
    from osgeo import ogr, osr

    path = tmp_path / "cells.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    layer = ds.CreateLayer("grid_cells", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTString))
    for k, name in enumerate(("building", "background")):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("class", name)
        f.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON(({k} 0,{k + 1} 0,{k + 1} 1,{k} 1,{k} 0))"))
        layer.CreateFeature(f)
    ds = None
    classes = [{"id": 1, "name": "building", "color": "#e31a1c"},
               {"id": 2, "name": "water", "color": "#1f78b4"}]
    project = QgsProject()
    added = add_class_layer(str(path), classes, "cells", project)
    renderer = added.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "class"
    cats = {c.value(): c.symbol().color().name() for c in renderer.categories()}
    assert cats["building"] == "#e31a1c" and set(cats) == {"building", "water", "background"}
