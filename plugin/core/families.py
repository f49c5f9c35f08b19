"""The model families: ONE row per family (after Deepness's ``ModelDefinition``).

A row names everything a family is: its model-file task, its job kinds, the
:class:`~.training.task.TrainingTask` subclass the one training engine runs, how its model files
load (``loader``), are checked (``card_check``) and export to ONNX (``exporter``), and its menu
entries (the dialogs that open them are named on the GUI side: ``plugin/gui/tools.py``). The job
catalogue (CLI, worker), the Processing provider, the Deep Learning menu, the Training Model
window and the model-file loader (:func:`.modelfile.load_model`) all read this table, so a new
family is one row here plus its own folder (``jobs``, ``task``, ``data``, ``network``,
``predict``, ``export``).

Strings only and no imports of the core: this module is imported inside QGIS, where torch must
never be loaded, and by every shared layer (it closes no import circle).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tool:
    """A tool of a family as menus show it: its job kind and menu label. Which dialog opens it
    is the GUI's business (``plugin/gui/tools.py`` ``DIALOGS``): the core names no GUI module."""

    kind: str
    label: str


@dataclass(frozen=True)
class Family:
    """One model family (the ``"module:name"`` strings are relative to ``plugin.core``)."""

    task: str                 # the model file's ``task`` field, e.g. "pixel_segmentation"
    title: str                # e.g. "Pixel Segmentation"
    train_kind: str           # job kind that trains it, e.g. "train_pixel_segmentation"
    classify_kinds: tuple[str, ...]    # job kinds that apply a model, e.g. ("classify_pixels",)
    task_class: str           # "module:Class" of its TrainingTask
    jobs_module: str          # module whose import registers its jobs
    loader: str               # "module:function": (path, card) → (predictor on the CPU, card)
    exporter: str = ""        # "module:function": (ExportOnnxJob, card, input scale, ctx) → result
    card_check: str = ""      # "module:function": card → what is wrong with the family's own
    #                           fields (a phrase) or None; light (read in QGIS, no torch)
    other_kinds: tuple[str, ...] = ()  # more job kinds offered in Processing
    train_tool: Tool | None = None     # entry in Deep Learning ▸ Train
    classify_tools: tuple[Tool, ...] = field(default_factory=tuple)  # ▸ Classify

    @property
    def job_kinds(self) -> tuple[str, ...]:
        return (self.train_kind, *self.classify_kinds, *self.other_kinds)

    @property
    def window_tool(self) -> Tool | None:
        """The classify tool the Training Model window offers for a model of this family."""
        return self.classify_tools[0] if self.classify_tools else None


FAMILIES: list[Family] = [
    Family("pixel_segmentation", "Pixel Segmentation", "train_pixel_segmentation",
           ("classify_pixels",), "segmentation.task:PixelSegmentationTask",
           "segmentation.jobs", loader="segmentation.modelfile:load_model",
           card_check="segmentation.modelfile:card_problem",
           exporter="segmentation.export:export_job",
           train_tool=Tool("train_pixel_segmentation", "Pixel Segmentation…"),
           classify_tools=(Tool("classify_pixels", "Classify Pixels…"),)),
    Family("object_detection", "Object Detection", "train_object_detection",
           ("detect_objects",), "detection.task:ObjectDetectionTask", "detection.jobs",
           loader="detection.modelfile:load_detector",
           card_check="detection.modelfile:card_problem",
           exporter="detection.export:export_job",
           train_tool=Tool("train_object_detection", "Object Detection…"),
           classify_tools=(Tool("detect_objects", "Detect Objects…"),)),
    Family("grid", "Grid Model", "train_grid_model", ("classify_grid",),
           "classification.task:GridTask", "classification.jobs",
           loader="classification.network:load_classifier",
           card_check="classification.modelfile:card_problem",
           train_tool=Tool("train_grid_model", "Grid Model…"),
           classify_tools=(Tool("classify_grid", "Classify Grid…"),)),
    Family("chip_classification", "Chip Classifier", "train_chip_classifier",
           ("classify_chips",), "classification.task:ChipTask", "classification.jobs",
           loader="classification.network:load_classifier",
           card_check="classification.modelfile:card_problem",
           train_tool=Tool("train_chip_classifier", "Chip Classifier…"),
           classify_tools=(Tool("classify_chips", "Classify Chips…"),)),
]

#: Job kinds every family shares (registered by shared modules, listed in Processing once).
SHARED_KINDS: tuple[str, ...] = ("export_onnx",)


def family(task: str) -> Family | None:
    """The family whose models have ``task`` (None when unknown)."""
    return next((f for f in FAMILIES if f.task == task), None)


def family_of_kind(kind: str) -> Family | None:
    """The family one of whose jobs is ``kind``."""
    return next((f for f in FAMILIES if kind in f.job_kinds), None)


def task_title(task: str | None) -> str:
    """``"Pixel Segmentation"`` for ``"pixel_segmentation"``; unknown tasks as they are."""
    fam = family(task or "")
    return fam.title if fam else repr(task or "unknown")


def job_kinds() -> list[str]:
    """Every family's job kinds (train, classify, others), in table order, then the shared
    ones."""
    return [k for f in FAMILIES for k in f.job_kinds] + list(SHARED_KINDS)


def exportable_titles() -> list[str]:
    """Titles of the families whose models export to ONNX."""
    return [f.title for f in FAMILIES if f.exporter]


def _resolve(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def import_job_modules() -> None:
    """Import each family's jobs module (registers its job classes)."""
    for f in FAMILIES:
        importlib.import_module(f"{__package__}.{f.jobs_module}")


def make_task(kind: str):
    """A fresh TrainingTask of the family trained by job ``kind`` (imports torch-side code)."""
    fam = next((f for f in FAMILIES if f.train_kind == kind), None)
    if fam is None:
        raise KeyError(f"No model family is trained by job kind {kind!r}.")
    return _resolve(fam.task_class)()


def load_function(task: str, path=None) -> Callable:
    """The loader of ``task``'s family: ``(path, card) → (predictor, card)``. Raises KeyError
    for a task no family has (the model-file reader refuses such cards before)."""
    fam = family(task)
    if fam is None:
        raise KeyError(f"No model family has task {task!r} ({path}).")
    return _resolve(fam.loader)


def card_check_function(task: str) -> Callable | None:
    """The check of ``task``'s family's own card fields (``card → phrase or None``), or None."""
    fam = family(task)
    return _resolve(fam.card_check) if fam and fam.card_check else None


def export_function(task: str) -> Callable | None:
    """The ONNX export of ``task``'s family, or None when it has none."""
    fam = family(task)
    return _resolve(fam.exporter) if fam and fam.exporter else None
