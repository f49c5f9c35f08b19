"""What marks a training's log folder (standard library only): the files a run writes there, and
the mark it leaves first, so that a failed run's folder is known as a log (its rerun is not
refused) and a log folder is never read as data (a class of chips).
"""

from __future__ import annotations

import re
from pathlib import Path

#: Files a training run writes in its log folder (:mod:`.training.report`).
LOG_FILES = ("metrics.csv", "report.json", "report.md", "learning_curves.png")
#: The mark a training leaves in its log folder before it writes anything else there: a run that
#: failed early (only label rasters made) is still known as a training log, and its rerun is
#: not refused.
LOG_MARK = ".dltrainer-log"
#: What marks a log folder besides :data:`LOG_MARK` (runs of versions without it).
LOG_ENTRIES = (*LOG_FILES, LOG_MARK, "tensorboard")
_MOVED_CSV = re.compile(r"metrics\.\d{8}-\d{6}\.csv")   # an earlier run's, moved aside


def mark_log_folder(folder: str | Path) -> None:
    """Create the log folder ``folder`` with its :data:`LOG_MARK` (the training engine, first
    thing of every run)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / LOG_MARK).write_text("A training log folder (Deep Learning Trainer).\n",
                                 encoding="utf-8")


def is_training_log(folder: str | Path) -> bool:
    """True when ``folder`` holds what a training run makes in its log folder
    (:data:`LOG_ENTRIES`, TensorBoard event files, a rank's private folder, an earlier run's
    moved ``metrics.<time>.csv``); label rasters alone are not enough (a folder of the user's
    label rasters is no log)."""
    try:
        names = [p.name for p in Path(folder).iterdir()]
    except OSError:
        return False
    return any(n in LOG_ENTRIES or n.startswith(("events.out.tfevents", ".rank"))
               or _MOVED_CSV.fullmatch(n) for n in names)
