"""Object detection pieces without training: labels → boxes, box importers, box-aware
augmentation, metrics, tiled detection merged across tiles (with an oracle detector that reports
what a perfect model would see in each tile), the GeoPackage output and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plugin.core.detection.data import BoxAugment, BoxDataset, check_patch_fits, patch_boxes
from plugin.core.detection.metrics import DetectionMetrics, match_counts
from plugin.core.detection.predict import detect_raster, merge_across_tiles, overlap_for, to_map
from plugin.core.detection.synthetic import make_object_scene, scene_project
from plugin.core.errors import UserError
from plugin.core.labeling.box_importers import import_box_annotations, read_boxes
from plugin.core.labeling.project import LabelingProject
from plugin.core.sampling import Patch, SampleSource
from plugin.core.sampling.boxes import Box, feature_boxes


class _F:
    def __init__(self, fid, class_id, layer, geometry):
        self.fid, self.class_id, self.layer, self.geometry = fid, class_id, layer, geometry


def test_labels_to_boxes_polygons_points_lines_padding():
    from affine import Affine

    t = Affine(0.5, 0, 1000, 0, -0.5, 2000)        # 0.5 m pixels
    poly = {"type": "Polygon", "coordinates": [[list(t * (10, 10)), list(t * (50, 10)),
                                                list(t * (50, 40)), list(t * (10, 40)),
                                                list(t * (10, 10))]]}
    point = {"type": "Point", "coordinates": list(t * (100, 100))}
    line = {"type": "LineString", "coordinates": [list(t * (150, 60)), list(t * (190, 60))]}
    feats = [_F(1, 1, "polygons", poly), _F(2, 2, "points", point), _F(3, 1, "lines", line)]
    boxes = feature_boxes(feats, t, 256, 256, point_box={2: 40.0}, min_size=25, pad=True)
    b = {x.fid: (x.x0, x.y0, x.x1, x.y1) for x in boxes}
    assert b[1] == pytest.approx((10, 10, 50, 40))            # polygon: its extent
    assert b[2] == pytest.approx((80, 80, 120, 120))          # point: 2 × solid distance 20 px
    assert b[3] == pytest.approx((150, 47.5, 190, 72.5))      # line padded to 25 px in y
    unpadded = feature_boxes(feats, t, 256, 256, point_box={2: 40.0}, pad=False)
    assert {x.fid: x.height for x in unpadded}[3] == pytest.approx(1.0)


def test_patch_boxes_clip_and_drop_slivers():
    patch = Patch(0, 0, 0, 64, "train", True, {}, 0.0)
    boxes = [Box(1, 1, 10, 10, 30, 30), Box(2, 1, 48, 10, 78, 30),   # 16/30 inside: kept
             Box(3, 1, 50, 10, 80, 30),                               # 14/30 < half: dropped
             Box(5, 1, 60, 10, 90, 30)]                               # 4/30 inside: dropped
    kept = {b.fid: c for b, c in patch_boxes(boxes, patch)}
    assert kept[1] == (10, 10, 30, 30) and kept[2] == (48, 10, 64, 30) and set(kept) == {1, 2}
    with pytest.raises(UserError, match="at least 128 px"):
        check_patch_fits([boxes + [Box(4, 1, 0, 0, 100, 20)]], 64)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_boxes_with_the_image(seed):
    """A bright square painted in the image stays exactly under its box after flips, 90° turns
    and zoom."""
    import torch

    img = torch.zeros(1, 64, 64)
    img[0, 8:24, 30:50] = 1.0
    boxes = torch.tensor([[30.0, 8.0, 50.0, 24.0]])
    aug = BoxAugment(rotation=True, scale=True, flip=True)
    out, ob = aug(img, boxes, np.random.default_rng(seed), np.zeros(1, np.float32))
    x0, y0, x1, y1 = ob[0].tolist()
    mask = out[0] > 0.5
    rows, cols = np.nonzero(mask.numpy())
    assert rows.min() == pytest.approx(y0, abs=1.0) and rows.max() + 1 == pytest.approx(y1, abs=1.0)
    assert cols.min() == pytest.approx(x0, abs=1.0) and cols.max() + 1 == pytest.approx(x1, abs=1.0)


def test_dataset_reads_patch_with_boxes(tmp_path):
    scene = make_object_scene(tmp_path, size=128, n_objects=6, seed=3)
    boxes = [[Box(i, c, c0, r0, c1, r1) for i, (c, c0, r0, c1, r1) in enumerate(scene.boxes)]]
    ds = BoxDataset([SampleSource(str(scene.raster), "")], boxes,
                    [Patch(0, 0, 0, 128, "train", True, {}, 0.0)], [0.0, 0.0, 0.0])
    image, target = ds[0]
    assert image.shape == (3, 128, 128) and len(target["boxes"]) == 6
    c, c0, r0, c1, r1 = scene.boxes[0]
    assert target["boxes"][0].tolist() == [c0, r0, c1, r1]
    assert float(image[0, r0 + 2, c0 + 2]) > 180          # the red square is under its box


def test_metrics_map_and_prf():
    import torch

    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]),
            "scores": torch.tensor([0.9, 0.8, 0.4]), "labels": torch.tensor([1, 1, 2])}
    truth = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 31, 31], [70, 70, 80, 80]]),
             "labels": torch.tensor([1, 1, 2])}
    assert match_counts(pred, truth, 1, 0.3) == (2, 0, 0)
    assert match_counts(pred, truth, 2, 0.3) == (0, 1, 1)
    m = DetectionMetrics([1, 2], 0.3)
    m.update([pred], [truth])
    r = m.compute()
    assert r["ap50_1"] == pytest.approx(1.0) and r["ap50_2"] == 0.0
    assert r["map50"] == pytest.approx(0.5) and 0 < r["map"] < r["map50"]
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert set(m.pr_curve()) == {"1", "2"}


class Oracle:
    """A perfect detector of a known scene: for each tile, the visible part of every object
    (clipped at the tile edge, as a real detector sees a cut object), score 0.9."""

    def __init__(self, scene, tile_origins):
        self.scene, self.origins, self.calls = scene, iter(tile_origins), 0

    def __call__(self, batch):
        out = []
        for _ in batch:
            r0, c0 = next(self.origins)
            t = batch.shape[-1]
            b, s, lab = [], [], []
            for cid, x0, y0, x1, y1 in self.scene.boxes:
                cx0, cy0 = max(x0 - c0, 0), max(y0 - r0, 0)
                cx1, cy1 = min(x1 - c0, t), min(y1 - r0, t)
                if cx1 - cx0 > 3 and cy1 - cy0 > 3:
                    b.append([cx0, cy0, cx1, cy1])
                    s.append(0.9)
                    lab.append(cid)
            out.append((np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32),
                        np.asarray(lab, np.int64)))
        return out


def _oracle_run(scene, tile, overlap):
    import rasterio

    from plugin.core.tiling import tile_starts

    rows = tile_starts(scene.height, tile, tile - overlap)
    cols = tile_starts(scene.width, tile, tile - overlap)
    oracle = Oracle(scene, [(r, c) for r in rows for c in cols])
    with rasterio.open(scene.raster) as src:
        found = detect_raster(src, oracle, [0, 0, 0], tile, overlap, batch=3)
        transform = src.transform
    boxes_map = to_map(found["boxes"], transform)
    keep = merge_across_tiles(boxes_map, found["scores"], found["labels"], 0.5)
    return boxes_map[keep], found


@pytest.mark.parametrize("overlap", [40, 48])
def test_object_on_tile_borders_detected_once_at_its_true_place(tmp_path, overlap):
    """Objects straddling the borders of 64 px tiles come out once each, at their true map
    coordinates (within a pixel); with the larger overlap whole objects are seen by two tiles
    and merged by the NMS across tiles."""
    fixed = [(1, 20, 50, 52, 80), (1, 70, 10, 100, 38), (1, 40, 40, 70, 70)]
    scene = make_object_scene(tmp_path, size=160, n_objects=8, seed=5, fixed=fixed)
    boxes, found = _oracle_run(scene, 64, overlap)
    assert found["tiles"] > 4 and len(found["boxes"]) >= len(scene.boxes)
    if overlap == 48:
        assert len(found["boxes"]) > len(scene.boxes)     # duplicates that NMS must merge
    assert len(boxes) == len(scene.boxes)
    truth = np.array([scene.map_box(b) for b in scene.boxes])
    for t in truth:
        d = np.abs(boxes - t).max(1)
        assert d.min() <= 0.5 * 1.0 + 1e-6          # pixel size 0.5 m: within one pixel


def test_overlap_rules():
    card = {"max_box_px": 40}
    assert overlap_for(card, 128, -1) == 44
    assert overlap_for(card, 128, 10) == 40           # raised to the largest trained box
    with pytest.raises(UserError, match="TILE_SIZE"):
        overlap_for(card, 32, -1)


def test_box_areas_in_m2_in_every_crs_and_geopackage(tmp_path):
    from osgeo import ogr
    from pyproj import Geod
    from rasterio.crs import CRS

    from plugin.core.detection.predict import box_areas, write_detections

    box = np.array([[0.0, 0, 2, 3]])
    assert box_areas(box, CRS.from_epsg(32631).to_wkt(), True)[0] == "area_m2"
    assert box_areas(box, CRS.from_epsg(32631).to_wkt(), True)[1] == pytest.approx([6.0])
    feet = box_areas(box, CRS.from_epsg(2263).to_wkt(), True)            # US feet → m²
    assert feet[0] == "area_m2" and feet[1] == pytest.approx([6 * 0.3048006 ** 2], rel=1e-5)
    degrees = np.array([[10.0, 50.0, 10.001, 50.001]])
    name, area = box_areas(degrees, CRS.from_epsg(4326).to_wkt(), True)
    geodesic = abs(Geod(ellps="WGS84").polygon_area_perimeter(
        [10.0, 10.001, 10.001, 10.0], [50.0, 50.0, 50.001, 50.001])[0])
    assert name == "area_m2" and area == pytest.approx([geodesic], rel=1e-6)
    assert 7_000 < geodesic < 8_000                      # 71.7 m × 111.2 m
    assert box_areas(box, None, False) == ("area_px", pytest.approx([6.0]))
    out = tmp_path / "d.gpkg"
    n = write_detections(out, box, np.array([0.8]), np.array([1]), {1: "car"},
                         CRS.from_epsg(32631).to_wkt(), ("area_m2", np.array([6.0])))
    ds = ogr.Open(str(out))
    f = ds.GetLayer(0).GetNextFeature()
    assert n == 1 and f.GetField("class_name") == "car" and f.GetField("area_m2") == 6.0


# -- importers ----------------------------------------------------------------------------------
def _xy(geometry: dict) -> tuple[list[float], list[float]]:
    pts = np.asarray(geometry["coordinates"], float).reshape(-1, 2)
    return pts[:, 0].tolist(), pts[:, 1].tolist()


def test_import_deepforest_csv_and_voc_onto_osbs(deepforest_dir, tmp_path):
    """OSBS_029's 61 trees from the DeepForest CSV land on the raster's map coordinates; the VOC
    file of the same tile gives the same boxes shifted by VOC's 1-based pixel indices."""
    import rasterio

    tif = deepforest_dir / "OSBS_029.tif"
    csv_boxes = read_boxes(deepforest_dir / "OSBS_029.csv", tif)
    voc_boxes = read_boxes(deepforest_dir / "OSBS_029.xml", tif)
    assert len(csv_boxes) == len(voc_boxes) == 61
    assert voc_boxes[0][1:] == (csv_boxes[0][1] - 1, csv_boxes[0][2] - 1, *csv_boxes[0][3:])
    rep = import_box_annotations(tmp_path / "p.gpkg", deepforest_dir / "OSBS_029.csv", tif)
    assert rep["boxes"] == {"Tree": 61} and rep["created"]
    project = LabelingProject.open(tmp_path / "p.gpkg")
    feats = project.features("polygons")
    with rasterio.open(tif) as ds:
        t = ds.transform
    _, x0, y0, x1, y1 = csv_boxes[0]
    xs, ys = _xy(feats[0].geometry)
    assert min(xs) == pytest.approx((t * (x0, y0))[0]) and max(ys) == pytest.approx(
        (t * (x0, y0))[1])
    assert max(xs) == pytest.approx((t * (x1, y1))[0])


