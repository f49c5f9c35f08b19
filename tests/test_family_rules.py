"""Rules every model family obeys, checked for each row of the family table (a new row gets the
checks for free once tests/family_models.py can build a tiny model of it): the raster input
check, areas in m², model-card validation, the training length shown in optimiser steps, and
Classify Chips on a layer off the raster."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.errors import UserError
from plugin.core.families import FAMILIES
from tests.family_models import (
    TASKS,
    apply_model,
    rgba_project,
    tiny_model,
    train_job,
    warnings,
    write_raster,
)

FAMILY_TASKS = [f.task for f in FAMILIES]


def test_every_family_has_a_tiny_model():
    assert sorted(FAMILY_TASKS) == sorted(TASKS)


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("family_models")
    return {task: tiny_model(task, folder) for task in FAMILY_TASKS}


# -- 1. raster input ----------------------------------------------------------------------------
def _outputs(path) -> list[tuple]:
    """Every field of every feature of a vector output, rounded (float noise aside); a value
    raster's values (and its nodata pixels)."""
    from pyogrio.raw import read

    if str(path).endswith(".tif"):
        import rasterio

        with rasterio.open(path) as ds:
            return [tuple(np.round(ds.read(1).astype(float), 4).ravel())]

    meta, _, geoms, fields = read(str(path))
    columns = [np.round(f.astype(float), 5) if f.dtype.kind == "f" else f for f in fields]
    return sorted(zip(*(list(c) for c in columns), list(geoms)))


