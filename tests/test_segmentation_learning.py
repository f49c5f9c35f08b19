"""Issue 9 (learning from real imagery): per-band nodata, random windows drawn anew each epoch
(up to half centred on labels, the fewer the more area the features cover, flush with the
edges, validation labels hidden), fresh augmentation per draw, the losses, unlabelled pixels
as unknown, encoder weights from a local file, the training length up front, and a model's
answer that does not depend on the inference tile size."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.sampling import SampleSource
from plugin.core.sampling.statistics import band_statistics
from plugin.core.segmentation.data import IGNORE, PatchDataset, WindowSampler


def _write(path, data, nodata=None):
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=str(data.dtype), nodata=nodata,
                       crs="EPSG:32631", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(data)
    return str(path)


def test_one_bands_nodata_stays_out_of_its_statistics_and_is_filled_with_its_mean(tmp_path):
    """Cause 6: −99999 in band 2 where band 1 is valid must not enter band 2's mean/std."""
    image = np.stack([np.full((40, 40), 10.0), np.full((40, 40), 50.0)]).astype(np.float32)
    image[0, :, :20] = 30.0
    image[1, :20] = -99999.0                      # band 2 missing on the top half only
    labels = np.zeros((1, 40, 40), np.uint8)
    src = SampleSource(_write(tmp_path / "i.tif", image, -99999.0),
                       _write(tmp_path / "l.tif", labels))
    mean, std, nodata = band_statistics([src])
    assert mean == pytest.approx([20.0, 50.0]) and std == pytest.approx([10.0, 1.0])
    ds = PatchDataset([src], WindowSampler(40, {0: (40, 40)}, {}).draw(1, 0.0,
                      np.random.default_rng(0)), mean, std, 2, nodata=nodata)
    img, mask, _ = ds[0]
    assert (img[1, :20] == 0).all() and (img[1, 20:] == 0).all()   # filled = the mean
    assert img[0, 0, 0] == pytest.approx(1.0) and (mask == 0).all()  # band 1 kept, labelled


def test_windows_are_centred_on_labels_flush_and_hide_validation_labels(tmp_path):
    labels = np.zeros((1, 100, 120), np.uint8)
    labels[0, 5:10, 100:110] = 1                  # a small feature near the right edge
    labels[0, 60:70, 10:20] = 2                   # a feature inside the validation box
    src = SampleSource(_write(tmp_path / "i.tif", np.ones((1, 100, 120), np.uint8)),
                       _write(tmp_path / "l.tif", labels))
    hidden = {0: [(50, 0, 100, 40)]}
    sampler = WindowSampler.scan([src], [0], 32, hidden)
    assert set(sampler.centres) == {1}            # class 2 lies in the validation area only
    windows = sampler.draw(400, 1.0, np.random.default_rng(1))
    assert all(0 <= w.row <= 100 - 32 and 0 <= w.col <= 120 - 32 for w in windows)
    on_feature = [w for w in windows if w.row <= 9 and w.row + 32 > 5 and w.col + 32 > 100]
    assert 0.4 < len(on_feature) / len(windows) < 0.7      # about half centred on labels
    ds = PatchDataset([src], windows, [1.0], [1.0], 3, hidden=hidden)
    for i, w in enumerate(windows):
        if w.row + 32 > 60 and w.col < 20:
            _, mask, _ = ds[i]
            assert not (mask == 2).any() and (mask == IGNORE).any()
            break
    else:
        pytest.fail("no window reached the validation area")
    again = sampler.draw(400, 1.0, np.random.default_rng(2))   # another epoch: other windows
    assert {(w.row, w.col) for w in again} != {(w.row, w.col) for w in windows}


def test_fewer_windows_are_centred_on_features_the_more_area_they_cover(tmp_path):
    """Half the windows centred on sparse features; none when features cover half the training
    area or more (centring would overstate how common they are)."""
    image = _write(tmp_path / "i.tif", np.ones((1, 100, 100), np.uint8))
    shares = []
    for rows in (6, 30, 61):                      # features on 6 %, 30 %, 61 % of the pixels
        labels = np.zeros((1, 100, 100), np.uint8)
        labels[0, :rows] = 1
        src = SampleSource(image, _write(tmp_path / f"l{rows}.tif", labels))
        shares.append(WindowSampler.scan([src], [0], 32, {}).centred)
    assert shares == pytest.approx([0.44, 0.2, 0.0])
    labels = np.zeros((1, 100, 100), np.uint8)
    labels[0, :30] = 1                            # 30 % of the raster, but the validation box
    src = SampleSource(image, _write(tmp_path / "lh.tif", labels))   # hides 20 of those rows
    hidden = {0: [(0, 0, 20, 100)]}
    assert WindowSampler.scan([src], [0], 32, hidden).centred == pytest.approx(0.5 - 10 / 80)