def test_import_coco_and_yolo_from_an_export_round_trip(tmp_path):
    """Boxes written as COCO and YOLO files (pixel edges 10..40 × 20..50 on a 100 px image)
    import as the same map rectangle."""
    scene = make_object_scene(tmp_path / "s", size=100, n_objects=0, seed=0)
    coco = tmp_path / "ann.json"
    coco.write_text(json.dumps({"images": [{"id": 7, "file_name": "objects.tif", "width": 100,
                                            "height": 100}],
                                "annotations": [{"id": 1, "image_id": 7, "category_id": 3,
                                                 "bbox": [10, 20, 30, 30]}],
                                "categories": [{"id": 3, "name": "car"}]}))
    yolo_dir = tmp_path / "yolo" / "labels"
    yolo_dir.mkdir(parents=True)
    (tmp_path / "yolo" / "data.yaml").write_text("names:\n  0: \"car\"\n")
    (yolo_dir / "objects.txt").write_text("0 0.25 0.35 0.3 0.3\n")
    a = read_boxes(coco, scene.raster)
    b = read_boxes(yolo_dir / "objects.txt", scene.raster, width=100, height=100)
    assert a == [("car", 10, 20, 40, 50)]
    assert b[0][0] == "car" and b[0][1:] == pytest.approx((10, 20, 40, 50))
    rep = import_box_annotations(tmp_path / "p.gpkg", coco, scene.raster)
    assert rep["classes"] == {"car": 1}


