"""Tiny random-weight models of every family and small rasters to apply them to, for the tests
that hold for all families (tests/test_family_rules.py).

``tiny_model(task, folder, **card_changes)`` writes a model file of the family ``task`` (a row
of ``plugin.core.families.FAMILIES``) with the family's own ``make_card`` and ``save_model``;
``write_raster`` writes a 64 × 64 px 3-band uint8 raster (0.5 m pixels, EPSG:32631) with a
nodata corner and its variants; ``apply_model`` runs the family's classify tool on a raster and
returns (result, log messages, vector output or None); ``train_job`` a one-epoch training job
of the family on ``rgba_project`` (pixel regression: with targets computed from its
rasters). A family added to the table needs one entry in
:data:`BUILDERS` and :data:`APPLY` and a branch in ``train_job``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plugin.core import modelfile
from plugin.core.jobs import RecordingContext

CLASSES = [{"id": 1, "name": "bright", "color": "#ff0000"},
           {"id": 2, "name": "dark", "color": "#0000ff"}]
COMMON = {"bands": 3, "mean": [100.0] * 3, "std": [50.0] * 3, "nodata": 0,
          "pixel_size": (0.5, 0.5), "crs": "EPSG:32631", "dtype": "uint8"}
SIZE, PIXEL, ORIGIN = 64, 0.5, (500_000.0, 5_000_000.0)   # px, m, UTM 31N (x, y)


def _segmentation():
    from plugin.core.segmentation.network import build_network

    card = modelfile.make_card(task="pixel_segmentation", architecture="unet",
                               encoder="resnet18",
                               classes=[{"id": 0, "name": "background", "color": "#000000"},
                                        *CLASSES], patch_size=64, **COMMON)
    return build_network("unet", "resnet18", 3, 3), card


def _detection():
    from plugin.core.detection.modelfile import make_card
    from plugin.core.detection.network import build_detector

    card = make_card(architecture="fcos_resnet18", classes=CLASSES, patch_size=64,
                     score_threshold=0.001, nms_iou=0.5, max_box_px=16, **COMMON)
    return build_detector("fcos_resnet18", 3, 3, 64, COMMON["mean"], COMMON["std"]), card


def _instances():
    from plugin.core.instances.modelfile import make_card
    from plugin.core.instances.network import build_mask_rcnn

    card = make_card(architecture="maskrcnn_resnet18", classes=CLASSES, patch_size=64,
                     score_threshold=0.001, nms_iou=0.5, max_box_px=16, **COMMON)
    return build_mask_rcnn("maskrcnn_resnet18", 3, 3, 64, COMMON["mean"], COMMON["std"]), card


def _classifier(task: str, fields: dict):
    from plugin.core.classification.network import build_classifier

    card = modelfile.make_card(task=task, classes=CLASSES, architecture="resnet18",
                               multi_label=task == "grid", thresholds=[0.5, 0.5], **fields,
                               **COMMON)
    return build_classifier("resnet18", 3, 2), card


def _regression():
    from plugin.core.smp_networks import build_network

    card = modelfile.make_card(task="pixel_regression", architecture="unet", encoder="resnet18",
                               classes=[{"id": 0, "name": "height", "color": "#1a9850"}],
                               patch_size=64, loss="huber",
                               target={"name": "height", "unit": "m", "mean": 5.0, "std": 2.0},
                               **COMMON)
    return build_network("unet", "resnet18", 3, 1), card


BUILDERS = {
    "pixel_segmentation": _segmentation,
    "pixel_regression": _regression,
    "object_detection": _detection,
    "instance_segmentation": _instances,
    "grid": lambda: _classifier("grid", {"grid_size": 32}),
    "chip_classification": lambda: _classifier(
        "chip_classification", {"max_side": 32, "resize": 0, "min_side": 0, "round": 1,
                                "box_size": 25.0}),
}


TASKS = tuple(BUILDERS)   # the families this module can build (tests check it is the table's)


def tiny_model(task: str, folder: Path, name: str = "m") -> Path:
    """A model file of family ``task`` with random weights (seed 0) in ``folder``."""
    import torch

    torch.manual_seed(0)
    network, card = BUILDERS[task]()
    path = Path(folder) / f"{name}.{task}.dltmodel.safetensors"
    modelfile.save_model(path, network, card)
    return path


def write_raster(path: Path, variant: str = "rgb") -> Path:
    """A 64 × 64 px raster of smooth random uint8 values 1–255 with a nodata corner (rows and
    cols < 12): ``rgb`` (3 bands, nodata 0 declared), ``rgba`` (the same 3 bands + an alpha band
    that is 0 on the corner, no nodata declared), ``uint16`` (values × 257), ``coarse`` (10 ×
    the pixel size) or ``epsg4326`` (the same pixels over the same ground, in degrees)."""
    import rasterio
    from rasterio.transform import from_bounds, from_origin

    rng = np.random.default_rng(3)
    base = rng.integers(1, 256, (3, SIZE // 8, SIZE // 8)).astype(np.uint8)
    data = np.kron(base, np.ones((8, 8), np.uint8))
    data[:, :12, :12] = 0
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32631", "nodata": 0,
               "transform": from_origin(*ORIGIN, PIXEL, PIXEL)}
    if variant == "rgba":
        alpha = np.where((data == 0).all(0), 0, 255).astype(np.uint8)[None]
        data = np.concatenate([data, alpha])
        profile.update(count=4, nodata=None)
    elif variant == "uint16":
        data = data.astype(np.uint16) * 257
        profile["dtype"] = "uint16"
    elif variant == "coarse":
        profile["transform"] = from_origin(*ORIGIN, 10 * PIXEL, 10 * PIXEL)
    elif variant == "epsg4326":
        from pyproj import Transformer

        tr = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
        x0, y1 = ORIGIN
        x1, y0 = x0 + SIZE * PIXEL, y1 - SIZE * PIXEL
        lon0, lat0 = tr.transform(x0, y0)
        lon1, lat1 = tr.transform(x1, y1)
        profile.update(crs="EPSG:4326", transform=from_bounds(lon0, lat0, lon1, lat1,
                                                               SIZE, SIZE))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if variant == "rgba":
            from rasterio.enums import ColorInterp

            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                               ColorInterp.alpha]
    return path


def write_features(path: Path, raster: Path) -> Path:
    """A GeoPackage of four 10 × 10 px squares on ``raster`` (in the raster's CRS)."""
    import rasterio
    import shapely
    from pyogrio.raw import write

    with rasterio.open(raster) as src:
        t, crs = src.transform, src.crs.to_wkt()
    squares = [shapely.Polygon([t * (c, r), t * (c + 10, r), t * (c + 10, r + 10),
                                t * (c, r + 10)])
               for r, c in ((16, 16), (16, 40), (40, 16), (40, 40))]
    write(str(path), shapely.to_wkb(np.array(squares, dtype=object)),
          [np.arange(4, dtype=np.int32)], ["n"], layer="features", driver="GPKG",
          geometry_type="Polygon", crs=crs)
    return path


def _classify_pixels(model, raster, out):
    from plugin.core.segmentation.jobs import ClassifyPixelsJob

    vec = out / "classes.gpkg"
    return ClassifyPixelsJob(input=str(raster), model=str(model), output=str(out / "c.tif"),
                             output_vector=str(vec), device="cpu", engine="torch",
                             tile_size=64), vec


def _detect_objects(model, raster, out):
    from plugin.core.detection.jobs import DetectObjectsJob

    vec = out / "boxes.gpkg"
    return DetectObjectsJob(input=str(raster), model=str(model), output=str(vec),
                            device="cpu", engine="torch", tile_size=64, overlap=32), vec


def _segment_objects(model, raster, out):
    from plugin.core.instances.jobs import SegmentObjectsJob

    vec = out / "objects.gpkg"
    return SegmentObjectsJob(input=str(raster), model=str(model), output=str(vec),
                             device="cpu", tile_size=64, overlap=32), vec


def _classify_grid(model, raster, out):
    from plugin.core.classification.jobs import ClassifyGridJob

    vec = out / "cells.gpkg"
    return ClassifyGridJob(input=str(raster), model=str(model), output=str(vec),
                           device="cpu"), vec


def _classify_chips(model, raster, out):
    from plugin.core.classification.jobs import ClassifyChipsJob

    features = write_features(out / "features.gpkg", raster)
    vec = out / "chips.gpkg"
    return ClassifyChipsJob(input=str(features), raster=str(raster), model=str(model),
                            output=str(vec), device="cpu"), vec


def _predict_values(model, raster, out):
    from plugin.core.regression.jobs import PredictValuesJob

    values = out / "values.tif"
    return PredictValuesJob(input=str(raster), model=str(model), output=str(values),
                            device="cpu", engine="torch", tile_size=64), values


APPLY = {"pixel_segmentation": _classify_pixels, "object_detection": _detect_objects,
         "instance_segmentation": _segment_objects, "grid": _classify_grid,
         "chip_classification": _classify_chips,
         "pixel_regression": _predict_values}


def classify_job(task: str, model: Path, raster: Path, out: Path):
    """(the family's classify job on ``raster``, its vector output path; Predict Values: its
    value raster)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return APPLY[task](model, raster, out)


def apply_model(task: str, model: Path, raster: Path, out: Path):
    """Run the family's classify tool: (result, RecordingContext, vector output)."""
    job, vec = classify_job(task, model, raster, out)
    ctx = RecordingContext()
    return job.run(ctx), ctx, vec


def warnings(ctx: RecordingContext) -> list[str]:
    """The warning messages a job logged."""
    return [e["message"] for e in ctx.events
            if e.get("event") == "log" and e.get("level") == "warning"]


def rgba_project(folder: Path) -> Path:
    """A labeling project (synthetic grid scene: 4 × 4 cells of 32 px, a training and a
    validation raster, buildings and water) whose rasters carry an alpha band (0 on the last
    cell row, 255 elsewhere); returns the project path."""
    import rasterio
    from rasterio.enums import ColorInterp

    from plugin.core.classification.synthetic import make_grid_scene

    scene = make_grid_scene(folder, cells=4, cell=32, rasters=2, seed=1)
    for raster in sorted(Path(folder).rglob("*.tif")):
        with rasterio.open(raster) as src:
            if src.count != 3:
                continue
            profile, data = src.profile, src.read()
        alpha = np.full((1, *data.shape[1:]), 255, np.uint8)
        alpha[:, -32:] = 0
        profile.update(count=4, nodata=None)
        with rasterio.open(raster, "w", **profile) as dst:
            dst.write(np.concatenate([data, alpha]))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                               ColorInterp.alpha]
    return scene.project


