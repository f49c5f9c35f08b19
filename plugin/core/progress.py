"""One overall progress per job, from the worker's phase events, that only goes up.

A job reports progress per phase (``prepare 1/3``, ``batch 5/20`` of an epoch, ``epoch 2/10``,
``tile 40/90``, ``polygons 0/1``…). Shown as they come, the task manager's bar jumps back and
forth as phases overwrite each other. :class:`OverallProgress` maps each event to a share of the
whole job with the job class's ``progress_phases`` (phase name → weight, in order) and never lets
the result go down.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_EPOCH = re.compile(r"epoch\s+(\d+)", re.IGNORECASE)
#: Phases reported inside another phase's step: ``batch b/n`` of ``epoch e`` (read from the
#: message "epoch e").
NESTED = {"batch": "epoch"}


class OverallProgress:
    """Overall progress in percent (0–100), monotonic.

    ``phases``: ``(name, weight)`` in the order the job runs them (weights need not sum to 1).
    Without phases each phase's own ``step/total`` is used (still never going down). Events of
    phases not listed leave the value unchanged.
    """

    def __init__(self, phases: Sequence[tuple[str, float]] = ()) -> None:
        total = sum(w for _n, w in phases) or 1.0
        self.start: dict[str, float] = {}
        self.weight: dict[str, float] = {}
        done = 0.0
        for name, weight in phases:
            self.start[name], self.weight[name] = done / total, weight / total
            done += weight
        self.value = 0.0
        self._outer_total: dict[str, int] = {}

    def update(self, event: dict) -> float | None:
        """The overall percent after ``event`` (None when the event is no progress event)."""
        if event.get("event") != "progress":
            return None
        phase = str(event.get("phase", ""))
        step, total = float(event.get("step", 0) or 0), float(event.get("total", 0) or 0)
        fraction = min(1.0, max(0.0, step / total)) if total > 0 else 0.0
        if phase in NESTED and NESTED[phase] in self.start:
            outer = NESTED[phase]
            found = _EPOCH.search(str(event.get("message", "")))
            outer_total = self._outer_total.get(outer, 0)
            if not found or not outer_total:
                return self.value
            inner = min(1.0, (int(found.group(1)) - 1 + fraction) / outer_total)
            share = self.start[outer] + self.weight[outer] * inner
        elif phase in self.start:
            if total > 0:
                self._outer_total[phase] = int(total)
            share = self.start[phase] + self.weight[phase] * fraction
        elif not self.start:
            share = fraction
        else:
            return self.value
        self.value = max(self.value, 100.0 * share)
        return self.value

    def set_outer_total(self, phase: str, total: int) -> None:
        """Tell the number of steps of an outer phase before its first event (e.g. epochs)."""
        if total > 0:
            self._outer_total[phase] = int(total)


def for_job(job) -> OverallProgress:
    """The progress tracker for ``job`` (its class's ``progress_phases``; epochs known ahead)."""
    tracker = OverallProgress(getattr(type(job), "progress_phases", ()) or ())
    epochs = getattr(job, "epochs", 0)
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        tracker.set_outer_total("epoch", epochs)
    return tracker