def test_import_ungeoreferenced_png_uses_pixel_coordinates(deepforest_dir, tmp_path):
    from plugin.core.jobs import RecordingContext

    ctx = RecordingContext()
    png = deepforest_dir / "OSBS_029.png"
    rep = import_box_annotations(tmp_path / "p.gpkg", deepforest_dir / "OSBS_029.xml", png,
                                 ctx=ctx)
    assert rep["boxes"] == {"Tree": 61}
    assert any("not georeferenced" in e["message"] for e in ctx.events if e["event"] == "log")
    feat = LabelingProject.open(tmp_path / "p.gpkg").features("polygons")[0]
    xs, ys = _xy(feat.geometry)
    assert (min(xs), -max(ys), max(xs), -min(ys)) == (202, 66, 227, 90)   # pixels, y = −row


def test_import_boxes_outside_the_raster_is_a_clear_error(tmp_path):
    scene = make_object_scene(tmp_path / "s", size=64, n_objects=0)
    csv = tmp_path / "b.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\nobjects.tif,100,100,140,140,car\n")
    with pytest.raises(UserError, match="no box on objects.tif"):
        import_box_annotations(tmp_path / "p.gpkg", csv, scene.raster)


def test_import_labels_job_takes_box_files(tmp_path, deepforest_dir):
    from plugin.core.labeling.jobs import ImportLabelsJob

    job = ImportLabelsJob(project=str(tmp_path / "p.gpkg"), labels=str(
        deepforest_dir / "OSBS_029.csv"), rasters=[str(deepforest_dir / "OSBS_029.tif")])
    assert job.label_format() == "deepforest_csv" and job.problems() == []
    two = ImportLabelsJob(project=str(tmp_path / "q.gpkg"), labels=str(
        deepforest_dir / "OSBS_029.xml"), rasters=[])
    assert any("exactly that raster" in p for p in two.problems())


