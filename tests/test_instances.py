"""Instance segmentation (Mask R-CNN): synthetic scenes with exact polygons are learned through
the one training engine, Segment Objects writes one polygon per object (objects cut by tile
edges merged) with class, score, area and perimeter in the raster's CRS, point and line labels
are refused, and models of another family are refused by each tool.

The training and validation scenes lie side by side (different seeds): a project's labels are
map geometries, so overlapping scenes would label each other's raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plugin.core.errors import UserError
from plugin.core.instances.jobs import SegmentObjectsJob, TrainInstanceSegmentationJob
from plugin.core.instances.metrics import polygon_f1
from plugin.core.instances.synthetic import make_instance_scene, scene_project
from plugin.core.jobs import RecordingContext


class ColourSegmenter:
    """A stand-in for Mask R-CNN that knows the synthetic colours: each connected group of
    bright green pixels of a tile is one "crown" (class 1, score 0.9). Tests the tiling and the
    merge across tiles exactly, without training."""

    def __call__(self, batch: np.ndarray):
        from scipy.ndimage import label

        out = []
        for tile in batch:
            green = (tile[1] > 150) & (tile[0] < 120)
            parts, n = label(green)
            out.append([(1, 0.9, parts == k) for k in range(1, n + 1)])
        return out


def test_an_object_cut_by_tile_edges_comes_out_as_one_polygon(tmp_path):
    import rasterio
    from rasterio.features import rasterize

    from plugin.core.instances.predict import merge_across_tiles, segment_raster, to_map

    # tiles of 64 px overlapping by 16 (starts 0, 48, 96): a crown of radius 22 centred on
    # (56, 56) is cut by the edges of four tiles and lies whole in none
    scene = make_instance_scene(tmp_path, size=144, n_objects=6, seed=3, radii=(5, 8),
                                fixed=[(1, 56.0, 56.0, 22.0)])
    with rasterio.open(scene.raster) as src:
        found = segment_raster(src, ColourSegmenter(), [100.0] * 3, 64, 16, 4, 0.5)
        transform = src.transform
    pieces = [(c, s, to_map(p, transform), t) for c, s, p, t in found["objects"]]
    big = scene.map_polygon(scene.objects[0][1])
    assert sum(p[2].intersects(big) for p in pieces) >= 4          # it was cut into pieces
    merged = merge_across_tiles(pieces)
    assert len(merged) == len(scene.objects)
    for _, poly in scene.objects:   # each object once, exactly its painted pixels
        pixels = rasterize([(poly, 1)], out_shape=(scene.height, scene.width)).sum()
        hits = [g for _, _, g in merged if g.intersects(scene.map_polygon(poly))]
        assert len(hits) == 1 and hits[0].geom_type == "Polygon"
        assert hits[0].area == pytest.approx(pixels * 0.25)        # 0.5 m pixels


def test_a_mask_covering_most_of_a_better_one_of_its_class_in_a_tile_is_dropped():
    from plugin.core.instances.predict import suppress_overlaps

    whole = np.zeros((32, 32), bool)
    whole[4:20, 4:20] = True
    part = np.zeros_like(whole)
    part[4:12, 4:20] = True                    # the top half of the same object
    neighbour = np.zeros_like(whole)
    neighbour[4:20, 20:30] = True              # touching it: another object
    kept = suppress_overlaps([(1, 0.6, part), (1, 0.9, whole), (1, 0.8, neighbour),
                              (2, 0.5, part), (1, 0.95, np.zeros_like(whole))])
    assert [(c, s) for c, s, _ in kept] == [(1, 0.9), (1, 0.8), (2, 0.5)]


def test_point_and_line_labels_are_refused_naming_the_fix(tmp_path):
    scene = make_instance_scene(tmp_path, size=64, n_objects=2, seed=4)
    project = scene_project(scene, tmp_path / "p.gpkg")
    x, y = scene.transform * (10, 10)
    project.add_features([(1, {"type": "Point", "coordinates": [x, y]}),
                          (1, {"type": "LineString", "coordinates": [[x, y], [x + 5, y]]})])
    job = TrainInstanceSegmentationJob(project=str(project.path), patch_size=64, epochs=1,
                                       device="cpu", num_workers=0,
                                       output_model=str(tmp_path / "m.dltmodel.safetensors"))
    with pytest.raises(UserError, match=r"holds 1 point and 1 line label\(s\), which have no "
                                        r"outline") as caught:
        job.run(RecordingContext())
    assert "Draw the objects as polygons" in caught.value.fix
    assert not (tmp_path / "m.dltmodel.safetensors").exists()


def test_models_of_another_family_are_refused_by_each_tool(tmp_path):
    from plugin.core.segmentation.jobs import ClassifyPixelsJob
    from tests.family_models import tiny_model, write_raster

    raster = write_raster(tmp_path / "r.tif")
    instances = tiny_model("instance_segmentation", tmp_path)
    pixels = tiny_model("pixel_segmentation", tmp_path)
    classify = ClassifyPixelsJob(input=str(raster), model=str(instances),
                                 output=str(tmp_path / "c.tif"), device="cpu")
    with pytest.raises(UserError, match=r"trained for Instance Segmentation .*this tool needs "
                                        r"Pixel Segmentation"):
        classify.validate()
    segment = SegmentObjectsJob(input=str(raster), model=str(pixels),
                                output=str(tmp_path / "o.gpkg"), device="cpu")
    with pytest.raises(UserError, match=r"trained for Pixel Segmentation .*this tool needs "
                                        r"Instance Segmentation"):
        segment.validate()


def test_export_model_to_onnx_says_instance_models_do_not_export(tmp_path):
    from plugin.core.onnx_export import ExportOnnxJob
    from tests.family_models import tiny_model

    model = tiny_model("instance_segmentation", tmp_path)
    job = ExportOnnxJob(model=str(model), output=str(tmp_path / "m.onnx"))
    with pytest.raises(UserError, match="is an Instance Segmentation model, which cannot be "
                                        "exported to ONNX yet"):
        job.run(RecordingContext())
    assert not (tmp_path / "m.onnx").exists()


# -- learning -----------------------------------------------------------------------------------
PATCH = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A light Mask R-CNN trained on one synthetic raster, validated on another."""
    folder = tmp_path_factory.mktemp("instances")
    train = make_instance_scene(folder / "train", size=192, n_objects=20, seed=1)
    val = make_instance_scene(folder / "val", size=128, n_objects=10, seed=2)
    scene_project(train, folder / "p.gpkg", role="train")
    scene_project(val, folder / "p.gpkg", role="validation")
    job = TrainInstanceSegmentationJob(
        project=str(folder / "p.gpkg"), architecture="maskrcnn_resnet18", patch_size=PATCH,
        epochs=EPOCHS, steps_per_epoch=STEPS, batch_size=2, learning_rate=0.002,
        background_patch_ratio=0.0, device="cpu", num_workers=0,
        output_model=str(folder / "m.dltmodel.safetensors"))
    result = job.run(RecordingContext())
    return folder, job, result


