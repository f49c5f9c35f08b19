"""Training logs: metrics CSV, learning-curves PNG, final report (Markdown + JSON)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CSV_NAME = "metrics.csv"
CURVES_NAME = "learning_curves.png"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"


def append_csv(folder: Path, row: dict) -> Path:
    """Append ``row`` to ``metrics.csv`` (header from the first row written)."""
    path = folder / CSV_NAME
    new = not path.is_file()
    fields = list(row) if new else _header(path)
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k, "")) for k in fields})
    return path


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return next(csv.reader(f))


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def learning_curves(folder: Path, history: list[dict]) -> Path | None:
    """Loss and mean IoU per epoch (train and validation) as a PNG."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ys = [h.get(key) for h in history]
        if any(y is not None for y in ys):
            ax1.plot(epochs, [np.nan if y is None else y for y in ys], marker=".", label=label)
    losses = [h[k] for h in history for k in ("train_loss", "val_loss") if h.get(k)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax1.set_yscale("log")
    ax1.set_title("Loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    for key, label in (("train_miou", "train"), ("val_miou", "validation")):
        ys = [h.get(key) for h in history]
        if any(y is not None for y in ys):
            ax2.plot(epochs, [np.nan if y is None else y for y in ys], marker=".", label=label)
    ax2.set_title("Mean IoU")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    path = folder / CURVES_NAME
    fig.savefig(path)
    return path


def write_report(folder: Path, summary: dict, classes: list[dict], metrics: dict | None,
                 confusion: np.ndarray | None) -> tuple[Path, Path]:
    """``report.json`` and ``report.md``: run summary, per-class metrics, confusion matrix."""
    names = {int(c["id"]): c["name"] for c in classes}
    ids = sorted(names)
    data = dict(summary)
    data["classes"] = classes
    data["metrics"] = metrics
    data["confusion_matrix"] = None if confusion is None else {
        "class_ids": ids, "rows_truth_columns_prediction":
            np.asarray(confusion)[np.ix_(ids, ids)].astype(int).tolist()}
    json_path = folder / REPORT_JSON
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")

    lines = ["# Pixel segmentation training report", ""]
    for key in ("architecture", "encoder", "epochs_run", "best_epoch", "best_val_loss",
                "stopped", "seconds", "output_model", "output_last_model"):
        if key in summary:
            lines.append(f"- **{key.replace('_', ' ')}**: {summary[key]}")
    if metrics:
        lines += ["", f"Metrics of the best model on the {metrics.get('split', 'validation')} "
                      "patches:", "",
                  f"accuracy {metrics['accuracy']:.4f}, mean IoU {metrics['mean_iou']:.4f}, "
                  f"mean F1 {metrics['mean_f1']:.4f}", "",
                  "| class | precision | recall | F1 | IoU | pixels |",
                  "|---|---|---|---|---|---|"]
        for cid in ids:
            m = metrics["per_class"].get(cid) or metrics["per_class"].get(str(cid))
            if m:
                lines.append(f"| {cid} {names[cid]} | {m['precision']:.4f} | {m['recall']:.4f} "
                             f"| {m['f1']:.4f} | {m['iou']:.4f} | {m['support']} |")
    if confusion is not None:
        cm = np.asarray(confusion)[np.ix_(ids, ids)].astype(int)
        lines += ["", "Confusion matrix (rows: truth, columns: prediction, pixels):", "",
                  "| truth \\ prediction | " + " | ".join(names[i] for i in ids) + " |",
                  "|---|" + "---|" * len(ids)]
        for i, row in zip(ids, cm):
            lines.append(f"| {names[i]} | " + " | ".join(str(v) for v in row) + " |")
    md_path = folder / REPORT_MD
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path