# -- training data preparation ------------------------------------------------------------------
def _train_job(tmp_path, project, **kw):
    from plugin.core.detection.jobs import TrainObjectDetectionJob

    return TrainObjectDetectionJob(project=str(project), output_model=str(tmp_path / "m.st"),
                                   **kw)


def test_prepare_plans_feature_patches_and_counts_boxes(tmp_path):
    from plugin.core.detection.data import prepare_detection_data
    from plugin.core.jobs import RecordingContext

    scene = make_object_scene(tmp_path / "s", size=256, n_objects=12, seed=2)
    scene_project(scene, tmp_path / "p.gpkg")
    data = prepare_detection_data(_train_job(tmp_path, tmp_path / "p.gpkg", patch_size=128),
                                  RecordingContext(), tmp_path / "work")
    assert sum(len(b) for b in data.boxes) == 12
    assert data.plan.split("train") and data.plan.split("validation")
    assert sum(data.box_counts("train").values()) + sum(
        data.box_counts("validation").values()) >= 12


def test_no_boxes_and_patch_smaller_than_largest_box_are_clear_errors(tmp_path):
    from plugin.core.detection.data import prepare_detection_data
    from plugin.core.jobs import RecordingContext

    scene = make_object_scene(tmp_path / "s", size=128, n_objects=0, seed=2)
    project = scene_project(scene, tmp_path / "empty.gpkg")
    with pytest.raises(UserError, match="no object to learn from|has no labels"):
        prepare_detection_data(_train_job(tmp_path, project.path, patch_size=64),
                               RecordingContext(), tmp_path / "w1")
    big = make_object_scene(tmp_path / "b", size=256, n_objects=0,
                            fixed=[(1, 10, 10, 110, 60)])
    scene_project(big, tmp_path / "big.gpkg")
    with pytest.raises(UserError, match="patch size of at least 128"):
        prepare_detection_data(_train_job(tmp_path, tmp_path / "big.gpkg", patch_size=64),
                               RecordingContext(), tmp_path / "w2")


