"""The hyperparameter search (TRIALS): its space for every family, pruning and time limits, and a
real search on a synthetic scene that keeps the best trial's model."""

from __future__ import annotations

import csv
import time

import pytest

from plugin.core import job_catalog  # noqa: F401  (registers every job class)
from plugin.core.families import FAMILIES
from plugin.core.jobs import RecordingContext, job_class
from plugin.core.modelfile import read_model_card
from plugin.core.training.search import TrialContext, search_space
from tests.test_segmentation_train import scene_project, train_job


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.task)
def test_every_familys_search_space_holds_the_job_as_given(family):
    job = job_class(family.train_kind)()
    space = {d.field: d for d in search_space(job)}
    lr = space["learning_rate"]
    assert lr.low < job.learning_rate < lr.high
    for d in space.values():
        if d.choices:
            assert job.concrete_choice(d.field, getattr(job, d.field)) in d.choices
            assert len(d.choices) > 1 and len(set(d.choices)) == len(d.choices)
    if hasattr(job, "architecture"):
        assert "architecture" in space


def test_the_search_tries_the_loss_auto_resolves_to_once():
    """LOSS auto is gce_dice or ce_dice by UNLABELLED_PIXELS: not a loss of its own."""
    job = job_class("train_pixel_segmentation")()
    losses = next(d.choices for d in search_space(job) if d.field == "loss")
    assert "auto" not in losses and sorted(losses) == sorted(
        ("ce_dice", "ce", "focal", "tversky", "gce_dice"))
    assert job.concrete_choice("loss", job.loss) == "gce_dice"
    unknown = job_class("train_pixel_segmentation")(unlabelled_pixels="unknown")
    assert unknown.concrete_choice("loss", "auto") == "ce_dice"


class _Trial:
    """Stands for an Optuna trial: records the reports, prunes when told."""

    def __init__(self, prune_after: int) -> None:
        self.reported: list[tuple[float, int]] = []
        self.prune_after = prune_after

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reported) >= self.prune_after


def test_a_pruned_trial_stops_the_engine_and_progress_runs_on_across_trials():
    parent = RecordingContext()
    ctx = TrialContext(parent, _Trial(prune_after=2), number=2, trials=4, metric="val_miou",
                       deadline=time.monotonic() + 60)
    ctx.progress("epoch", 1, 5, "epoch 1/5", val_miou=0.3)
    assert not ctx.cancelled
    ctx.progress("epoch", 2, 5, "epoch 2/5", val_miou=0.35)
    assert ctx.cancelled and ctx.pruned and ctx.trial.reported == [(0.3, 0), (0.35, 1)]
    steps = [(e["step"], e["total"]) for e in parent.events if e["event"] == "progress"]
    assert steps == [(6, 20), (7, 20)]     # trial 2 of 4: epochs 6 and 7 of 20 in all


def test_a_trial_past_its_time_asks_the_engine_to_stop():
    ctx = TrialContext(RecordingContext(), _Trial(prune_after=99), 1, 2, "val_miou",
                       deadline=time.monotonic() - 1)
    assert ctx.cancelled and ctx.timed_out and not ctx.pruned


def test_a_search_cannot_resume(tmp_path):
    last = tmp_path / "last.dltmodel.safetensors"
    last.write_bytes(b"x")
    job = job_class("train_pixel_segmentation")(
        project=str(tmp_path / "p.gpkg"), trials=3, resume_from=str(last),
        output_model=str(tmp_path / "m.dltmodel.safetensors"))
    assert any("TRIALS" in p and "RESUME_FROM" in p for p in job.problems())


def test_search_runs_trials_and_keeps_the_best_model(tmp_path):
    _scenes, project = scene_project(tmp_path, size=128, seeds=(0, 1))
    job = train_job(project, tmp_path, patch_size=64, epochs=2, steps_per_epoch=3,
                    batch_size=4, trials=3, search_minutes=3.0)
    ctx = RecordingContext()

    result = job.run(ctx)

    search = result["search"]
    with open(tmp_path / "best_logs" / "search" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == search["trials"] == 3
    assert rows[0]["learning_rate"] == str(job.learning_rate)    # the job as given comes first
    assert (tmp_path / "best_logs" / "search" / "trials.png").stat().st_size > 0
    scores = {int(r["trial"]): float(r["val_miou"]) for r in rows if r["val_miou"]}
    best = search["best_trial"]
    assert scores[best] == max(scores.values()) >= search["first_score"]
    # the output model is the best trial's model, byte for byte, and says what it was trained with
    trial_model = tmp_path / "best_logs" / "search" / f"trial_{best}" / "model.dltmodel.safetensors"
    assert (tmp_path / "best.dltmodel.safetensors").read_bytes() == trial_model.read_bytes()
    card = read_model_card(tmp_path / "best.dltmodel.safetensors", "pixel_segmentation")
    for name, value in search["best_params"].items():
        assert card["training"][name] == value
    assert (tmp_path / "last.dltmodel.safetensors").is_file()
    logs = [e["message"] for e in ctx.events if e["event"] == "log"]
    assert any(m.startswith("Hyperparameter search: 3 trials") for m in logs)
    assert any(m.startswith("Best trial:") for m in logs)


def test_a_trial_whose_epochs_do_not_fit_its_time_is_fitted_after_a_few_batches():
    ctx = TrialContext(RecordingContext(), _Trial(prune_after=99), 1, 4, "val_miou",
                       deadline=time.monotonic() + 2.0, epochs=25)
    ctx.progress("batch", 1, 10, "epoch 1")
    time.sleep(0.3)
    for n in range(2, 5):
        ctx.progress("batch", n, 10, "epoch 1")
    # 0.1 s per batch, 10 batches (+ margin) per epoch: about 1.25 s an epoch, one fits in 2 s
    assert ctx.fitted_epochs == 1 and ctx.cancelled
    roomy = TrialContext(RecordingContext(), _Trial(prune_after=99), 1, 4, "val_miou",
                         deadline=time.monotonic() + 600, epochs=25)
    for n in range(1, 5):
        roomy.progress("batch", n, 10, "epoch 1")
    assert roomy.fitted_epochs == 0 and not roomy.cancelled
