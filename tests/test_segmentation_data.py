"""Training data rules: rare-class sampling, class weight decay, soft targets, loss weights,
augmentation of image and mask alike, band statistics without nodata."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.sampling import Patch, SampleSource
from plugin.core.sampling.statistics import band_statistics
from plugin.core.segmentation.data import (
    Augment,
    class_weight_at,
    rarity_scores,
    sampling_probabilities,
    soft_targets,
)
from plugin.core.segmentation.metrics import metrics_from_confusion
from plugin.core.segmentation.train import _loss_weights


def patch(counts: dict[int, int]) -> Patch:
    return Patch(0, 0, 0, 10, "train", any(counts.get(c) for c in counts if c), counts, 0.0)


def test_rare_class_patches_are_favoured_by_the_class_weight():
    patches = [patch({0: 100})] * 8 + [patch({0: 90, 1: 10})] + [patch({0: 50, 2: 50})]
    scores = rarity_scores(patches)
    assert scores.mean() == pytest.approx(1.0)
    uniform = sampling_probabilities(scores, 0.0)
    assert np.allclose(uniform, 0.1)
    p1, p3 = sampling_probabilities(scores, 1.0), sampling_probabilities(scores, 3.0)
    assert p1[8] > uniform[8] and p3[8] > p1[8]          # the rare class 1 patch
    assert p3[0] < p1[0] < uniform[0]                       # background-only patches
    assert class_weight_at(0, 10, 3.0, 1.0) == 3.0
    assert class_weight_at(9, 10, 3.0, 1.0) == 1.0
    assert class_weight_at(0, 1, 3.0, 1.0) == 3.0


def test_soft_targets_around_labels_shrink_with_the_blur():
    mask = np.zeros((9, 9), np.uint8)
    mask[4, 4] = 1
    mask[0, 0] = 255
    t = soft_targets(mask, {1: 2.0}, 3)
    assert t.shape == (3, 9, 9)
    assert t[1, 4, 4] == 1.0 and t[:, 0, 0].sum() == 0        # hard label, ignored pixel
    assert t[1, 4, 5] == pytest.approx(1 - 1 / 3) and t[0, 4, 5] == pytest.approx(1 / 3)
    assert t[1, 4, 7] == 0 and t[0, 4, 7] == 1                 # beyond the blur
    valid = mask != 255
    assert np.allclose(t.sum(0)[valid], 1.0)
    none = soft_targets(mask, {1: 0.0}, 3)
    assert none[1].sum() == 1.0


def test_loss_weights_range_from_equal_to_balanced():
    patches = [patch({0: 900, 1: 100})]
    assert list(_loss_weights(patches, 3, 0.0)) == [1, 1, 1]
    assert _loss_weights(patches, 3, 1.0)[1] == pytest.approx(9.0)
    assert _loss_weights(patches, 3, 0.5)[1] == pytest.approx(3.0)


def test_augmentation_moves_image_and_mask_together():
    import torch

    img = torch.zeros(2, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.uint8)
    img[:, 4:10, 20:28] = 5.0
    mask[4:10, 20:28] = 1
    aug = Augment(rotation=True, scale=True, flip=True)
    for seed in range(6):
        a_img, a_mask = aug(img, mask, np.random.default_rng(seed))
        assert a_img.shape == img.shape and a_mask.dtype == torch.uint8
        inside = a_mask == 1
        assert inside.sum() > 20
        assert (a_img[0][inside] > 2.5).float().mean() > 0.9
        assert (a_img[0][a_mask == 0] < 2.5).float().mean() > 0.95
        assert set(torch.unique(a_mask).tolist()) <= {0, 1, 255}


def test_band_statistics_skip_nodata(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    data = np.zeros((2, 50, 40), np.int16)
    data[0, :, :20], data[0, :, 20:] = 10, 30
    data[1] = 5
    data[:, :10, :] = -1                     # nodata rows
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=50, count=2, dtype="int16",
                       nodata=-1, crs="EPSG:32631", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(data)
    mean, std, nodata = band_statistics([SampleSource(str(path), str(path))], window=16)
    assert mean == pytest.approx([20.0, 5.0]) and std == pytest.approx([10.0, 1.0])
    assert nodata == -1


def test_metrics_from_confusion():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm, [0, 1, 2])
    assert m["accuracy"] == pytest.approx(11 / 14)
    assert m["per_class"][1]["precision"] == pytest.approx(3 / 5)
    assert m["per_class"][1]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"][1]["iou"] == pytest.approx(3 / 6)
    assert m["mean_iou"] == pytest.approx((8 / 11 + 3 / 6) / 2)   # class 2 has no pixels