def test_boxes_outside_every_raster_are_a_clear_error(tmp_path):
    from plugin.core.detection.data import prepare_detection_data
    from plugin.core.jobs import RecordingContext

    scene = make_object_scene(tmp_path / "s", size=128, n_objects=0)
    project = scene_project(scene, tmp_path / "p.gpkg")
    far = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    project.add_features([(1, far)])
    with pytest.raises(UserError, match="inside a training raster|lies on a training raster"):
        prepare_detection_data(_train_job(tmp_path, project.path, patch_size=64),
                               RecordingContext(), tmp_path / "w")


def test_jobs_validate_names_and_defaults(tmp_path):
    from plugin.core.detection.jobs import DetectObjectsJob, TrainObjectDetectionJob
    from plugin.core.params import param_fields

    names = {ps.name for _, ps in param_fields(TrainObjectDetectionJob)}
    assert {"PROJECT", "ARCHITECTURE", "PATCH_SIZE", "SPLIT", "EPOCHS", "BATCH_SIZE",
            "LEARNING_RATE", "PAD_SMALL_FEATURES", "AUGMENT_ROTATION", "AUGMENT_SCALE",
            "FEATURE_PATCH_PERCENTAGE", "BACKGROUND_PATCH_RATIO", "DEVICE", "OUTPUT_MODEL",
            "OUTPUT_LAST_MODEL"} <= names
    names = {ps.name for _, ps in param_fields(DetectObjectsJob)}
    assert {"INPUT", "MODEL", "OUTPUT", "SCORE_THRESHOLD", "NMS_IOU", "TILE_SIZE", "OVERLAP",
            "BATCH_SIZE", "DEVICE"} <= names
    job = TrainObjectDetectionJob()
    assert job.epochs == 30 and job.patch_size == 0 and job.architecture == "auto"
    bad = TrainObjectDetectionJob(project=str(tmp_path / "none.gpkg"), patch_size=100)
    text = " ".join(bad.problems())
    assert "does not exist" in text and "use 96" in text and "OUTPUT_MODEL" in text


def test_segmentation_model_given_to_detect_objects(tmp_path):
    """A pixel segmentation model given to Detect Objects names both tasks before any work."""
    from safetensors.numpy import save_file

    from plugin.core import modelfile
    from plugin.core.detection.jobs import DetectObjectsJob

    card = modelfile.make_card(task="pixel_segmentation",
                               classes=[{"id": 0, "name": "background", "color": "#000000"},
                                        {"id": 1, "name": "car", "color": "#e31a1c"}],
                               bands=3, mean=[1.0] * 3, std=[1.0] * 3, nodata=None,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631", architecture="unet",
                               encoder="resnet18", patch_size=64)
    fake = tmp_path / "seg.safetensors"
    save_file({"w": np.zeros(1, np.float32)}, str(fake),
              metadata={"format": modelfile.FORMAT, "format_version": "1",
                        "card": json.dumps(card)})
    scene = make_object_scene(tmp_path / "s", size=64, n_objects=0)
    job = DetectObjectsJob(input=str(scene.raster), model=str(fake),
                           output=str(tmp_path / "o.gpkg"))
    text = " ".join(job.problems())
    assert "(task 'pixel_segmentation'); this tool needs" in text


def test_module_paths_exist():
    assert Path("plugin/core/detection/jobs.py").is_file()


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_train_data_from_an_exported_chips_folder(tmp_path, fmt):
    """A COCO / YOLO chips folder from Export Training Chips gives the same boxes, with each
    chip in the split it was exported in."""
    from plugin.core.detection.data import prepare_detection_data
    from plugin.core.jobs import RecordingContext
    from plugin.core.sampling.jobs import ExportChipsJob

    scene = make_object_scene(tmp_path / "s", size=128, n_objects=6, seed=8)
    scene_project(scene, tmp_path / "p.gpkg")
    ExportChipsJob(project=str(tmp_path / "p.gpkg"), format=fmt, patch_size=64,
                   background_patch_ratio=1.0, output_folder=str(tmp_path / "chips")
                   ).run(RecordingContext())
    data = prepare_detection_data(_train_job(tmp_path, tmp_path / "chips", patch_size=64),
                                  RecordingContext(), tmp_path / "w")
    assert [c["name"] for c in data.classes] == ["car"]
    assert {s.role for s in data.sources} <= {"train", "validation"}
    assert sum(len(b) for b in data.boxes) >= 6          # objects cut by chips count twice
    assert data.plan.split("train")


