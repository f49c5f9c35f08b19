"""Imbalanced classes and training length of the grid model and the chip classifier (issue 19):
balanced sampling and tuned decision offsets find a rare class that the plain training never
answers, the offsets are in the model card and decide Classify Chips, the grid model draws
random windows that keep off the validation cells, and the step count is shown and warned
about before training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from plugin.core.classification.jobs import (
    ChipSummaryJob,
    ClassifyChipsJob,
    TrainChipClassifierJob,
    TrainGridModelJob,
)
from plugin.core.classification.metrics import decide, tune_offsets
from plugin.core.classification.synthetic import make_grid_scene, make_imbalanced_chips
from plugin.core.jobs import RecordingContext
from plugin.core.training.length import MIN_STEPS

FAST = {"architecture": "resnet18", "device": "cpu", "num_workers": 0}


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _chips(csv_path: Path) -> list[str]:
    return [r["chip"] for r in _rows(csv_path)]


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * float((pred & truth).sum()) / max(float(truth.sum() + pred.sum()), 1.0)


def _minority_f1(csv_path: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """(rare F1 of Classify Chips' classes, (N, 2) probabilities, (N,) rare answers)."""
    rows = _rows(csv_path)
    truth = np.array([Path(r["chip"]).parent.name == "rare" for r in rows])
    pred = np.array([r["class"] == "rare" for r in rows])
    probs = np.array([[float(r["prob_common"]), float(r["prob_rare"])] for r in rows])
    return _f1(pred, truth), probs, pred


def test_balanced_defaults_find_a_rare_class_the_plain_training_never_answers(tmp_path):
    """15 % "rare" chips whose band-0 mean overlaps the common ones' (separation 1 σ: the best
    possible rare F1 is about 0.42). The old default, no class balance (CLASS_BALANCE none) and
    the plain argmax, answers "common" for every held-out chip (rare F1 0); the default
    (balanced sampling + offsets tuned on validation, used by Classify Chips) reaches a rare F1
    above 0.25."""
    make_imbalanced_chips(tmp_path / "train", n=300, separation=1.0, seed=1)
    make_imbalanced_chips(tmp_path / "test", n=200, separation=1.0, seed=2)
    f1 = {}
    for balance in ("none", "sampling"):
        model = tmp_path / f"{balance}.dltmodel.safetensors"
        job = TrainChipClassifierJob(input=str(tmp_path / "train"), epochs=4, test_size=0,
                                     output_model=str(model), class_balance=balance, **FAST)
        assert TrainChipClassifierJob().class_balance == "sampling"
        job.validate()
        result = job.run(RecordingContext())
        assert result["steps"] == 4 * 9     # the automatic length: 9 batches an epoch at least
        out = tmp_path / f"{balance}.csv"
        ClassifyChipsJob(input=str(tmp_path / "test"), model=str(model), output=str(out),
                         device="cpu").run(RecordingContext())
        f1[balance], probs, pred = _minority_f1(out)
        truth = np.array(["rare" in k for k in _chips(out)])
        f1[f"{balance}, argmax"] = _f1(probs.argmax(1) == 1, truth)
        # the card's offsets decide Classify Chips' class
        from plugin.core.classification.network import load_classifier

        _, card = load_classifier(model, "chip_classification")
        assert len(card["decision_offsets"]) == 2 and card["class_balance"] == balance
        assert card["tta"] is True     # AUGMENT (flips and turns): scored on the 8 of them
        assert np.array_equal(pred, decide(probs, card["decision_offsets"]) == 1)
    assert f1["none, argmax"] < 0.1 and f1["sampling"] > 0.25, f1


def test_offsets_tuned_for_the_minority_f1_and_used_by_the_decision():
    """Under-confident rare-class probabilities: the argmax never answers the rare class, the
    tuned offset makes it answer it with a high F1; a class with too few validation samples and
    the most frequent class keep 0."""
    rng = np.random.default_rng(0)
    truth = (rng.random(400) < 0.15).astype(np.int64)
    p_rare = np.clip(0.1 + 0.25 * truth + rng.normal(0, 0.05, 400), 0.01, 0.49)
    probs = np.stack([1 - p_rare, p_rare], 1)
    assert not decide(probs).any()
    offsets = tune_offsets(probs, truth)
    assert offsets[0] == 0.0 and offsets[1] > 0
    pred = decide(probs, offsets) == 1
    tp = (pred & (truth == 1)).sum()
    assert 2 * tp / (pred.sum() + truth.sum()) > 0.9
    assert tune_offsets(probs[:50] * 0 + 0.5, np.zeros(50, np.int64)) == [0.0, 0.0]


def test_chip_summary_shows_the_steps_and_warns_below_min_steps(tmp_path):
    """The pre-flight summary gives the optimiser steps of the automatic length (every chip
    once an epoch, at least 9 batches: 315 steps with the default 35 epochs) and warns below
    MIN_STEPS."""
    make_imbalanced_chips(tmp_path / "chips", n=60, seed=3)
    summary = ChipSummaryJob(input=str(tmp_path / "chips"), test_size=0).run(RecordingContext())
    length = summary["length"]
    assert length["per_epoch"] == 9 and length["total"] == 35 * 9 >= MIN_STEPS
    assert "315 optimiser steps" in length["text"] and not length["warning"]
    short = ChipSummaryJob(input=str(tmp_path / "chips"), test_size=0, epochs=3,
                           train_size=64, batch_size=32).run(RecordingContext())
    assert short["length"]["total"] == 6
    assert "Only 6 training steps" in short["length"]["warning"]
    assert short["length"]["warning"] in short["warnings"]


def test_grid_windows_move_every_epoch_and_keep_off_validation_cells(tmp_path):
    """Grid training draws new random windows every epoch (offsets of up to half a cell), one
    pass over the training cells and at least 3 batches (300 steps with the default 100
    epochs), none over a validation cell by more than a quarter, whose hidden pixels never
    reach the network."""
    from plugin.core.classification.gridwindows import MAX_HIDDEN
    from plugin.core.classification.task import GridTask

    scene = make_grid_scene(tmp_path / "scene", cells=6, cell=32, seed=4, roles=False)
    job = TrainGridModelJob(project=str(scene.project), grid_size=32, epochs=2, batch_size=4,
                            output_model=str(tmp_path / "g.dltmodel.safetensors"), **FAST)
    task = GridTask()
    ctx = RecordingContext()
    task.prepare(job, ctx, tmp_path / "logs")
    assert task.steps_per_epoch(job) == max(3, -(-len(task.windows.anchors) // 4)) > 3
    assert task.windows.hidden
    draws = [task.windows.draw(48, np.random.default_rng([0, e])) for e in range(2)]
    assert [(p.row, p.col) for p in draws[0]] != [(p.row, p.col) for p in draws[1]]
    off_grid = sum(p.row % 32 or p.col % 32 for p in draws[0])
    assert off_grid > 24
    for p in draws[0]:
        boxes = task.windows.hidden_boxes(p.source, p.row, p.col)
        assert sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in boxes) <= MAX_HIDDEN * 32 * 32
    ds = task.train_ds
    ds.patches, ds.augment = draws[0], None   # (flips would move the hidden box)
    for i, p in enumerate(draws[0]):
        boxes = task.windows.hidden_boxes(p.source, p.row, p.col)
        if boxes:
            image, _ = ds[i]
            r0, c0, r1, c1 = boxes[0]
            assert not image[:, r0:r1, c0:c1].any()
            break
    else:
        raise AssertionError("no window touched a validation cell")