def test_each_draw_gets_its_own_augmentation(tmp_path):
    """Cause 1: the same window drawn twice in an epoch is not an identical copy."""
    from plugin.core.segmentation.data import Augment

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 64, 64)).astype(np.uint8)
    src = SampleSource(_write(tmp_path / "i.tif", image),
                       _write(tmp_path / "l.tif", np.zeros((1, 64, 64), np.uint8)))
    same = WindowSampler(64, {0: (64, 64)}, {}).draw(1, 0, rng) * 6
    ds = PatchDataset([src], same, [0.0] * 3, [1.0] * 3, 2, Augment())
    copies = {ds[i][0].numpy().tobytes() for i in range(len(same))}
    assert len(copies) > 1


def test_unknown_unlabelled_pixels_are_ignored(tmp_path):
    labels = np.zeros((1, 32, 32), np.uint8)
    labels[0, :8] = 3
    src = SampleSource(_write(tmp_path / "i.tif", np.ones((1, 32, 32), np.uint8)),
                       _write(tmp_path / "l.tif", labels))
    windows = WindowSampler(32, {0: (32, 32)}, {}).draw(1, 0, np.random.default_rng(0))
    _, mask, _ = PatchDataset([src], windows, [0.0], [1.0], 4, unknown_background=True)[0]
    assert set(np.unique(mask.numpy())) == {3, IGNORE}
    _, mask, _ = PatchDataset([src], windows, [0.0], [1.0], 4)[0]
    assert set(np.unique(mask.numpy())) == {0, 3}


@pytest.mark.parametrize("kind", ["gce_dice", "ce_dice", "ce", "focal", "tversky"])
def test_losses_learn_and_skip_unlabelled_batches(kind):
    import torch

    from plugin.core.segmentation.losses import SegmentationLoss

    loss_fn = SegmentationLoss(kind, torch.ones(3))
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[:, :2] = 2
    good = torch.zeros(2, 3, 8, 8)
    good[:, 0] = 5.0
    good[:, 2, :2], good[:, 0, :2] = 10.0, 0.0
    bad = good.flip(1)
    assert loss_fn(good, mask, torch.zeros(0))[0] < loss_fn(bad, mask, torch.zeros(0))[0]
    none = torch.full_like(mask, IGNORE)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    zero, _ = loss_fn(logits, none, torch.zeros(0))
    assert zero.item() == 0.0 and torch.isfinite(zero)
    zero.backward()