def test_validation_ignores_objects_cut_by_the_patch_edge():
    """Validation follows Detect Objects: predictions touching the patch edge are dropped and
    truths cut by it are ignored (iscrowd), so neither counts."""
    import torch

    from plugin.core.detection.task import patch_edge_rule

    img = torch.zeros(3, 64, 64)
    pred = {"boxes": torch.tensor([[10.0, 10, 30, 30], [50, 0, 64, 20]]),
            "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}
    # the third truth is cut by the edge, the fourth lies whole 1 px from it: a good box of it
    # touches the edge (dropped), so it is ignored as well rather than counted as missed
    truth = {"boxes": torch.tensor([[10.0, 10, 30, 30], [50, 0, 64, 20], [0, 40, 12, 60],
                                    [34, 1, 62, 29]]),
             "labels": torch.tensor([1, 1, 1, 1])}
    p, t = patch_edge_rule([img], [pred], [truth])
    assert len(p[0]["boxes"]) == 1 and t[0]["iscrowd"].tolist() == [0, 1, 1, 1]
    m = DetectionMetrics([1], 0.3)
    m.update(p, t)
    r = m.compute()
    assert r["map50"] == pytest.approx(1.0) and r["recall"] == 1.0 and r["precision"] == 1.0


def test_one_object_boxed_twice_merges_but_neighbours_and_other_classes_do_not():
    """Boxes 0/1 (one object boxed a little differently by two tiles) and 2/3 (an object and a
    part of it in one tile: IoU 0.4, under the NMS IoU, but covering all of the part) merge
    into the better box; touching neighbours (4/5: 20 % of the smaller) and another class (6)
    stay."""
    from plugin.core.detection.predict import merge_boxed_twice

    boxes = np.array([[0.0, 0, 30, 30], [2, 2, 40, 36], [50, 0, 80, 30], [52, 0, 64, 30],
                      [100, 0, 130, 30], [124, 0, 154, 30], [50, 0, 80, 30]])
    scores = np.array([0.9, 0.8, 0.6, 0.7, 0.5, 0.4, 0.3])
    labels = np.array([1, 1, 1, 1, 1, 1, 2])
    assert sorted(merge_boxed_twice(boxes, scores, labels).tolist()) == [0, 3, 4, 5, 6]


def test_grid_model_cells_limit_the_tiles_searched_and_the_boxes_kept(tmp_path):
    """Optimized detection: with a grid model's cells (one 32 px cell flagged), only tiles
    holding that cell reach the detector and only boxes centred in it are kept."""
    import rasterio

    from plugin.core.gridfilter import CellFilter
    from plugin.core.tiling import tile_starts

    fixed = [(1, 20, 50, 52, 80), (1, 100, 100, 130, 130)]
    scene = make_object_scene(tmp_path, size=160, n_objects=4, seed=5, fixed=fixed)
    flagged = np.zeros((5, 5), bool)
    flagged[2, 1] = True                       # pixels rows 64–95, cols 32–63: the first object
    cells = CellFilter(flagged, 32, scene.height, scene.width)
    tile, overlap = 64, 40
    rows = tile_starts(scene.height, tile, tile - overlap)
    cols = tile_starts(scene.width, tile, tile - overlap)
    run = [(r, c) for r in rows for c in cols
           if r < 96 and r + tile > 64 and c < 64 and c + tile > 32]
    with rasterio.open(scene.raster) as src:
        found = detect_raster(src, Oracle(scene, run), [0, 0, 0], tile, overlap, batch=3,
                              cells=cells)
    assert found["tiles"] == len(rows) * len(cols) and found["tiles_run"] == len(run)
    assert 0 < len(run) < found["tiles"]
    centres = (found["boxes"][:, :2] + found["boxes"][:, 2:]) / 2
    assert len(centres) and ((centres // 32)[:, ::-1] == [2, 1]).all()
    expected = [b for b in scene.boxes if ((b[1] + b[3]) / 2 // 32, (b[2] + b[4]) / 2 // 32)
                == (1, 2)]
    boxes_map = to_map(found["boxes"], _scene_transform(scene))
    keep = merge_across_tiles(boxes_map, found["scores"], found["labels"], 0.5)
    assert len(keep) == len(expected)


def _scene_transform(scene):
    import rasterio

    with rasterio.open(scene.raster) as src:
        return src.transform
