"""Train Chip Classifier: one or two runs of the training engine (GBDX's two rounds), then the
test-set report of the final model.

Round 1 writes ``<output stem>_round1.dltmodel.safetensors`` (logs in ``<log folder>/round1``)
when two rounds are asked for; round 2 fine-tunes its best model (last layer only, original
class distribution, EPOCHS_2, LEARNING_RATE_2, TRAIN_SIZE_2) into OUTPUT_MODEL (logs in
``<log folder>/round2``). The test report (``test_report.md`` / ``.json`` in the log folder):
precision, recall, F1, F-beta and AP per class and the confusion matrix on the held-out chips.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..jobs import JobContext
from .metrics import classification_metrics, metrics_markdown
from .task import ChipTask


def round1_path(output_model: str) -> str:
    p = Path(output_model)
    stem = p.name.split(".")[0] or "model"
    return str(p.with_name(f"{stem}_round1.dltmodel.safetensors"))


def train_chip_classifier(job, ctx: JobContext) -> dict:
    from ..training.engine import run_training

    log = Path(job.resolved_log_folder())
    if not job.two_rounds:
        task = ChipTask(1)
        result = run_training(job, task, ctx)
    else:
        first = dataclasses.replace(job, output_model=round1_path(job.output_model),
                                    output_last_model="", log_folder=str(log / "round1"))
        task1 = ChipTask(1)
        ctx.log("Round 1: balanced classes, every layer.")
        r1 = run_training(first, task1, ctx)
        if r1.get("cancelled") or not r1.get("output_model"):
            return {**r1, "round": 1}
        second = dataclasses.replace(job, epochs=job.epochs_2, learning_rate=job.learning_rate_2,
                                     init_model=first.output_model, resume_from="",
                                     log_folder=str(log / "round2"))
        ctx.log("Round 2: original class distribution, last layer only.")
        task = ChipTask(2, task1.data)
        result = {**run_training(second, task, ctx), "round1": r1}
    test = task.data.splits["test"]
    if test and result.get("output_model") and not result.get("cancelled"):
        ctx.progress("test", 0, 1, "Test set")
        m = evaluate_chips(result["output_model"], test, task.data, job.batch_size)
        md = metrics_markdown(m, f"Test set ({len(test)} chips held out)")
        log.mkdir(parents=True, exist_ok=True)
        (log / "test_report.md").write_text(md, encoding="utf-8")
        (log / "test_report.json").write_text(json.dumps(m, indent=1), encoding="utf-8")
        report = Path(result["report"])
        if report.is_file():
            report.write_text(report.read_text(encoding="utf-8") + "\n" + md, encoding="utf-8")
        ctx.artifact("test_report", str(log / "test_report.md"))
        result["test"] = {k: v for k, v in m.items() if k != "confusion_matrix"}
        result["test_report"] = str(log / "test_report.md")
    return result


def evaluate_chips(model_path: str, chips, data, batch_size: int = 32) -> dict:
    """Metrics of a chip classifier (file) on ``chips`` with their labels, through the same
    predictor Classify Chips uses (card thresholds for multi-label, decision offsets for
    single-label)."""
    from .chipsplit import chip_targets
    from .network import load_classifier
    from .predict_chips import predict_chips

    predictor, card = load_classifier(model_path, "chip_classification")
    probs = predict_chips(predictor, card, [c.path for c in chips], batch_size)
    names = [c["name"] for c in card["classes"]]
    targets = chip_targets(chips, names, bool(card["multi_label"]))
    return classification_metrics(probs, targets, names, bool(card["multi_label"]),
                                  card.get("thresholds"), float(card.get("beta", 2.0)),
                                  card.get("decision_offsets"))
