"""The training engine keeps the last epoch's model when the family says its validation data are
too few to rank epochs (``TrainingTask.unranked_reason``), still validating every epoch, and the
model card says which rule chose the model (``state.best_rule``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from plugin.core.jobs import RecordingContext  # noqa: E402
from plugin.core.training.engine import run_training  # noqa: E402
from plugin.core.training.task import TrainingTask  # noqa: E402


class FallingScores(TrainingTask):
    """A one-weight model whose validation score falls every epoch: ranking keeps epoch 1."""

    name, title, best_metric, best_mode = "toy", "Toy", "val_score", "max"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def prepare(self, job, ctx, log_folder):
        self.classes = [{"id": 0, "name": "background", "color": "#000000"}]
        self.bands, self.mean, self.std = 1, [0.0], [1.0]

    def build_network(self, base_card):
        return torch.nn.Linear(1, 1)

    def steps_per_epoch(self, job):
        return 2

    def train_loader(self, epoch, device):
        return [torch.ones(2, 1)] * 2

    def train_step(self, network, batch, device):
        loss = network(batch).pow(2).mean()
        return loss, {}

    def val_loader(self, device):
        return [None]

    def validate(self, network, loader, device, epoch):
        return {"val_score": 1.0 / (epoch + 1)}

    def unranked_reason(self):
        return self.reason


def _job(tmp_path):
    return SimpleNamespace(
        epochs=3, learning_rate=0.01, seed=0, device="cpu", patience=0, resume_from="",
        init_model="", batch_size=2, num_workers=0, log_folder=str(tmp_path / "logs"),
        output_model=str(tmp_path / "best.safetensors"),
        output_last_model=str(tmp_path / "last.safetensors"),
        to_dict=lambda: {"params": {}})


def _card(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["card"])


@pytest.mark.parametrize("reason", ["", "Only 3 objects validate."])
def test_too_little_validation_keeps_the_last_epoch_and_says_why(tmp_path, reason):
    ctx = RecordingContext()
    result = run_training(_job(tmp_path), FallingScores(reason), ctx)
    card = _card(tmp_path / "best.safetensors")
    if reason:
        assert result["best_epoch"] == 3 and result["best_metric"] == "last epoch"
        assert card["state"]["best_rule"] == f"last epoch: {reason}"
        assert card["metrics"]["val_score"] == pytest.approx(1 / 3)   # still validated
        assert any(reason in e.get("message", "") and e.get("level") == "warning"
                   for e in ctx.events)
    else:
        assert result["best_epoch"] == 1 and result["best_metric"] == "val_score"
        assert card["state"]["best_rule"] == "highest val_score"
