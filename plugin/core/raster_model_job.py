"""What every job that applies a trained model to a raster shares (Classify Pixels, Detect
Objects, Classify Grid): the input raster, the model file, the optional grid model (a grid
model that picks the cells worth looking at) and the required main output.

This base adds behaviour only, no fields: each job keeps its own fields in its own order.
Nothing heavy at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .jobs import Job


class RasterModelJob(Job):
    """Base of the jobs with fields ``input`` (raster path), ``model`` (model file path) and
    ``output`` (path), and optionally ``grid_model``; paths are ``""`` when unset.

    ``output_missing`` is the message when OUTPUT is empty (what it is, what to choose).
    """

    output_missing: ClassVar[str] = "Output (OUTPUT) is required: choose a file name."
    #: The model card's ``task`` this tool needs (MODEL); a grid model (GRID_MODEL) is "grid".
    model_task: ClassVar[str] = ""
    memory_fix: ClassVar[str] = "Use fewer tiles per batch (BATCH_SIZE) or a smaller TILE_SIZE."

    def problems(self) -> list[str]:
        """The base checks, then: the input raster and the model files must exist, and OUTPUT
        is required (each a sentence with its fix)."""
        out = super().problems()
        if self.input and not Path(self.input).is_file():
            out.append(f"The input raster {self.input} does not exist: check INPUT.")
        if self.model and not Path(self.model).is_file():
            out.append(f"The model {self.model} does not exist: check MODEL.")
        grid_model = getattr(self, "grid_model", "")
        if grid_model and not Path(grid_model).is_file():
            out.append(f"The grid model {grid_model} does not exist: check GRID_MODEL.")
        if not self.output:
            out.append(self.output_missing)
        out += _task_problem(self.model, self.model_task)
        out += _task_problem(grid_model, "grid")
        return out


def _task_problem(path: str, task: str) -> list[str]:
    """A model file trained for another task than ``task``, as a sentence with the fix, before
    any work starts (a file that is no valid model is reported by the shared model checks of
    :mod:`.outputs`; reading the card needs the standard library only)."""
    if not task or not path or not Path(path).is_file():
        return []
    from .errors import UserError
    from .modelfile import read_model_card

    try:
        card = read_model_card(path, task=None)
    except UserError:
        return []
    if card.get("task") == task:
        return []
    try:
        read_model_card(path, task)
    except UserError as exc:
        return [str(exc)]
    return []


def model_default(value: float, card: dict, key: str, default: float) -> float:
    """A job's threshold ``value``, or when it is negative ("-1 = the model's") the model
    card's ``key`` (``default`` for a card without it): SCORE_THRESHOLD and NMS_IOU of the
    tools that apply an object model."""
    return float(card.get(key, default)) if value < 0 else float(value)


#: SCORE_THRESHOLD / NMS_IOU of the object tools: "the value stored in the model".
MODEL_VALUE = -1.0


def threshold_problems(**values: float) -> list[str]:
    """Sentences for thresholds (``SCORE_THRESHOLD=0.3, NMS_IOU=-1 …``) that are neither
    from 0 to 1 nor :data:`MODEL_VALUE` (the model's own value)."""
    return [f"{name} {value:g} is neither between 0 and 1 nor {MODEL_VALUE:g} (the model's "
            f"value): use a value from 0 to 1, or {MODEL_VALUE:g}."
            for name, value in values.items() if value != MODEL_VALUE and not 0 <= value <= 1]