def train_job(task: str, project: Path, model: Path):
    """The family's training job on ``project``: one epoch of very few optimiser steps."""
    from plugin.core.classification.jobs import TrainChipClassifierJob, TrainGridModelJob
    from plugin.core.detection.jobs import TrainObjectDetectionJob
    from plugin.core.instances.jobs import TrainInstanceSegmentationJob
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    common = {"epochs": 1, "device": "cpu", "num_workers": 0, "output_model": str(model)}
    if task == "pixel_segmentation":
        return TrainPixelSegmentationJob(project=str(project), patch_size=32, steps_per_epoch=2,
                                         batch_size=2, **common)
    if task == "object_detection":
        return TrainObjectDetectionJob(project=str(project), patch_size=64, steps_per_epoch=2,
                                       batch_size=2, architecture="fcos_resnet18", **common)
    if task == "instance_segmentation":
        return TrainInstanceSegmentationJob(project=str(project), patch_size=64,
                                            steps_per_epoch=2, batch_size=2,
                                            architecture="maskrcnn_resnet18", **common)
    if task == "pixel_regression":
        from plugin.core.labeling.project import LabelingProject
        from plugin.core.regression.jobs import TrainPixelRegressionJob
        from plugin.core.regression.synthetic import band_target

        targets = [str(band_target(r.path, Path(model).parent / f"target_{r.id}.tif"))
                   for r in LabelingProject.open(project).rasters()]
        return TrainPixelRegressionJob(project=str(project), targets=targets, patch_size=32,
                                       steps_per_epoch=2, batch_size=2, **common)
    if task == "grid":
        return TrainGridModelJob(project=str(project), grid_size=32, batch_size=16,
                                 steps_per_epoch=2, architecture="resnet18", **common)
    return TrainChipClassifierJob(input=str(project), batch_size=16, test_size=0,
                                  train_size=32, architecture="resnet18", **common)
