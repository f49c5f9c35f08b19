"""The patch sampler: counts, rounding, splits, seeds, buffers, padding, window scanning."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from plugin.core.errors import UserError
from plugin.core.sampling import (
    PatchReader,
    SampleSource,
    SamplingConfig,
    plan_patches,
    round_half_up,
)
from plugin.core.sampling import plan as plan_mod
from plugin.core.sampling.boxes import feature_boxes, pad_box

TRANSFORM = from_origin(500000.0, 5600000.0, 1.0, 1.0)


def write(path: Path, array: np.ndarray, nodata=None) -> str:
    array = array if array.ndim == 3 else array[None]
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=array.dtype.name, crs="EPSG:32631",
                       transform=TRANSFORM, nodata=nodata) as ds:
        ds.write(array)
    return str(path)


def source(folder: Path, labels: np.ndarray, name: str = "r", role: str = "auto",
           bands: int = 3, image_nodata=None, image: np.ndarray | None = None) -> SampleSource:
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        rng = np.random.default_rng(len(name))
        image = rng.integers(1, 250, (bands, *labels.shape), dtype=np.uint8)
    img = write(folder / f"{name}.tif", image, image_nodata)
    lab = write(folder / f"{name}_labels.tif", labels.astype(np.uint8), 255)
    return SampleSource(img, lab, role, name)


def grid_labels(n_feature: int, rows: int = 10, cols: int = 10, size: int = 64) -> np.ndarray:
    """rows × cols patches of ``size`` px; the first ``n_feature`` (row-major) hold a class-1
    square, the others are background."""
    lab = np.zeros((rows * size, cols * size), np.uint8)
    for k in range(n_feature):
        r, c = divmod(k, cols)
        lab[r * size + 10:r * size + 20, c * size + 10:c * size + 20] = 1 + (k % 2)
    return lab


@pytest.fixture
def fifty(tmp_path: Path) -> list[SampleSource]:
    return [source(tmp_path, grid_labels(50))]


def test_round_half_up_rule():
    assert [round_half_up(x) for x in (0.4 * 50, 0.15 * 20, 0.15 * 10, 0.15 * 30, 0.45, 2.5)] \
        == [20, 3, 2, 5, 0, 3]


def test_feature_patch_percentage_and_background_ratio(fifty):
    full = plan_patches(fifty, SamplingConfig(patch_size=64, split=100,
                                              background_patch_ratio=1.0))
    assert full.summary()["patches"]["train"] == {"feature": 50, "background": 50, "total": 100}
    plan = plan_patches(fifty, SamplingConfig(patch_size=64, split=100,
                                              feature_patch_percentage=0.4,
                                              background_patch_ratio=0.15))
    s = plan.summary()["patches"]["train"]
    assert s["feature"] == 20        # 0.4 of 50 feature patches
    assert s["background"] == 3      # 0.15 × 20 = 3
    plan = plan_patches(fifty, SamplingConfig(patch_size=64, split=100,
                                              feature_patch_percentage=0.2))
    assert plan.summary()["patches"]["train"]["background"] == 2   # 0.15 × 10 = 1.5 → 2
    assert all(p.has_features == (sum(n for k, n in p.class_pixels.items() if k) > 0)
               for p in plan.patches)


def test_ratios_apply_per_split(fifty):
    plan = plan_patches(fifty, SamplingConfig(patch_size=64, split=80,
                                              feature_patch_percentage=0.5,
                                              background_patch_ratio=0.5))
    s = plan.summary()["patches"]
    # stratified split of one raster: 40/10 feature and 40/10 background patches
    assert s["train"]["feature"] == 20 and s["validation"]["feature"] == 5
    assert s["train"]["background"] == 10 and s["validation"]["background"] == 3  # 2.5 → 3


def test_seeds_reproduce_and_shuffle_changes_split(fifty):
    def val(shuffle: bool, seed: int, epoch=None) -> set:
        cfg = SamplingConfig(patch_size=64, shuffle=shuffle, seed=seed,
                             feature_patch_percentage=0.6)
        return {p.key + (p.split,) for p in plan_patches(fifty, cfg, epoch_seed=epoch).patches}

    assert val(True, 3) == val(True, 3)
    assert val(True, 3) != val(True, 4)

    def split_of(shuffle: bool, seed: int) -> set:
        cfg = SamplingConfig(patch_size=64, shuffle=shuffle, seed=seed,
                             background_patch_ratio=1)  # every patch: compare the split only
        return {p.key for p in plan_patches(fifty, cfg).split("validation")}

    assert split_of(False, 1) == split_of(False, 2)        # shuffle off: same split every run
    assert split_of(True, 1) != split_of(True, 2)          # shuffle on: differs per seed
    assert split_of(True, 1) == split_of(True, 1)
    assert val(False, 0, epoch=1) != val(False, 0, epoch=2)  # epochs resample the subsets


def test_split_by_raster_and_roles(tmp_path: Path):
    srcs = [source(tmp_path, grid_labels(4, 2, 2), name=f"r{i}") for i in range(5)]
    plan = plan_patches(srcs, SamplingConfig(patch_size=64, split=80, background_patch_ratio=0))
    per = plan.summary()["sources"]
    assert sum(1 for s in per if s["validation"]) == 1          # round(5 × 0.2) = 1 raster
    assert all(not (s["train"] and s["validation"]) for s in per)
    srcs[0].role, srcs[1].role = "validation", "train"
    for shuffle, seed in ((False, 0), (True, 1), (True, 2)):
        plan = plan_patches(srcs, SamplingConfig(patch_size=64, shuffle=shuffle, seed=seed))
        per = plan.summary()["sources"]
        assert per[0]["train"] == 0 and per[0]["validation"] == 4
        assert per[1]["validation"] == 0 and per[1]["train"] == 4
        assert sum(1 for s in per if s["validation"]) == 1    # the explicit one counts
    picks = set()
    srcs[0].role = srcs[1].role = "auto"
    for seed in range(6):
        plan = plan_patches(srcs, SamplingConfig(patch_size=64, shuffle=True, seed=seed))
        picks.add(next(s["name"] for s in plan.summary()["sources"] if s["validation"]))
    assert len(picks) > 1


@pytest.mark.parametrize("stride", [64, 32])
def test_blocked_split_leaves_a_buffer(tmp_path: Path, stride: int):
    src = [source(tmp_path, grid_labels(100, 12, 12))]
    cfg = SamplingConfig(patch_size=64, stride=stride, split=70, blocked_split=True,
                         block_size=3, buffer_patches=1, background_patch_ratio=1)
    plan = plan_patches(src, cfg)
    train, val = plan.split("train"), plan.split("validation")
    assert train and val and plan.stats["dropped"]["buffer"] > 0
    gap = min(max(abs(t.row - v.row), abs(t.col - v.col)) for t in train for v in val)
    # patches never overlap and at least one patch step lies between them
    assert gap >= 64 + stride
    again = plan_patches(src, cfg)
    assert [p.key + (p.split,) for p in again.patches] == [p.key + (p.split,)
                                                            for p in plan.patches]


def test_edge_patches_padded_with_ignore_and_nodata(tmp_path: Path):
    lab = np.zeros((100, 150), np.uint8)
    lab[90:100, 140:150] = 2
    image = np.full((2, 100, 150), 7, np.uint16)
    image[:, :, :5] = 0          # image nodata in the first 5 columns
    src = [source(tmp_path, lab, image=image, image_nodata=0)]
    plan = plan_patches(src, SamplingConfig(patch_size=64, split=100,
                                            background_patch_ratio=10))
    assert sorted(p.key[1:] for p in plan.patches) == [(0, 0), (0, 64), (0, 128), (64, 0),
                                                       (64, 64), (64, 128)]
    corner = next(p for p in plan.patches if (p.row, p.col) == (64, 128))
    assert corner.class_pixels[2] == 100 and corner.has_features
    reader = PatchReader(src)
    img, labels = reader.read(corner)
    assert img.dtype == np.float32 and img.shape == (2, 64, 64) and labels.shape == (64, 64)
    assert (labels[36:, :] == 255).all() and (labels[:, 22:] == 255).all()
    assert (img[:, 36:, :] == 0).all() and (img[:, :36, :22] == 7).all()
    assert (labels[26:36, 12:22] == 2).all()
    native = reader.read_image(corner)
    assert native.dtype == np.uint16
    first = next(p for p in plan.patches if (p.row, p.col) == (0, 0))
    _, labels = reader.read(first)
    assert (labels[:, :5] == 255).all() and (labels[:, 5:] == 0).all()
    assert reader.patch_transform(corner) == TRANSFORM * rasterio.Affine.translation(128, 64)
    reader2 = pickle.loads(pickle.dumps(reader))   # DataLoader workers get a fresh reader
    assert (reader2.read(first)[1] == labels).all()
    reader.close()
    reader2.close()


def test_mostly_nodata_patches_skipped(tmp_path: Path):
    lab = grid_labels(4, 2, 2)
    lab[:, 64:] = 255
    lab[10:20, 64 + 10:64 + 60] = 1
    src = [source(tmp_path, lab)]
    plan = plan_patches(src, SamplingConfig(patch_size=64, split=100,
                                            background_patch_ratio=1))
    assert {p.col for p in plan.patches} == {0}
    assert plan.stats["dropped"]["nodata"] == 2
    plan = plan_patches(src, SamplingConfig(patch_size=64, split=100, max_nodata_fraction=1.0))
    assert {(p.row, p.col) for p in plan.patches} == {(0, 0), (64, 0), (0, 64)}  # all-ignore out


def test_window_scan_counts_match_direct_counts(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(5)
    lab = rng.choice([0, 0, 0, 1, 2, 3, 255], size=(211, 333)).astype(np.uint8)
    src = [source(tmp_path, lab)]
    monkeypatch.setattr(plan_mod, "_COL_CHUNK", 100)  # several column windows per patch row
    plan = plan_patches(src, SamplingConfig(patch_size=64, stride=48, split=100,
                                            background_patch_ratio=1, max_nodata_fraction=1))
    assert len(plan.patches) == 5 * 7
    for p in plan.patches:
        win = lab[p.row:p.row + 64, p.col:p.col + 64]
        counts = {int(k): int(n) for k, n in zip(*np.unique(win, return_counts=True)) if k != 255}
        counts.setdefault(0, 0)
        assert p.class_pixels == counts
        assert p.nodata_fraction == pytest.approx((win == 255).mean(), abs=1e-6)


def test_summary_warnings(tmp_path: Path):
    lab = np.zeros((50, 80), np.uint8)
    lab[5:10, 5:10] = 1
    srcs = [source(tmp_path, lab, name="small")]
    plan = plan_patches(srcs, SamplingConfig(patch_size=64), class_names={1: "car", 2: "tree"})
    text = " ".join(plan.summary()["warnings"])
    assert "larger than raster small" in text
    assert "'tree' has no training samples" in text
    plan = plan_patches(srcs, SamplingConfig(patch_size=16, split=0))
    assert any(w.startswith("Nothing to train on") for w in plan.warnings)
    plan = plan_patches([source(tmp_path, grid_labels(20, 5, 5), name="g")],
                        SamplingConfig(patch_size=64, split=90),
                        class_names={1: "car", 2: "tree"})
    assert plan.summary()["patches"]["validation"]["feature"] == 2
    with pytest.raises(UserError):
        plan_patches(srcs, SamplingConfig(patch_size=64, stride=100))
    with pytest.raises(UserError):
        plan_patches([], SamplingConfig())


def test_pad_small_features():
    assert pad_box((10, 10, 14, 50), 25) == (-0.5, 10, 24.5, 50)

    class F:
        def __init__(self, fid, layer, geometry):
            self.fid, self.layer, self.class_id, self.geometry = fid, layer, 1, geometry

    x, y = TRANSFORM * (40, 30)
    feats = [F(1, "points", {"type": "Point", "coordinates": [x, y]}),
             F(2, "polygons", {"type": "Polygon", "coordinates": [[
                 list(TRANSFORM * (2, 2)), list(TRANSFORM * (6, 2)), list(TRANSFORM * (6, 8)),
                 list(TRANSFORM * (2, 2))]]})]
    boxes = feature_boxes(feats, TRANSFORM, 100, 100, point_box=10, pad=True)
    assert (boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1) == (27.5, 17.5, 52.5, 42.5)
    assert (boxes[1].x0, boxes[1].x1, boxes[1].y1) == (0, 16.5, 17.5)   # grown, then clipped
    boxes = feature_boxes(feats, TRANSFORM, 100, 100, point_box=10, pad=False)
    assert (boxes[0].width, boxes[1].width, boxes[1].height) == (10, 4, 6)


def test_scan_cache_follows_file_changes(tmp_path: Path):
    src = [source(tmp_path, grid_labels(2, 2, 2))]
    cfg = SamplingConfig(patch_size=64, split=100, background_patch_ratio=1)
    assert plan_patches(src, cfg).summary()["patches"]["train"]["feature"] == 2
    assert plan_patches(src, cfg, epoch_seed=1).summary()["patches"]["train"]["feature"] == 2
    write(Path(src[0].labels), grid_labels(3, 2, 2), 255)
    assert plan_patches(src, cfg).summary()["patches"]["train"]["feature"] == 3


def test_scanning_memory_does_not_grow_with_the_raster(tmp_path: Path):
    import tracemalloc

    from rasterio.windows import Window

    size = 4096   # a 16 MB label raster, written and scanned by windows
    path = tmp_path / "big_labels.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="EPSG:32631", transform=TRANSFORM, nodata=255,
                       tiled=True, blockxsize=256, blockysize=256) as ds:
        strip = np.zeros((512, size), np.uint8)
        strip[100:110, ::300] = 1
        for r in range(0, size, 512):
            ds.write(strip, 1, window=Window(0, r, size, 512))
    tracemalloc.start()
    cands, _, grid = plan_mod.scan_label_raster(str(path), 256, 256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert grid == (16, 16) and sum(1 for c in cands if c.counts.get(1)) == 8 * 14
    assert peak < size * size / 4    # well under the 16 MB a whole-raster read would take


def test_validation_spares_the_unit_holding_most_of_a_class():
    """Issue 19: a feature in every patch but mostly in one (a lake among streams, 794 of 1291
    water pixels in one of 5 patches) keeps that patch in training whatever the draw; when only
    such units are left, validation still gets its count."""
    counts = [{0: 14000, 1: 125}, {0: 14000, 1: 50}, {0: 9700, 1: 12}, {0: 11000, 1: 794},
              {0: 11600, 1: 310}]
    for seed in range(20):
        val = plan_mod.class_covering(counts, 1, np.random.default_rng(seed))
        assert len(val) == 1 and 3 not in val
    assert plan_mod.class_covering([{1: 90}, {1: 10}], 1, np.random.default_rng(0)) == {1}
    assert plan_mod.class_covering([{1: 90}, {1: 10}], 2, np.random.default_rng(0)) == {0, 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_validation_patches_hold_every_class_they_can(tmp_path: Path, seed: int):
    """Sparse labels (issue 9): a random pick of 2 validation patches out of 10 feature patches
    validated one or two classes and could take a rare class's only patch out of training.
    Classes 2–4 lie in two patches each, class 5 in one only, class 1 everywhere else."""
    lab = np.zeros((5 * 32, 2 * 32), np.uint8)
    where = {2: (0, 1), 3: (2, 3), 4: (4, 5), 5: (6,)}
    for k in range(10):
        r, c = divmod(k, 2)
        cls = next((c_ for c_, ks in where.items() if k in ks), 1)
        lab[r * 32 + 4:r * 32 + 12, c * 32 + 4:c * 32 + 12] = cls
    cfg = SamplingConfig(patch_size=32, split=70, shuffle=True, seed=seed,
                         background_patch_ratio=0)
    plan = plan_patches([source(tmp_path, lab)], cfg)
    s = plan.summary()
    assert s["patches"]["validation"]["feature"] == 3           # round(10 × 0.3): unchanged
    assert set(s["pixels"]["validation"]) >= {2, 3, 4}          # 3 patches, 3 classes of 2
    assert set(s["pixels"]["train"]) >= {1, 2, 3, 4, 5}         # nothing left out of training
    assert any("5" in w and "no validation" in w for w in plan.warnings)
    assert plan_mod.class_covering([{1: 9}, {1: 9}, {0: 5, 2: 1}], 3,
                                   np.random.default_rng(0)) == {0, 1, 2}   # n_val is kept


def test_classes_with_few_validation_pixels_are_named_with_their_count(tmp_path: Path):
    """A class whose validation patches hold under 100 pixels gets a warning with its count
    (too few to choose the best epoch by); one with more, or none (its own warning), does not."""
    lab = np.zeros((4 * 32, 32), np.uint8)
    lab[4:20, 4:20] = 1            # 256 px of class 1 in each patch
    lab[32 + 4:32 + 20, 4:20] = 1
    lab[64 + 4:64 + 20, 4:20] = 1
    lab[96 + 4:96 + 20, 4:20] = 1
    lab[4:7, 24:27] = 2            # 9 px of class 2 in each patch
    lab[32 + 4:32 + 7, 24:27] = 2
    lab[64 + 4:64 + 7, 24:27] = 2
    lab[96 + 4:96 + 7, 24:27] = 2
    cfg = SamplingConfig(patch_size=32, split=75, background_patch_ratio=0)
    plan = plan_patches([source(tmp_path, lab)], cfg, class_names={1: "field", 2: "pond"})
    assert plan.summary()["pixels"]["validation"] == {0: 1024 - 265, 1: 256, 2: 9}
    assert plan_mod.few_validation_pixels(plan) == [
        "Class 'pond' has only 9 validation pixels: one pixel more or less right moves its IoU "
        "by up to 11 points, too much to choose the best epoch by. Label more of it where the "
        "validation patches lie, or lower the split for more validation patches."]
    assert plan_mod.few_pixel_classes(plan) == {2: 9}
    assert plan_mod.few_validation_pixels(plan, minimum=9) == []
    # under 100 feature pixels in all: one warning, which says that the last epoch is kept
    lab[lab == 1] = 0
    plan = plan_patches([source(tmp_path / "pond", lab)], cfg, class_names={2: "pond"})
    assert plan_mod.few_validation_pixels(plan) == [
        "Class 'pond' has only 9 validation pixels: one pixel more or less right moves its IoU "
        "by up to 11 points, too much to choose the best epoch by. Training keeps the last "
        "epoch's model rather than one chosen on it. Label more of it where the validation "
        "patches lie, or lower the split for more validation patches."]


def test_segmentation_ranks_epochs_unless_every_validated_class_has_few_pixels(tmp_path: Path):
    """Pixel segmentation keeps the last epoch's model (``unranked_reason``) only where the
    feature classes hold under 100 validation pixels together: with more, epochs are ranked."""
    from types import SimpleNamespace

    from plugin.core.segmentation.task import PixelSegmentationTask

    def reason(lab, names):
        cfg = SamplingConfig(patch_size=32, split=75, background_patch_ratio=0)
        task = PixelSegmentationTask.__new__(PixelSegmentationTask)
        src = source(tmp_path / str(len(names)), lab)
        task.setup = SimpleNamespace(plan=plan_patches([src], cfg, class_names=names))
        return task.unranked_reason()

    lab = np.zeros((4 * 32, 32), np.uint8)
    for top in range(0, 128, 32):
        lab[top + 4:top + 7, 24:27] = 2       # 9 px of 'pond' in each patch
    assert reason(lab, {2: "pond"}) == (
        "Class 'pond' has only 9 validation pixels: one pixel more or less right moves its IoU "
        "by up to 11 points, too much to choose the best epoch by.")
    for top in range(0, 128, 32):
        lab[top + 4:top + 14, 4:13] = 1       # and 90 px of 'field': 99 px in all
    assert reason(lab, {1: "field", 2: "pond"}).count("validation pixels") == 2
    lab[4:5, 13] = lab[36:37, 13] = lab[68:69, 13] = lab[100:101, 13] = 1   # 100 px: ranked
    assert reason(lab, {1: "field", 2: "pond"}) == ""