def test_encoder_weights_from_a_local_torchvision_checkpoint(tmp_path):
    import torch
    import torchvision

    from plugin.core.errors import UserError
    from plugin.core.segmentation.network import build_network
    from plugin.core.smp_networks import start_smp

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)   # an encoder file: keys without "encoder."
    net = build_network("unet", "resnet18", 4, 3)
    line = start_smp(net, str(path), "pixel_segmentation", "resnet18")
    assert "tensors loaded" in line
    assert torch.equal(net.encoder.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)
    first = net.encoder.conv1.weight                # 4 bands from RGB: R, G, B, mean(RGB)
    assert torch.allclose(first[:, 3], resnet.conv1.weight.mean(dim=1) * 3 / 4)
    torch.save({"x": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(UserError, match="fit only"):
        start_smp(net, str(tmp_path / "junk.pth"), "pixel_segmentation", "resnet18")


def test_training_length_is_known_up_front():
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.training.length import MIN_STEPS, training_length

    job = TrainPixelSegmentationJob(epochs=25, patch_size=128, batch_size=8)
    per_epoch, total, warning = training_length(job, 100_000)
    assert per_epoch == 12 and total == 300 and not warning     # at least 12 batches/epoch
    per_epoch, total, _ = training_length(job, 4_000_000)
    assert per_epoch == 62                                      # 2 × 4 Mpx / 128² / 8
    short = TrainPixelSegmentationJob(epochs=2, steps_per_epoch=10)
    assert training_length(short, 1e6)[1] == 20 < MIN_STEPS
    assert "few hundred" in training_length(short, 1e6)[2]


def test_tile_size_does_not_change_the_answer_and_without_validation_the_last_model_is_kept(
        tmp_path, monkeypatch):
    """Cause 8: a model trained on 32 px patches answers the same with TILE_SIZE 0 (its patch
    size), 32 and 256 (the old default). Cause 5: without validation the last epoch's model is the
    output model."""
    import rasterio
    from test_segmentation_train import scene_project

    from plugin.core.jobs import RecordingContext
    from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob
    from plugin.core.segmentation.modelfile import read_card

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    scene, project = scene_project(tmp_path, size=96)
    model = tmp_path / "m.dltmodel.safetensors"
    job = TrainPixelSegmentationJob(project=project, patch_size=32, epochs=2,
                                    steps_per_epoch=3, batch_size=4, split=100, device="cpu",
                                    num_workers=0, output_model=str(model))
    ctx = RecordingContext()
    result = job.run(ctx)
    assert result["best_epoch"] == 2 == result["epochs_run"]
    assert (result["architecture"], result["encoder"]) == ("unet", "resnet18")   # CPU default
    assert read_card(model)["state"]["epoch"] == 2
    assert any("last model is kept" in e.get("message", "") for e in ctx.events)
    assert any("Only 6 training steps" in e.get("message", "") for e in ctx.events)
    answers = []
    for tile in (0, 32, 256):
        out = tmp_path / f"c{tile}.tif"
        ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(out),
                          tile_size=tile, device="cpu").run(RecordingContext())
        with rasterio.open(out) as ds:
            answers.append(ds.read(1))
    assert min((a == answers[0]).mean() for a in answers) > 0.999


def test_torch_threads_never_oversubscribe_the_cores(monkeypatch):
    """Cause 4: training threads + loader workers fit the cores; OMP_NUM_THREADS wins."""
    import torch

    from plugin.core.training import runtime

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
        assert runtime.num_workers(-1, "cpu") == 0 and runtime.limit_threads(0) == 1
        monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
        assert runtime.limit_threads(runtime.num_workers(-1, "cpu")) == 6
        assert torch.get_num_threads() == 6
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert runtime.limit_threads(2) == 3
    finally:
        torch.set_num_threads(before)


def test_a_validation_patch_past_the_edge_hides_and_scores_only_its_planned_pixels(tmp_path):
    """Issue 19 (land cover): the plan's last patch of a row runs past the raster edge; read
    moved flush with the edge, it must still hide from training, and score, only the pixels the
    plan counted: class b, labelled in a training patch only, stays in training although the
    moved window covers it, and the validation labels hold no class-b pixel."""
    from shapely.geometry import box, mapping

    from plugin.core.jobs import RecordingContext
    from plugin.core.labeling.project import LabelingProject
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.segmentation.task import PixelSegmentationTask

    raster = _write(tmp_path / "i.tif", np.random.default_rng(0).integers(
        0, 200, (1, 100, 100)).astype(np.uint8))     # rows/cols → x = col, y = −row

    def rect(r0, c0, r1, c1):
        return mapping(box(c0, -r1, c1, -r0))

    project = LabelingProject.create(tmp_path / "p.gpkg", "EPSG:32631")
    for name in ("a", "b", "c"):
        project.add_class(name)
    project.add_raster(raster)
    # grid of 64 px patches at 0 and 64: class a in all four, b in (0, 0) only (within the
    # columns 36–100 of the (0, 64) patch moved flush), c in (0, 64) (1/3) and (64, 64) (2/3):
    # validation takes (0, 64), the patch with the smallest share of c
    project.add_features([(1, rect(r, c, r + 4, c + 4)) for r in (2, 70) for c in (2, 70)]
                         + [(2, rect(10, 40, 20, 60)), (3, rect(30, 70, 40, 80)),
                            (3, rect(80, 80, 100, 90))])
    job = TrainPixelSegmentationJob(project=str(tmp_path / "p.gpkg"), patch_size=64,
                                    unlabelled_pixels="unknown", device="cpu", num_workers=0,
                                    output_model=str(tmp_path / "m.dltmodel.safetensors"))
    task = PixelSegmentationTask()
    task.prepare(job, RecordingContext(), tmp_path / "logs")
    assert [(p.row, p.col) for p in task.val_patches] == [(0, 36)]   # moved flush
    assert task.hidden == {0: [(0, 64, 64, 100)]}                     # the planned pixels
    assert 2 in task.windows.centres                                  # b still trains
    _, mask, _ = task.val_loader("cpu").dataset[0]
    mask = mask.numpy()
    assert (mask[:, :28] == IGNORE).all()            # the columns 36–64: training pixels
    assert set(np.unique(mask)) == {1, 3, IGNORE}