@pytest.mark.parametrize("task", FAMILY_TASKS)
def test_an_rgba_raster_classifies_as_its_rgb_copy_with_alpha_as_nodata(task, models,
                                                                         tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", "rgb")
    rgba = write_raster(tmp_path / "rgba.tif", "rgba")
    _, ctx_rgb, out_rgb = apply_model(task, models[task], rgb, tmp_path / "a")
    _, ctx_rgba, out_rgba = apply_model(task, models[task], rgba, tmp_path / "b")
    first, second = _outputs(out_rgb), _outputs(out_rgba)
    assert first and first == second
    assert warnings(ctx_rgb) == warnings(ctx_rgba) == []


MESSAGES = {
    "uint16": (UserError, r"input raster is uint16 with values up to 6\d+ .*, above the "
                          r"model's uint8 training data"),
    "coarse": ("warning", r"input pixel size \(5 m\) is far from the training pixel size "
                          r"\(0\.5 m\)"),
    "epsg4326": ("warning", r"CRS is WGS 84 \(geographic, degrees\) but the model was trained "
                            r"on rasters in WGS 84 / UTM zone 31N \(projected\)\. Reproject "
                            r"the raster to EPSG:32631"),
}


@pytest.mark.parametrize("variant", sorted(MESSAGES))
@pytest.mark.parametrize("task", FAMILY_TASKS)
def test_a_raster_unlike_the_training_rasters_gets_the_same_message_in_every_family(
        task, variant, models, tmp_path):
    import re

    raster = write_raster(tmp_path / f"{variant}.tif", variant)
    kind, pattern = MESSAGES[variant]
    if kind is UserError:
        with pytest.raises(UserError, match=pattern):
            apply_model(task, models[task], raster, tmp_path / "out")
        return
    _, ctx, _ = apply_model(task, models[task], raster, tmp_path / "out")
    assert [m for m in warnings(ctx) if re.search(pattern, m)], warnings(ctx)
    if variant == "epsg4326":   # the same ground: its pixel size in metres is the training one
        assert not [m for m in warnings(ctx) if "pixel size" in m]


# -- 2. areas -----------------------------------------------------------------------------------
#: the area field of each family's vector output; Classify Chips writes a copy of the user's
#: layer (its features, their fields and the predictions), without areas of its own
AREA_FIELDS = {"pixel_segmentation": "area", "object_detection": "area_m2", "grid": "area_m2",
               "instance_segmentation": "area_m2", "chip_classification": None,
               "pixel_regression": None}


@pytest.mark.parametrize("task", FAMILY_TASKS)
def test_vector_outputs_in_a_geographic_crs_report_geodesic_areas_in_m2(task, models,
                                                                        tmp_path):
    import shapely
    from pyogrio.raw import read
    from pyproj import Geod

    field = AREA_FIELDS[task]
    if field is None:
        pytest.skip("no areas of its own: a copy of the user's layer, or a value raster")
    raster = write_raster(tmp_path / "wgs84.tif", "epsg4326")
    _, _, vector = apply_model(task, models[task], raster, tmp_path / "out")
    meta, _, wkb, fields = read(str(vector))
    assert "EPSG:4326" in str(meta["crs"]) and len(wkb)
    given = fields[list(meta["fields"]).index(field)]
    geod = Geod(ellps="WGS84")
    expected = [abs(geod.geometry_area_perimeter(g)[0]) for g in shapely.from_wkb(wkb)]
    # abs: geodesic areas of many-cornered polygons of ~1 m² carry ~1e-5 m² of rounding
    # (sums of terms of the size of the ellipsoid's area), which the ellipsoid's spelling moves
    assert given == pytest.approx(expected, rel=1e-6, abs=1e-4)
    # the raster covers 32 m × 32 m of ground: the areas are m², not square degrees
    assert 0 < max(given) <= 32 * 32 * 1.01


# -- 1 and 4. training: data bands only, the length in optimiser steps ---------------------------
@pytest.fixture(scope="module")
def rgba_labels(tmp_path_factory):
    return rgba_project(tmp_path_factory.mktemp("rgba_project"))


@pytest.mark.parametrize("task", FAMILY_TASKS)
def test_training_on_rgba_rasters_reads_data_bands_and_shows_its_length_in_steps(
        task, rgba_labels, tmp_path):
    import re

    from plugin.core import modelfile
    from plugin.core.jobs import RecordingContext
    from plugin.core.training.length import MIN_STEPS

    model = tmp_path / "m.dltmodel.safetensors"
    job = train_job(task, rgba_labels, model)
    assert job.problems() == []
    ctx = RecordingContext()
    result = job.run(ctx)
    assert modelfile.read_model_card(model, task)["bands"] == 3     # alpha is a mask
    logs = [e["message"] for e in ctx.events if e.get("event") == "log"]
    shown = [m for m in logs if m.startswith("Training length:")]
    assert len(shown) == 1, logs
    total, epochs, batches = map(int, re.match(
        r"Training length: (\d+) optimiser steps? \((\d+) epochs? × (\d+) batch", shown[0]
    ).groups())
    assert total == epochs * batches == result["steps"] and epochs == 1
    assert total < MIN_STEPS
    assert [m for m in warnings(ctx) if m.startswith(f"Only {total} training steps")]
    # shown before the first step
    events = ctx.events
    first_step = next(i for i, e in enumerate(events) if e.get("phase") == "batch")
    assert events.index({"event": "log", "level": "info", "message": shown[0]}) < first_step


# -- 3. model cards -----------------------------------------------------------------------------
def _edit_card(path, out, edit):
    """A copy of the model file ``path`` at ``out`` with its card changed by ``edit(card)``."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    card = json.loads(meta["card"])
    edit(card)
    save_file(tensors, str(out), metadata={**meta, "card": json.dumps(card)})
    return out


def _drop_last_class(card):
    card["classes"] = card["classes"][:-1]
    if card.get("thresholds"):
        card["thresholds"] = card["thresholds"][:-1]


def _drop_first_class(card):
    card["classes"] = [c for c in card["classes"] if c["id"] != 1]
    if card.get("thresholds"):
        card["thresholds"] = card["thresholds"][1:]


def _set(**values):
    return lambda card: card.update(values)


#: another architecture the family knows: the card no longer fits the network's tensors
OTHER_ARCHITECTURE = {"pixel_segmentation": "deeplabv3plus", "object_detection": "retinanet",
                      "instance_segmentation": "maskrcnn", "grid": "resnet34",
                      "chip_classification": "resnet34",
                      "pixel_regression": "deeplabv3plus"}
EDITS = {
    "unknown architecture": lambda task: _set(architecture="vgg99"),
    "another architecture": lambda task: _set(architecture=OTHER_ARCHITECTURE[task]),
    "last class removed": lambda task: _drop_last_class,
    "first class removed": lambda task: _drop_first_class,
    "thresholds of the wrong length": lambda task: _set(
        thresholds=[0.5], score_threshold=[0.3, 0.3], nms_iou=[0.5]),
    "thresholds out of range": lambda task: _set(
        thresholds=[1.5, 0.5], score_threshold=2.0, nms_iou=-1.0),
    "grid size and sides not numbers": lambda task: _set(
        grid_size="big", max_side=None, patch_size="x"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("task", FAMILY_TASKS)
def test_an_edited_model_card_is_a_clear_error_in_every_family(task, edit, models, tmp_path):
    from plugin.core.jobs import RecordingContext
    from tests.family_models import classify_job

    if task in ("pixel_segmentation", "pixel_regression") and edit.startswith("thresholds"):
        pytest.skip("a pixel segmentation or regression card has no thresholds")
    if task == "pixel_regression" and edit == "first class removed":
        pytest.skip("a regression card names one output, id 0 (its target)")
    if edit == "first class removed" and task in ("pixel_segmentation", "object_detection",
                                                  "instance_segmentation"):
        pytest.skip("an unnamed id below the highest is a gap the card cannot tell from a "
                    "removed class (see test_detections_of_an_output_without_a_class_...)")
    model = _edit_card(models[task], tmp_path / "edited.dltmodel.safetensors",
                       EDITS[edit](task))
    raster = write_raster(tmp_path / "rgb.tif")
    job, _ = classify_job(task, model, raster, tmp_path / "out")
    with pytest.raises(UserError, match="[Mm]odel") as caught:
        job.run(RecordingContext())
    assert not any(word in str(caught.value)
                   for word in ("state_dict", "IndexError", "size mismatch"))


# -- 5. Classify Chips with a layer off the raster ----------------------------------------------
def test_classify_chips_refuses_a_layer_that_does_not_overlap_the_raster(models, tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from plugin.core.classification.jobs import ClassifyChipsJob
    from plugin.core.jobs import RecordingContext
    from tests.family_models import write_features

    here = write_raster(tmp_path / "here.tif")
    features = write_features(tmp_path / "features.gpkg", here)
    elsewhere = write_raster(tmp_path / "elsewhere.tif")
    with rasterio.open(elsewhere, "r+") as ds:    # moved 10 km east: no feature lies on it
        ds.transform = from_origin(510_000.0, 5_000_000.0, 0.5, 0.5)
    out = tmp_path / "chips.gpkg"
    job = ClassifyChipsJob(input=str(features), raster=str(elsewhere),
                           model=str(models["chip_classification"]), output=str(out),
                           device="cpu")
    with pytest.raises(UserError, match=r"None of the 4 features of features\.gpkg lies on the "
                                        r"raster elsewhere\.tif"):
        job.run(RecordingContext())
    assert not out.exists()


def test_detections_of_an_output_without_a_class_are_dropped_with_a_warning(models, tmp_path):
    from pyogrio.raw import read

    model = _edit_card(models["object_detection"], tmp_path / "edited.dltmodel.safetensors",
                       _drop_first_class)
    raster = write_raster(tmp_path / "rgb.tif")
    _, ctx, vector = apply_model("object_detection", model, raster, tmp_path / "out")
    _, _, _, fields = read(str(vector))
    assert set(fields[0].tolist()) == {2} and set(fields[1].tolist()) == {"dark"}
    assert [m for m in warnings(ctx) if "output id(s) [1], for which the model card names no "
            "class, were dropped" in m]
