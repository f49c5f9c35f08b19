"""The training input pipeline's device-side pieces, on the CPU: per-batch augmentation (image,
mask and soft targets moved together, nearest for masks, IGNORE outside), loss sums kept on the
device, loader workers from the cores, the confusion update without a host sync."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from plugin.core.batch_augment import BatchAugment  # noqa: E402
from plugin.core.segmentation.losses import weighted_cross_entropy  # noqa: E402
from plugin.core.segmentation.metrics import IGNORE, confusion_metric  # noqa: E402
from plugin.core.segmentation.task import add_confusion  # noqa: E402
from plugin.core.training import runtime  # noqa: E402


def _batch(n=16, size=32, classes=4, block=4):
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, classes, (n, size // block, size // block), generator=g)
    mask = mask.repeat_interleave(block, 1).repeat_interleave(block, 2)   # blocks of labels
    image = torch.stack([mask.float(), mask.float() * 2, torch.ones_like(mask.float())], 1)
    soft = torch.nn.functional.one_hot(mask, classes).permute(0, 3, 1, 2).float()
    return image, mask, soft


def test_quarter_turns_and_flips_move_image_mask_and_soft_together():
    image, mask, soft = _batch()
    aug = BatchAugment(rotation=True, scale=False, flip=True, max_angle=0.0)
    img2, mask2, soft2 = aug(image, mask, soft, torch.Generator().manual_seed(1))
    seen = set()
    for i in range(len(mask)):   # each patch is one of the square's 8 symmetries, exactly
        found = None
        for k in range(4):
            for flip in (False, True):
                m = torch.rot90(mask[i].flip(-1) if flip else mask[i], k, (0, 1))
                if torch.equal(m, mask2[i]):
                    found = (k, flip)
        assert found is not None
        seen.add(found)
        torch.testing.assert_close(img2[i, 0], mask2[i].float(), atol=1e-4, rtol=0)
        assert torch.equal(soft2[i].argmax(0), mask2[i])
    assert len(seen) > 2          # patches get their own transforms (not one per batch)


def test_rotation_and_scale_fill_outside_with_ignore_and_the_mean():
    image, mask, soft = _batch(n=32, size=64, block=16)
    aug = BatchAugment(rotation=True, scale=True, flip=True, max_angle=15.0)
    img2, mask2, soft2 = aug(image, mask, soft, torch.Generator().manual_seed(3))
    outside = mask2 == IGNORE
    assert outside.any() and not outside.all()
    assert (img2[:, 2][outside] < 0.5).all()             # the constant band falls to 0 outside
    assert (soft2.sum(1)[outside] < 0.5).all()           # soft targets: all 0 = ignored
    inside = ~outside
    assert set(mask2[inside].unique().tolist()) <= {0, 1, 2, 3}   # nearest: no new values
    # the image and the mask were moved together: the mask's value is the image's first band
    # away from label edges
    agree = (img2[:, 0] - mask2.float()).abs()[inside] < 0.5
    assert agree.float().mean() > 0.9
    again = aug(image, mask, soft, torch.Generator().manual_seed(3))
    assert torch.equal(again[1], mask2)                    # reproducible from the seed


def test_weighted_cross_entropy_matches_torch_and_is_zero_without_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    mask = torch.randint(0, 3, (2, 8, 8), generator=g)
    mask[0, :4] = IGNORE
    w = torch.tensor([0.5, 1.0, 2.0])
    ref = torch.nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE)(logits, mask)
    torch.testing.assert_close(weighted_cross_entropy(logits, mask, w), ref)
    empty = weighted_cross_entropy(logits, torch.full_like(mask, IGNORE), w)
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.isfinite(logits.grad).all()


def test_confusion_added_on_device_equals_torchmetrics_update():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (3, 16, 16), generator=g)
    mask = torch.randint(0, 4, (3, 16, 16), generator=g)
    mask[:, :3] = IGNORE
    ours, ref = confusion_metric(4, "cpu"), confusion_metric(4, "cpu")
    add_confusion(ours, pred, mask)
    add_confusion(ours, pred, mask)
    ref.update(pred, mask)
    ref.update(pred, mask)
    assert torch.equal(ours.compute(), ref.compute())


def test_device_sums_and_loader_workers():
    sums = runtime.DeviceSums("cpu")
    for v in (1.0, 2.0, 3.5):
        sums.add(loss=torch.tensor(v), ce=torch.tensor(v / 2))
    assert sums.read() == {"loss": 6.5, "ce": 3.25}
    assert runtime.DeviceSums("cpu").read() == {}
    assert runtime.num_workers(3, "cuda") == 3                       # asked for
    assert runtime.num_workers(-1, "cuda", cpus=16) == 15            # all cores but one
    assert runtime.num_workers(-1, "cuda", cpus=64) == runtime.MAX_GPU_WORKERS
    assert runtime.num_workers(-1, "cuda", cpus=16, processes=4) == 3   # a share per GPU
    assert runtime.num_workers(-1, "cpu", cpus=2) == 0
    assert runtime.num_workers(-1, "cpu", cpus=16) == 2


def test_a_fresh_run_moves_the_earlier_metrics_aside_and_a_resumed_run_appends(tmp_path):
    from plugin.core.training import report

    report.append_csv(tmp_path, {"epoch": 1, "train_loss": 0.5})
    assert report.start_csv(tmp_path, resumed=True) is None
    report.append_csv(tmp_path, {"epoch": 2, "train_loss": 0.4})
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3
    moved = report.start_csv(tmp_path, resumed=False)
    assert moved is not None and moved.read_text().count("\n") == 3
    assert not (tmp_path / "metrics.csv").exists()
    report.append_csv(tmp_path, {"epoch": 1, "train_loss": 0.9})
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,train_loss", "1,0.9"]


def test_the_weight_average_follows_the_training_weights_and_their_batch_norm_statistics():
    from plugin.core.training.weight_average import WeightAverage, decay_for

    assert decay_for(300) == pytest.approx(0.98)            # the last sixth of training
    assert decay_for(12_000) == pytest.approx(0.9995)
    assert decay_for(30) == pytest.approx(0.8)
    assert decay_for(4) == 0.0                              # a few steps: the last weights
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    torch.nn.init.zeros_(net[0].weight)
    average = WeightAverage(net, total_steps=300)
    average.update(net)                                     # the first update copies
    assert torch.equal(average.module[0].weight, net[0].weight)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].running_mean.fill_(4.0)
    average.update(net)                                     # the mean of both, not 0.98
    assert average.module[0].weight[0, 0].item() == pytest.approx(0.5)
    assert average.module[1].running_mean[0].item() == pytest.approx(2.0)
    average.update(net)
    assert average.module[0].weight[0, 0].item() == pytest.approx(2 / 3)
    for _ in range(300):
        average.update(net)
    assert average.module[0].weight[0, 0].item() == pytest.approx(1.0, abs=1e-3)
    assert not average.module.training                    # validated as it is used
    resumed = WeightAverage(average.module, total_steps=300, steps=250)
    with torch.no_grad():
        net[0].weight.fill_(0.0)
    resumed.update(net)                                     # continues: no copy, decay 0.98
    assert resumed.module[0].weight[0, 0].item() == pytest.approx(0.98, abs=1e-3)
    assert average.module[0].weight[0, 0].item() == pytest.approx(1.0, abs=1e-3)   # a copy