EPOCHS, STEPS = 12, 25   # 300 steps of 2 patches: mask mAP50 1.0 from step 175 (seed 0, 102 s)


@pytest.mark.slow
def test_mask_rcnn_learns_exact_polygons_and_segment_objects_outlines_them(trained, tmp_path):
    import shapely
    from pyogrio.raw import read

    folder, job, result = trained
    assert result["metrics"]["val_mask_map50"] >= 0.9, result["metrics"]
    report = Path(result["report"]).read_text()
    assert "| crown |" in report and "mask mAP50" in report
    # an unseen raster: every object once, as one polygon with class, score, area, perimeter
    scene = make_instance_scene(tmp_path / "new", size=160, n_objects=12, seed=13)
    out = tmp_path / "objects.gpkg"
    res = SegmentObjectsJob(input=str(scene.raster), model=job.output_model, output=str(out),
                            device="cpu", simplify=0.0).run(RecordingContext())
    meta, _, wkb, fields = read(str(out), layer="objects")
    assert list(meta["fields"]) == ["class_id", "class_name", "score", "area_m2", "perimeter_m"]
    assert "32631" in meta["crs"] and res["objects"] == len(wkb)
    geoms = shapely.from_wkb(wkb)
    values = dict(zip(meta["fields"], fields))
    assert values["area_m2"] == pytest.approx([g.area for g in geoms])
    assert values["perimeter_m"] == pytest.approx([g.length for g in geoms])
    f1 = polygon_f1([(int(c), float(s), g) for c, s, g in zip(values["class_id"],
                                                               values["score"], geoms)],
                    [(c, scene.map_polygon(p)) for c, p in scene.objects])
    assert f1["f1"] >= 0.9, f1


def test_the_dialogs_output_layer_is_styled_by_class_id_in_the_model_colours(qgis_app,
                                                                             tmp_path):
    """What Segment Objects' dialog adds to the map when the job ends: the objects layer
    filled in each class's colour (the layer has ``class_id`` and ``class_name``)."""
    import shapely
    from qgis.core import QgsCategorizedSymbolRenderer, QgsProject

    from plugin.core.instances.predict import write_objects
    from plugin.gui.output_layers import add_class_layer

    out = tmp_path / "objects.gpkg"
    write_objects(out, [(1, 0.9, shapely.box(0, 0, 1, 1)), (2, 0.8, shapely.box(2, 0, 3, 1))],
                  {1: "crown", 2: "roof"}, "EPSG:32631", True)
    classes = [{"id": 1, "name": "crown", "color": "#33a02c"},
               {"id": 2, "name": "roof", "color": "#b15928"}]
    project = QgsProject()          # owns the layer
    layer = add_class_layer(str(out), classes, "objects", project, "objects")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "class_id"
    assert {c.value(): c.symbol().color().name() for c in renderer.categories()} == {
        1: "#33a02c", 2: "#b15928"}


def test_augmenting_a_patch_without_objects_keeps_it_empty():
    """A background patch (no masks) zoomed by the augmentation: found training a real scene
    (the zoom failed on zero masks)."""
    import numpy as np
    import torch

    from plugin.core.instances.data import MaskAugment

    augment = MaskAugment(rotation=True, scale=True, flip=True, scale_range=(1.5, 1.5))
    image = torch.rand(3, 64, 64)
    out, masks = augment(image, torch.zeros((0, 64, 64), dtype=torch.uint8),
                         np.random.default_rng(0), np.zeros(3, np.float32))
    assert out.shape == (3, 64, 64) and masks.shape == (0, 64, 64)
