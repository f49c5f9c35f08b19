"""The model families: ONE row per family (after Deepness's ``ModelDefinition``).

A row names the family's model-file task, its job kinds, the :class:`~.training.task.TrainingTask`
subclass the one training engine runs, and the GUI entries. The job catalogue (CLI, worker), the
Processing provider, the Deep Learning menu and the model-file loader all read this table, so a
new family is one row here plus its own modules (jobs, task, dialogs). Strings only: this module
is imported inside QGIS, where torch must never be loaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tool:
    """A GUI entry of a family: its job kind, the menu label and the dialog opener
    (``"module:function"``, module relative to ``plugin.gui``, called as ``function(plugin)``)."""

    kind: str
    label: str
    opener: str


@dataclass(frozen=True)
class Family:
    """One model family."""

    task: str                 # the model file's ``task`` field, e.g. "pixel_segmentation"
    title: str                # e.g. "Pixel Segmentation"
    train_kind: str           # job kind that trains it, e.g. "train_pixel_segmentation"
    classify_kinds: tuple[str, ...]    # job kinds that apply a model, e.g. ("classify_pixels",)
    task_class: str           # "module:Class" (module relative to plugin.core) of its TrainingTask
    jobs_module: str          # module (relative to plugin.core) whose import registers its jobs
    other_kinds: tuple[str, ...] = ()  # more job kinds offered in Processing (e.g. export_onnx)
    train_tool: Tool | None = None     # entry in Deep Learning ▸ Train
    classify_tools: tuple[Tool, ...] = field(default_factory=tuple)  # ▸ Classify

    @property
    def job_kinds(self) -> tuple[str, ...]:
        return (self.train_kind, *self.classify_kinds, *self.other_kinds)


FAMILIES: list[Family] = [
    Family("pixel_segmentation", "Pixel Segmentation", "train_pixel_segmentation",
           ("classify_pixels",), "segmentation.task:PixelSegmentationTask",
           "segmentation.jobs", other_kinds=("export_onnx",),
           train_tool=Tool("train_pixel_segmentation", "Pixel Segmentation…",
                           "train_segmentation_dialog:open_train_segmentation"),
           classify_tools=(Tool("classify_pixels", "Classify Pixels…",
                                "classify_pixels_dialog:open_classify_pixels"),)),
    Family("object_detection", "Object Detection", "train_object_detection",
           ("detect_objects",), "detection.task:ObjectDetectionTask", "detection.jobs",
           train_tool=Tool("train_object_detection", "Object Detection…",
                           "train_detection_dialog:open_train_detection"),
           classify_tools=(Tool("detect_objects", "Detect Objects…",
                                "detect_objects_dialog:open_detect_objects"),)),
    Family("grid", "Grid Model", "train_grid_model", ("classify_grid",),
           "classification.task:GridTask", "classification.jobs",
           train_tool=Tool("train_grid_model", "Grid Model…",
                           "classification_dialogs:open_train_grid_model"),
           classify_tools=(Tool("classify_grid", "Classify Grid…",
                                "classification_dialogs:open_classify_grid"),)),
    Family("chip_classification", "Chip Classifier", "train_chip_classifier",
           ("classify_chips",), "classification.task:ChipTask", "classification.jobs",
           train_tool=Tool("train_chip_classifier", "Chip Classifier…",
                           "classification_dialogs:open_train_chip_classifier"),
           classify_tools=(Tool("classify_chips", "Classify Chips…",
                                "classification_dialogs:open_classify_chips"),)),
]


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
    """Every family's job kinds (train, classify, others), in table order."""
    return [k for f in FAMILIES for k in f.job_kinds]


def import_job_modules() -> None:
    """Import each family's jobs module (registers its job classes)."""
    for f in FAMILIES:
        importlib.import_module(f"{__package__}.{f.jobs_module}")


def make_task(kind: str):
    """A fresh TrainingTask of the family trained by job ``kind`` (imports torch-side code)."""
    fam = next((f for f in FAMILIES if f.train_kind == kind), None)
    if fam is None:
        raise KeyError(f"No model family is trained by job kind {kind!r}.")
    module, _, cls = fam.task_class.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)()


def train(job, ctx) -> dict:
    """Run a training job of any family in the one training engine."""
    from .training.engine import run_training

    return run_training(job, make_task(job.kind), ctx)
