"""Detection learns from random windows drawn every epoch (issue 19): windows centred on objects
hold them whole, validation areas are never drawn (and masked where a window cannot avoid
them), the training length is automatic in optimiser steps, the patch size follows the objects
and ``auto`` trains the light FCOS on a CPU."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from plugin.core.detection.data import (
    CUT_IGNORE,
    OBJECTS_ACROSS,
    BoxDataset,
    auto_patch_size,
    blank_cut_objects,
    patch_boxes,
)
from plugin.core.detection.jobs import DetectionSummaryJob, TrainObjectDetectionJob
from plugin.core.detection.modelfile import resolve_architecture
from plugin.core.detection.synthetic import make_object_scene, scene_project
from plugin.core.jobs import RecordingContext
from plugin.core.sampling import Patch, SampleSource
from plugin.core.sampling.boxes import Box
from plugin.core.sampling.windows import ObjectWindowSampler, centred_share, overlaps

# sparse objects (class, x0, y0, x1, y1) on a 600 × 400 px raster: 0.8 % of its area
OBJECTS = np.array([[1, 40, 50, 70, 80], [1, 500, 300, 540, 330], [2, 300, 20, 320, 44]],
                   np.float64)
SHAPES = {0: (400, 600)}


def _contains(w: Patch, obj) -> bool:
    _, x0, y0, x1, y1 = obj
    return w.col <= x0 and w.row <= y0 and x1 <= w.col + w.size and y1 <= w.row + w.size


def test_centred_windows_hold_their_object_whole_inside_the_raster():
    sampler = ObjectWindowSampler.from_boxes(96, SHAPES, {0: OBJECTS})
    area = 600 * 400
    covered = 30 * 30 + 40 * 30 + 20 * 24
    assert sampler.centred == pytest.approx(centred_share(covered, area))
    assert sampler.centred == pytest.approx(0.5 - covered / area)    # sparse: about half
    windows = dataclasses.replace(sampler, centred=1.0).draw(300, np.random.default_rng(1))
    assert all(w.has_features and w.size == 96 for w in windows)
    assert all(0 <= w.row <= 400 - 96 and 0 <= w.col <= 600 - 96 for w in windows)
    assert all(any(_contains(w, o) for o in OBJECTS) for w in windows)
    held = [sum(_contains(w, o) for w in windows) for o in OBJECTS]
    assert min(held) > 50                         # every object drawn (1/3 each expected)
    # random windows mostly miss such sparse objects
    rand = dataclasses.replace(sampler, centred=0.0).draw(300, np.random.default_rng(1))
    assert sum(any(_contains(w, o) for o in OBJECTS) for w in rand) < 150
    # a fresh draw each epoch
    a = sampler.draw(20, np.random.default_rng([0, 1]))
    b = sampler.draw(20, np.random.default_rng([0, 2]))
    assert [w.key for w in a] != [w.key for w in b]


def test_background_patch_ratio_caps_windows_without_objects():
    """ENVI's background patch ratio: 0 → every window holds an object's centre; 1 → at most
    half the windows hold none (random windows over such sparse objects mostly hold none)."""
    sampler = dataclasses.replace(ObjectWindowSampler.from_boxes(96, SHAPES, {0: OBJECTS}),
                                  centred=0.0)
    rng = np.random.default_rng(5)
    assert sum(map(sampler.holds_object, sampler.draw(200, rng))) < 100
    none = dataclasses.replace(sampler, background_ratio=0.0).draw(200, rng)
    assert all(map(sampler.holds_object, none))
    even = dataclasses.replace(sampler, background_ratio=1.0).draw(200, rng)
    assert 100 <= sum(map(sampler.holds_object, even)) < 200


def test_validation_areas_never_in_training_windows():
    hidden = {0: [(0, 0, 200, 200), (250, 400, 400, 600)]}      # hides objects 1 and 2
    sampler = ObjectWindowSampler.from_boxes(96, SHAPES, {0: OBJECTS}, hidden)
    assert sampler.objects[:, 1].tolist() == [2.0]               # only the free object centred
    windows = sampler.draw(500, np.random.default_rng(3))
    assert not any(overlaps((w.row, w.col, w.row + 96, w.col + 96), hidden[0]) for w in windows)
    assert sum(w.has_features for w in windows) > 100


def test_hidden_pixels_and_boxes_masked_where_a_window_meets_them(tmp_path):
    """A window that could not avoid a validation area shows it as the band means, no box."""
    import rasterio

    path = tmp_path / "img.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="float32") as ds:
        ds.write(np.full((1, 64, 64), 7.0, np.float32))
    boxes = [Box(1, 1, 4, 4, 20, 20), Box(2, 1, 40, 40, 60, 60)]
    ds = BoxDataset([SampleSource(str(path), "", "train", "a")], [boxes],
                    [Patch(0, 0, 0, 64, "train", True, {}, 0.0)], [3.0],
                    hidden={0: [(32, 32, 64, 64)]})
    image, target = ds[0]
    assert image[0, 32:, 32:].eq(3.0).all() and image[0, :32].eq(7.0).all()
    assert target["boxes"].tolist() == [[4.0, 4.0, 20.0, 20.0]]


def test_objects_cut_below_half_are_blanked_not_taught_as_background():
    """A window cutting a box to less than MIN_VISIBLE drops it and fills its visible part with
    the band means, except where a kept box lies; a box mostly inside is kept, clipped."""
    image = np.full((1, 64, 64), 9.0, np.float32)
    patch = Patch(0, 0, 0, 64, "train", True, {}, 0.0)
    boxes = [Box(1, 1, 50, 10, 80, 30),       # 14/30 inside: dropped, blanked
             Box(2, 1, 40, 40, 70, 60),       # 24/30 inside: kept, clipped to x 40-64
             Box(3, 1, 56, 36, 86, 50)]       # 8/30 inside: dropped, overlaps box 2
    kept = patch_boxes(boxes, patch)
    assert [(b.fid, c) for b, c in kept] == [(2, (40, 40, 64, 60))]
    blank_cut_objects(image, boxes, patch, kept, np.array([3.0], np.float32))
    assert (image[0, 10:30, 50:64] == 3.0).all() and (image[0, 40:60, 40:64] == 9.0).all()
    assert (image[0, 36:40, 56:64] == 3.0).all() and (image[0, :10] == 9.0).all()
    assert int((image == 3.0).sum()) == 20 * 14 + 4 * 8


def test_objects_cut_below_half_are_ignore_regions_with_their_pixels_kept(tmp_path):
    """CUT_IGNORE (RetinaNet, FCOS): the boxes of the blanking test give the same label and,
    instead of blanked pixels, their visible parts as ignore regions; the image is untouched."""
    import rasterio

    path = tmp_path / "img.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="float32") as ds:
        ds.write(np.full((1, 100, 100), 9.0, np.float32))
    boxes = [Box(1, 1, 50, 10, 80, 30), Box(2, 1, 40, 40, 70, 60), Box(3, 1, 56, 36, 86, 50),
             Box(4, 1, 70, 70, 90, 90)]                       # box 4: outside the window
    ds = BoxDataset([SampleSource(str(path), "", "train", "a")], [boxes],
                    [Patch(0, 0, 0, 64, "train", True, {}, 0.0)], [3.0], cut=CUT_IGNORE)
    image, target = ds[0]
    assert image.eq(9.0).all()
    assert target["boxes"].tolist() == [[40.0, 40.0, 64.0, 60.0]]
    assert target["ignore"].tolist() == [[50.0, 10.0, 64.0, 30.0], [56.0, 36.0, 64.0, 50.0]]


def test_ignored_locations_are_neither_object_nor_background():
    """IgnoreRegions: an unmatched location centred in an ignore box gets the constant
    IGNORED_LOGIT (no loss, no gradient); matched ones and those outside keep their logits."""
    import torch

    from plugin.core.detection.network import IGNORED_LOGIT, IgnoreRegions

    seen = {}
    loss = IgnoreRegions(lambda t, h, a, m: seen.update(h) or {})
    anchors = [torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]])]
    logits = torch.zeros(1, 4, 2, requires_grad=True)
    target = {"boxes": torch.tensor([[8.0, 0, 16, 8]]), "labels": torch.tensor([1]),
              "ignore": torch.tensor([[0.0, 0, 20, 8]])}     # centres 4 and 12 inside, 20 not
    loss([target], {"cls_logits": logits}, anchors, [torch.tensor([-1, 0, -1, -1])])
    out = seen["cls_logits"]
    assert out[0, :, 0].tolist() == [IGNORED_LOGIT, 0.0, 0.0, 0.0]
    out.sum().backward()
    assert logits.grad[0, :, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    seen.clear()
    loss([{k: v for k, v in target.items() if k != "ignore"}], {"cls_logits": logits}, anchors,
         [torch.tensor([-1, 0, -1, -1])])
    assert seen["cls_logits"] is logits                   # no ignore boxes: untouched


def test_auto_architecture_and_patch_size(tmp_path):
    assert resolve_architecture("auto", "cpu") == "fcos_resnet18"
    assert resolve_architecture("auto", "cuda:0") == "retinanet"
    assert resolve_architecture("fcos", "cpu") == "fcos"
    scene = make_object_scene(tmp_path / "s", size=300, n_objects=6, sizes=(30, 40))
    boxes = [[Box(i, c, x0, y0, x1, y1) for i, (c, x0, y0, x1, y1) in enumerate(scene.boxes)]]
    median = float(np.median([max(b.width, b.height) for b in boxes[0]]))
    assert auto_patch_size(boxes, [str(scene.raster)]) == max(
        128, math.ceil(OBJECTS_ACROSS * median / 32) * 32)
    # bounded by the smallest raster (rounded down to 32), never below the largest object
    small = make_object_scene(tmp_path / "t", size=100, n_objects=1, sizes=(30, 40))
    assert auto_patch_size(boxes, [str(scene.raster), str(small.raster)]) == 96
    big = [[Box(0, 1, 0, 0, 90, 110)]]
    assert auto_patch_size(big, [str(small.raster)]) == 128


def test_automatic_length_exceeds_one_pass_and_shows_steps(tmp_path):
    scene = make_object_scene(tmp_path / "s", size=256, n_objects=10, seed=4, sizes=(25, 34))
    project = scene_project(scene, tmp_path / "p.gpkg")
    job = TrainObjectDetectionJob(project=str(project.path), device="cpu")
    assert job.patch_size == 0 and job.steps_per_epoch == 0
    assert not any("atch size" in p for p in job.problems())
    summary = DetectionSummaryJob(project=str(project.path)).run(RecordingContext())
    assert summary["patch_size"] == 128             # 4 × ~30 px objects → 128 px
    one_pass = math.ceil(summary["patches"]["train"]["total"] / job.batch_size)
    steps = summary["steps"]
    assert steps["per_epoch"] >= 12 > one_pass
    assert steps["total"] == steps["per_epoch"] * job.epochs >= 300


def test_a_validation_patch_past_the_edge_hides_and_scores_only_its_planned_area(tmp_path):
    """Issue 19 (OSBS_029: the moved validation window hid ~10 training trees): the plan's last
    patch of a column runs past the raster edge; read moved flush with the edge, it must still
    hide from training, and score, only its planned area. The tree in the moved part (a tree of
    the training patch above) stays a training object, and validation ignores it: its truth is
    iscrowd and a prediction of it is dropped, the tree of the planned area alone counts."""
    import rasterio
    import torch
    from rasterio.transform import from_origin
    from shapely.geometry import box, mapping

    from plugin.core.detection.task import ObjectDetectionTask, patch_edge_rule
    from plugin.core.labeling.project import LabelingProject

    image = np.random.default_rng(0).integers(0, 200, (3, 100, 100)).astype(np.uint8)
    with rasterio.open(tmp_path / "i.tif", "w", driver="GTiff", width=100, height=100, count=3,
                       dtype="uint8", crs="EPSG:32631", transform=from_origin(0, 0, 1, 1)) as d:
        d.write(image)                                   # rows/cols → x = col, y = −row
    project = LabelingProject.create(tmp_path / "p.gpkg", "EPSG:32631")
    project.add_class("tree")
    project.add_raster(str(tmp_path / "i.tif"))
    # 64 px grid at 0 and 64; boxes padded to 25 px. Validation takes (64, 0), moved to (36, 0):
    # the tree at rows 36.5–61.5 lies in the moved part, in the training patch (0, 0)
    project.add_features([(1, mapping(box(c0, -r1, c1, -r0))) for r0, c0, r1, c1 in (
        (5, 5, 25, 25), (5, 70, 25, 90), (70, 5, 90, 25), (70, 70, 90, 90), (40, 40, 58, 58))])
    job = TrainObjectDetectionJob(project=str(tmp_path / "p.gpkg"), patch_size=64,
                                  device="cpu", num_workers=0,
                                  output_model=str(tmp_path / "m.dltmodel.safetensors"))
    task = ObjectDetectionTask()
    task.prepare(job, RecordingContext(), tmp_path / "logs")
    assert [(p.row, p.col) for p in task.data.plan.split("validation")] == [(64, 0)]
    assert [(p.row, p.col) for p in task.val_patches] == [(36, 0)]      # moved flush
    assert task.hidden == {0: [(64, 0, 100, 64)]}                      # the planned area
    trainable = task.windows.objects[:, 2:].tolist()
    assert [36.5, 36.5, 61.5, 61.5] in trainable                       # the moved part's tree
    assert "1 whole object" in task.unranked_reason()                  # the planned area's one
    _, target = task.val_loader("cpu").dataset[0]
    assert target["scored"].tolist() == [0, 28, 64, 64]                # rows 64–100 of 36–100
    truths = target["boxes"].tolist()
    assert truths == [[2.5, 31.5, 27.5, 56.5], [36.5, 0.5, 61.5, 25.5]]
    pred = {"boxes": target["boxes"].clone(), "scores": torch.tensor([0.9, 0.9]),
            "labels": target["labels"].clone()}                       # both found perfectly
    preds, targets = patch_edge_rule([torch.zeros(3, 64, 64)], [pred], [target])
    assert preds[0]["boxes"].tolist() == truths[:1]                   # the moved part's dropped
    assert targets[0]["iscrowd"].tolist() == [0, 1] and "scored" not in targets[0]
