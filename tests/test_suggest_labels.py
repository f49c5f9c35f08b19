"""Suggest Areas to Label: for every family that suggests, ranked windows outside labels and
validation areas, none overlapping another, written into the project without losing the user's
done and skipped suggestions; bad input gets one clear message."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from plugin.core import job_catalog, modelfile  # noqa: F401  (registers every job class)
from plugin.core.errors import UserError
from plugin.core.families import FAMILIES
from plugin.core.jobs import RecordingContext
from plugin.core.labeling.project import LabelingProject
from plugin.core.suggest_labels import (
    LAYER,
    SuggestLabelsJob,
    Window,
    pick_diverse,
    read_suggestions,
)
from plugin.core.vector_output import has_layer
from tests.family_models import BUILDERS, ORIGIN, PIXEL

SUGGESTING = [f for f in FAMILIES if f.suggests and f.task in BUILDERS]
SIZE = 256


def _raster(path, seed: int, x0: float = ORIGIN[0]):
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = np.kron(rng.integers(1, 256, (3, SIZE // 8, SIZE // 8)).astype(np.uint8),
                   np.ones((8, 8), np.uint8))
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3,
                       dtype="uint8", crs="EPSG:32631", nodata=0,
                       transform=from_origin(x0, ORIGIN[1], PIXEL, PIXEL)) as dst:
        dst.write(data)
    return str(path)


def _box(col0, row0, col1, row1, x0=ORIGIN[0]):
    """A polygon over pixel columns/rows of the rasters (map coordinates)."""
    return shapely.box(x0 + col0 * PIXEL, ORIGIN[1] - row1 * PIXEL, x0 + col1 * PIXEL,
                       ORIGIN[1] - row0 * PIXEL)


@pytest.fixture
def project(tmp_path):
    """A project with a train raster (a label over its top-left 100 px), an auto raster beside
    it and a validation raster further east."""
    p = LabelingProject.create(tmp_path / "labels.gpkg", "EPSG:32631")
    p.add_class("bright", "#ff0000")
    p.add_class("dark", "#0000ff")
    east = ORIGIN[0] + SIZE * PIXEL
    p.add_raster(_raster(tmp_path / "a.tif", 1), role="train")
    p.add_raster(_raster(tmp_path / "b.tif", 2, east), role="auto")
    p.add_raster(_raster(tmp_path / "v.tif", 3, east + SIZE * PIXEL), role="validation")
    p.add_features([(1, shapely.geometry.mapping(_box(0, 0, 100, 100)))])
    return p


def _model(task, folder, validation_areas=None):
    import torch

    torch.manual_seed(0)
    network, card = BUILDERS[task]()
    if validation_areas:
        card["validation_areas"] = validation_areas
    path = folder / f"{task}.dltmodel.safetensors"
    modelfile.save_model(path, network, card)
    return path


@pytest.mark.parametrize("family", SUGGESTING, ids=lambda f: f.task)
def test_suggestions_are_ranked_outside_labels_and_validation_and_never_touch(
        family, project, tmp_path):
    east = ORIGIN[0] + SIZE * PIXEL
    held_out = _box(128, 128, 256, 256, east)   # a validation area the model file records
    model = _model(family.task, tmp_path,
                   {str(tmp_path / "b.tif"): [list(held_out.bounds)]})
    job = SuggestLabelsJob(project=str(project.path), model=str(model), count=4, device="cpu")
    assert job.problems() == [] and not has_layer(project.path, LAYER)

    result = job.run(RecordingContext())

    assert has_layer(project.path, LAYER)   # what the Labeling Tool asks before loading it
    rows = read_suggestions(str(project.path))
    assert result["suggestions"] == len(rows) == 4
    assert [int(r["rank"]) for r in rows] == list(range(1, 5))
    scores = [float(r["score"]) for r in rows]
    assert scores[0] == max(scores) and all(0 <= s <= 1 for s in scores)
    label = _box(0, 0, 100, 100)
    boxes = [shapely.box(*r["bounds"]) for r in rows]
    for r, b in zip(rows, boxes):
        assert r["status"] == "open" and r["reason"] and r["raster"] != str(tmp_path / "v.tif")
        assert not b.intersects(label)                  # never on what is labelled
        assert b.intersection(held_out).area == 0       # never in a validation area
        assert b.bounds[2] <= east + SIZE * PIXEL       # never on the validation raster
    for i, a in enumerate(boxes):                       # diverse: no two overlap
        assert all(a.intersection(b).area == 0 for b in boxes[i + 1:])
    assert {r["raster"] for r in rows} == {str(tmp_path / "a.tif"), str(tmp_path / "b.tif")}


def test_a_new_run_keeps_done_and_skipped_suggestions_and_avoids_skipped_places(project,
                                                                                tmp_path):
    from plugin.core.suggest_labels import write_suggestions

    model = _model("pixel_segmentation", tmp_path)
    job = SuggestLabelsJob(project=str(project.path), model=str(model), count=4, device="cpu")
    job.run(RecordingContext())
    rows = read_suggestions(str(project.path))
    rows[0]["status"], rows[1]["status"] = "done", "skipped"
    write_suggestions(str(project.path), project.crs, rows, [])
    skipped = shapely.box(*rows[1]["bounds"])

    job.run(RecordingContext())

    again = read_suggestions(str(project.path))
    statuses = [r["status"] for r in again]
    assert statuses.count("done") == 1 and statuses.count("skipped") == 1
    assert statuses.count("open") == 4
    for r in again:
        if r["status"] == "open":
            assert not shapely.box(*r["bounds"]).intersects(skipped.buffer(-0.01))
    # the labels are untouched
    assert len(LabelingProject.open(project.path).features()) == 1


def _window(raster, row, col, score, size=10):
    """A scored window of ``size`` px at pixel ``row``/``col``; rasters 1000 px apart."""
    x, y = raster * 1000 + col, -row
    return Window(raster, row, col, size, (x, y - size, x + size, y), score)


def test_pick_diverse_spreads_over_rasters_and_weighs_neighbours_down():
    w = [_window(0, 0, 0, 0.9), _window(0, 10, 0, 0.89), _window(0, 40, 40, 0.7),
         _window(1, 0, 0, 0.6), _window(0, 5, 0, 0.95 * 0.9), _window(0, 80, 80, -1.0)]
    picked = pick_diverse(w, 3)
    # the window overlapping the best (row 5) is out; raster 1 wins over a second pick in
    # raster 0 once the spread weight applies (0.7 × 0.8 = 0.56 < 0.6); the neighbour sharing
    # an edge with the best (row 10) is weighed down (0.89 × 0.5 × 0.8² = 0.28) but not out
    assert [(p.raster, p.row) for p in picked] == [(0, 0), (1, 0), (0, 40)]
    assert (0, 10) in [(p.raster, p.row) for p in pick_diverse(w, 5)]
    assert all(p.score >= 0 for p in pick_diverse(w, 5))    # nodata (−1) never comes


def test_every_fourth_pick_is_random_among_the_windows_left_and_follows_the_seed():
    # one raster, a 10 × 10 grid of windows with distinct scores, one class
    w = [_window(0, 10 * r, 10 * c, 1 - (10 * r + c) / 100) for r in range(10)
         for c in range(10)]
    runs = {seed: pick_diverse([Window(**vars(x)) for x in w], 8, seed) for seed in range(6)}
    for picked in runs.values():
        explored = [k for k, p in enumerate(picked) if p.reason.startswith("picked at random")]
        assert explored == [3, 7]
        assert len({(p.row, p.col) for p in picked}) == 8
        # the others are the greedy picks: the same whatever the seed
        assert [(p.row, p.col) for k, p in enumerate(picked[:3])] == \
            [(p.row, p.col) for p in runs[0][:3]]
    assert len({(p[3].row, p[3].col) for p in runs.values()}) > 1    # the seed picks
    again = pick_diverse([Window(**vars(x)) for x in w], 8, 2)
    assert [(p.row, p.col) for p in again] == [(p.row, p.col) for p in runs[2]]


def test_a_window_scores_the_mean_entropy_of_its_least_sure_quarter():
    import torch

    from plugin.core.segmentation import suggest

    # two windows of 8 × 8 px, two classes: A is sure everywhere but a 4 × 4 corner (a quarter)
    # where the model hesitates (p = 0.6); B is mildly unsure everywhere (p = 0.8)
    p = torch.zeros(2, 2, 8, 8)
    p[:, 0] = 1.0
    p[0, 0, :4, :4] = 0.6
    p[1, 0] = 0.8
    p[:, 1] = 1 - p[:, 0]
    card = {"classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    scores, classes, reasons = suggest.uncertainty(lambda x: p, card, np.zeros((2, 3, 8, 8),
                                                   np.float32), np.ones((2, 8, 8), bool), "cpu")
    def h(q):                                                      # bits per pixel
        return -(q * np.log(q) + (1 - q) * np.log(1 - q)) / np.log(2)

    # A: 0.97 on its unsure quarter (its mean, 0.24, would rank it below B's 0.72)
    assert scores == pytest.approx([h(0.6), h(0.8)], abs=1e-5)
    assert list(classes) == [1, 1] and "between a and b" in reasons[0]
    # invalid pixels do not count: with only a sure corner of A valid, A scores 0
    valid = np.zeros((2, 8, 8), bool)
    valid[:, 4:, 4:] = True
    scores, _, _ = suggest.uncertainty(lambda x: p, card, np.zeros((2, 3, 8, 8), np.float32),
                                       valid, "cpu")
    assert scores == pytest.approx([0.0, h(0.8)], abs=1e-5)
    assert suggest.top_share_floor(np.arange(8.0), 0.25) == 6.0       # the two largest
    assert suggest.top_share_floor(np.arange(8.0), 1.0) == 0.0


def test_bad_input_gets_one_clear_message(project, tmp_path):
    (tmp_path / "notes.gpkg").write_text("not a GeoPackage")
    assert not has_layer(tmp_path / "missing.gpkg", LAYER)
    assert not has_layer(tmp_path / "notes.gpkg", LAYER)
    model = _model("pixel_segmentation", tmp_path)
    assert any("PROJECT" in p for p in SuggestLabelsJob(model=str(model)).problems())
    assert any("MODEL" in p for p in SuggestLabelsJob(project=str(project.path)).problems())
    only_validation = LabelingProject.create(tmp_path / "v.gpkg", "EPSG:32631")
    only_validation.add_class("x")
    only_validation.add_raster(str(tmp_path / "v.tif"), role="validation")
    with pytest.raises(UserError, match="no raster to search"):
        SuggestLabelsJob(project=str(only_validation.path), model=str(model)).run(
            RecordingContext())
    four_band = modelfile.read_model_card(model)
    network, card = BUILDERS["pixel_segmentation"]()
    card["bands"], card["mean"], card["std"] = 4, [100.0] * 4, [50.0] * 4
    assert four_band["bands"] == 3
    from plugin.core.segmentation.network import build_network

    other = tmp_path / "four.dltmodel.safetensors"
    modelfile.save_model(other, build_network("unet", "resnet18", 4, 3), card)
    with pytest.raises(UserError, match="band"):
        SuggestLabelsJob(project=str(project.path), model=str(other)).run(RecordingContext())
    assert LAYER not in {n for n, _ in __import__("pyogrio").list_layers(str(project.path))}


def test_a_trained_model_records_its_validation_areas_and_suggestions_keep_out(tmp_path):
    """One 'auto' raster split by patches: the card lists the validation patches' bounds, and
    no suggestion of that model touches them (validation figures stay honest)."""
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    p = LabelingProject.create(tmp_path / "one.gpkg", "EPSG:32631")
    p.add_class("bright", "#ff0000")
    raster = _raster(tmp_path / "a.tif", 4)
    p.add_raster(raster)
    p.add_features([(1, shapely.geometry.mapping(_box(r, c, r + 20, c + 20)))
                    for r in (10, 140) for c in (10, 140)])
    job = TrainPixelSegmentationJob(
        project=str(p.path), architecture="unet", encoder="resnet18", patch_size=64, epochs=1,
        steps_per_epoch=2, batch_size=2, split=50, background_patch_ratio=1.0, num_workers=0,
        device="cpu", output_model=str(tmp_path / "m.dltmodel.safetensors"))
    job.run(RecordingContext())
    areas = modelfile.read_model_card(job.output_model)["validation_areas"][raster]
    assert areas
    inside = shapely.box(ORIGIN[0], ORIGIN[1] - SIZE * PIXEL, ORIGIN[0] + SIZE * PIXEL, ORIGIN[1])
    held_out = shapely.union_all([shapely.box(*b) for b in areas])
    assert inside.contains(held_out)

    SuggestLabelsJob(project=str(p.path), model=job.output_model, count=10,
                     device="cpu").run(RecordingContext())

    rows = read_suggestions(str(p.path))
    assert rows
    for r in rows:
        assert shapely.box(*r["bounds"]).intersection(held_out).area == 0
