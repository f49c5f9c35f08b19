"""Training logs of the engine: metrics CSV, TensorBoard rows, learning-curves PNG, final report
(Markdown + JSON)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CSV_NAME = "metrics.csv"
CURVES_NAME = "learning_curves.png"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"


def start_csv(folder: Path, resumed: bool) -> Path | None:
    """Before a run writes ``metrics.csv``: a fresh run (not ``resumed``) moves an earlier
    run's file aside to ``metrics.<its time>.csv`` so rows of two runs never mix and nothing is
    lost; a resumed run appends to it. The moved file's path, or None."""
    import time

    path = folder / CSV_NAME
    if resumed or not path.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    old = folder / f"metrics.{stamp}.csv"
    path.replace(old)
    return old


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


def figure_class():
    """matplotlib's ``Figure`` on the Agg backend (``plugin.core`` silences the "Unable to
    import Axes3D" warning of a Debian matplotlib beside the pip one)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    return Figure


def _legend(ax) -> None:
    """A legend when the axes have labelled lines (none when every value was missing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def learning_curves(folder: Path, history: list[dict], keys: tuple[str, ...] = (),
                    title: str = "") -> Path | None:
    """Loss per epoch (train and validation) and, in a second panel, the row ``keys`` (e.g.
    ``("train_miou", "val_miou")``) as a PNG."""
    if not history:
        return None
    Figure = figure_class()
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9 if keys else 4.5, 3.6), dpi=100)
    axes = fig.subplots(1, 2 if keys else 1)
    ax1, ax2 = (axes[0], axes[1]) if keys else (axes, None)

    def plot(ax, key):
        ys = [h.get(key) for h in history]
        if any(y is not None for y in ys):
            label = {"train": "train", "val": "validation"}.get(key.split("_")[0], key)
            ax.plot(epochs, [np.nan if y is None else y for y in ys], marker=".", label=label)

    for key in ("train_loss", "val_loss"):
        plot(ax1, key)
    losses = [h[k] for h in history for k in ("train_loss", "val_loss") if h.get(k)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax1.set_yscale("log")
    ax1.set_title("Loss")
    ax1.set_xlabel("epoch")
    _legend(ax1)
    if ax2 is not None:
        for key in keys:
            plot(ax2, key)
        ax2.set_title(title or ", ".join(keys))
        ax2.set_xlabel("epoch")
        ax2.set_ylim(0, 1)
        _legend(ax2)
    fig.tight_layout()
    path = folder / CURVES_NAME
    fig.savefig(path)
    return path


def log_epoch(writer, row: dict, images: list) -> None:
    """Write an epoch row to TensorBoard: ``train_x``/``val_x`` as ``x/train``/``x/val`` (one
    chart with both curves), other keys as they are; ``images``: [(tag, HWC uint8)]."""
    step = int(row["epoch"])
    for key, value in row.items():
        if key in ("epoch", "seconds") or not isinstance(value, (int, float)):
            continue
        split, _, metric = key.partition("_")
        tag = f"{metric}/{split}" if split in ("train", "val") and metric else key
        writer.add_scalar(tag, value, step)
    for tag, image in images:
        writer.add_image(tag, image, step, dataformats="HWC")
    writer.flush()


def write_report(folder: Path, title: str, summary: dict, data: dict,
                 section: str) -> tuple[Path, Path]:
    """``report.json`` (``summary`` + ``data``) and ``report.md`` (``title``, the summary as a
    list, then the task's markdown ``section``)."""
    json_path = folder / REPORT_JSON
    json_path.write_text(json.dumps({**summary, **data}, indent=2, default=str) + "\n",
                         encoding="utf-8")
    lines = [f"# {title} training report", ""]
    lines += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in summary.items()
              if not isinstance(v, (dict, list))]
    if section:
        lines += ["", section.rstrip()]
    md_path = folder / REPORT_MD
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def scatter_plot(path: Path, truth: np.ndarray, predicted: np.ndarray, label: str = "") -> Path:
    """A PNG at ``path`` of ``predicted`` against ``truth`` (1-D arrays of the same length, in
    the unit ``label`` names) with the 1:1 line: how a regression model's values spread around
    the truth."""
    Figure = figure_class()
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.subplots()
    ax.scatter(truth, predicted, s=3, alpha=0.3, linewidths=0)
    lo = float(min(np.min(truth), np.min(predicted)))
    hi = float(max(np.max(truth), np.max(predicted)))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="1:1")
    ax.set_xlabel(f"true {label}".strip())
    ax.set_ylabel(f"predicted {label}".strip())
    ax.set_title(f"Predicted against true ({len(truth)} pixels)")
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path)
    return path
