"""Generalized cross-entropy (segmentation/losses.py): a label the network confidently
contradicts pulls far less than under cross-entropy, and not at all once truncated; soft targets
agree with hard ones, and LOSS auto picks it where unlabelled pixels are background."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from plugin.core.segmentation.losses import (  # noqa: E402
    GCE_Q,
    TRUNCATE_K,
    SegmentationLoss,
    soft_cross_entropy,
    truncated,
    truncation_epoch,
    weighted_cross_entropy,
)
from plugin.core.segmentation.metrics import IGNORE  # noqa: E402


def _logit_grads(q: float) -> torch.Tensor:
    """Gradient magnitude per pixel of a 1 × 2 image, both labelled class 1: pixel 0 where the
    network gives the label p ≈ 0.01 (a contradicted label), pixel 1 where p ≈ 0.9."""
    logits = torch.tensor([[[[4.6, 0.0]], [[0.0, 2.2]]]], requires_grad=True)   # (1, 2, 1, 2)
    mask = torch.ones(1, 1, 2, dtype=torch.long)
    weighted_cross_entropy(logits, mask, torch.ones(2), q).backward()
    return logits.grad.abs().sum(1)[0, 0]


def test_a_contradicted_label_pulls_less_under_generalized_cross_entropy():
    ce, gce = _logit_grads(0.0), _logit_grads(GCE_Q)
    p = torch.softmax(torch.tensor([[4.6, 0.0], [0.0, 2.2]]), 1)[:, 1]
    # the gradient is cross-entropy's times p^q (Zhang & Sabuncu 2018)
    torch.testing.assert_close(gce / ce, p ** GCE_Q, rtol=1e-4, atol=1e-6)
    assert gce[0] / ce[0] < 0.05 and gce[1] / ce[1] > 0.9
    # relative to a pixel the network agrees with, the contradicted label pulls 20× less
    assert (gce[0] / gce[1]) < (ce[0] / ce[1]) / 20


def test_soft_one_hot_targets_equal_hard_labels_and_ignored_pixels_drop_out():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    mask = torch.randint(0, 3, (2, 5, 5))
    mask[0, 0] = IGNORE
    soft = torch.nn.functional.one_hot(mask.clamp_max(2), 3).permute(0, 3, 1, 2).float()
    soft[0, :, 0] = 0.0                      # ignored pixels: all-zero targets
    w = torch.tensor([1.0, 2.0, 3.0])
    for q in (0.0, GCE_Q):
        torch.testing.assert_close(soft_cross_entropy(logits, soft, w, q),
                                   weighted_cross_entropy(logits, mask, w, q))
    assert weighted_cross_entropy(logits, torch.full_like(mask, IGNORE), w, GCE_Q).item() == 0.0


def test_loss_terms_are_named_and_unknown_losses_refused():
    loss_fn = SegmentationLoss("gce_dice", torch.ones(2))
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2] = 1
    total, terms = loss_fn(torch.randn(1, 2, 4, 4), mask, torch.zeros(0))
    assert set(terms) == {"gce", "dice", "truncated"} and terms["truncated"].item() == 0.0
    torch.testing.assert_close(total, terms["gce"] + terms["dice"])
    with pytest.raises(ValueError, match="Unknown loss 'bce'"):
        SegmentationLoss("bce", torch.ones(2))


def test_auto_loss_is_generalized_where_unlabelled_pixels_are_background():
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.core.segmentation.losses import LOSSES, loss_for

    assert TrainPixelSegmentationJob().loss == "auto"
    assert loss_for("auto", "background") == "gce_dice"
    assert loss_for("auto", "unknown") == "ce_dice"
    assert all(loss_for(kind, "background") == kind for kind in LOSSES)


def test_truncation_starts_after_a_fifth_of_the_epochs_and_never_at_the_first():
    assert [truncation_epoch(n) for n in (1, 2, 10, 25, 100)] == [1, 1, 2, 5, 20]
    gce = SegmentationLoss("gce_dice", torch.ones(2))
    ce = SegmentationLoss("ce_dice", torch.ones(2))
    learnt = torch.tensor([True, True])
    for epoch, on in ((0, False), (4, False), (5, True), (24, True)):
        gce.set_epoch(epoch, 25, learnt)
        ce.set_epoch(epoch, 25, learnt)
        assert gce.truncate is on and ce.truncate is False
    gce.set_epoch(5, 25, torch.tensor([False, False]))   # no class learnt yet
    assert gce.truncate is False


def test_truncated_loss_leaves_out_the_labels_the_network_contradicts():
    # 1 × 2 × 1 × 4: labels 1, 1, 0, ignored; the network gives them p ≈ 0.01, 0.9, 0.6, -
    logits = torch.tensor([[[[4.6, 0.0, 0.4, 0.0]], [[0.0, 2.2, 0.0, 3.0]]]], requires_grad=True)
    mask = torch.tensor([[[1, 1, 0, IGNORE]]])
    kept, soft, share = truncated(logits, mask, torch.zeros(0), TRUNCATE_K)
    assert kept.tolist() == [[[IGNORE, 1, 0, IGNORE]]] and soft.numel() == 0
    assert share.item() == pytest.approx(1 / 3)
    # soft targets: the same pixel drops out (all-zero target), the others keep theirs
    one_hot = torch.nn.functional.one_hot(mask.clamp_max(1), 2).permute(0, 3, 1, 2).float()
    one_hot[..., 3] = 0.0
    kept_soft_mask, kept_soft, _ = truncated(logits, mask, one_hot, TRUNCATE_K)
    assert kept_soft[0, :, 0, 0].tolist() == [0.0, 0.0]
    torch.testing.assert_close(kept_soft[..., 1:3], one_hot[..., 1:3])
    assert kept_soft_mask.tolist() == kept.tolist()
    # truncated, the contradicted pixel gets no gradient from either term; before, it had most
    loss_fn = SegmentationLoss("gce_dice", torch.ones(2))
    loss_fn.set_epoch(5, 25, torch.tensor([True, True]))
    total, terms = loss_fn(logits, mask, torch.zeros(0))
    assert set(terms) == {"gce", "dice", "truncated"}
    total.backward()
    grad = logits.grad.abs().sum(1)[0, 0]
    assert grad[0].item() == 0.0 and grad[1].item() > 0 and grad[2].item() > 0
    for epoch, learnt in ((4, [True, True]), (5, [True, False]), (5, None)):
        logits.grad = None   # before the epoch, or class 1 (pixel 0's) not learnt: it pulls
        loss_fn.set_epoch(epoch, 25, None if learnt is None else torch.tensor(learnt))
        loss_fn(logits, mask, torch.zeros(0))[0].backward()
        assert logits.grad.abs().sum(1)[0, 0, 0].item() > 0


def test_a_class_counts_as_learnt_when_most_of_its_training_pixels_are_right():
    from plugin.core.segmentation.losses import learnt_classes

    confusion = [[90, 10, 0], [30, 70, 0], [6, 0, 4]]   # rows: labels
    assert learnt_classes(confusion).tolist() == [True, True, False]
    assert learnt_classes([[5, 0], [0, 0]]).tolist() == [True, False]
