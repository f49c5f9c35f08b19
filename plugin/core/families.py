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
    """One model family. Its folder ``plugin/core/<package>/`` has the same file names as every
    family's, so the row names only the folder and what differs; the rest follows:

    - ``<package>.jobs`` registers its jobs (train, classify);
    - ``<package>.task:<task_class>`` is the :class:`~.training.task.TrainingTask` it trains;
    - ``<package>.modelfile:load_model`` loads its model files: ``(path, card) → (predictor on
      the CPU, card)``, and ``<package>.modelfile:card_problem`` checks the family's own card
      fields (a phrase or None; light: read in QGIS, no torch);
    - with ``exports``, ``<package>.export:export_job`` writes its ONNX file:
      ``(ExportOnnxJob, card, input scale, ctx) → result``;
    - with ``suggests``, ``<package>.suggest`` scores windows by the model's uncertainty for
      Suggest Areas to Label (``window_size(card)`` and ``uncertainty(predictor, card, batch,
      valid)``: see :mod:`.suggest_labels`).
    - with ``previews``, ``<package>.preview:render_preview`` draws the model on the map while
      it trains (:mod:`.training.preview`): ``(network, task, image, valid, window, device) →
      ClassRaster | Boxes``.
    """

    task: str                 # the model file's ``task`` field, e.g. "pixel_segmentation"
    title: str                # e.g. "Pixel Segmentation"
    package: str              # its folder under plugin/core, e.g. "segmentation"
    task_class: str           # the TrainingTask class in <package>.task
    train_kind: str           # job kind that trains it, e.g. "train_pixel_segmentation"
    classify_kinds: tuple[str, ...]    # job kinds that apply a model, e.g. ("classify_pixels",)
    exports: bool = False     # <package>.export exports its models to ONNX
    suggests: bool = False    # <package>.suggest scores windows for Suggest Areas to Label
    other_kinds: tuple[str, ...] = ()  # more job kinds offered in Processing
    train_tool: Tool | None = None     # entry in Deep Learning ▸ Train
    classify_tools: tuple[Tool, ...] = field(default_factory=tuple)  # ▸ Classify
    previews: bool = False    # <package>.preview draws it on the map while it trains
    pretrained: str = "imagenet"  # START_WEIGHTS' choice of the library's pretrained weights

    @property
    def jobs_module(self) -> str:
        return f"{self.package}.jobs"

    @property
    def loader(self) -> str:
        return f"{self.package}.modelfile:load_model"

    @property
    def card_check(self) -> str:
        return f"{self.package}.modelfile:card_problem"

    @property
    def exporter(self) -> str:
        return f"{self.package}.export:export_job" if self.exports else ""

    @property
    def suggester(self) -> str:
        return f"{self.package}.suggest" if self.suggests else ""

    @property
    def previewer(self) -> str:
        return f"{self.package}.preview:render_preview" if self.previews else ""

    @property
    def job_kinds(self) -> tuple[str, ...]:
        return (self.train_kind, *self.classify_kinds, *self.other_kinds)

    @property
    def window_tool(self) -> Tool | None:
        """The classify tool the Training Model window offers for a model of this family."""
        return self.classify_tools[0] if self.classify_tools else None


FAMILIES: list[Family] = [
    Family("pixel_segmentation", "Pixel Segmentation", "segmentation", "PixelSegmentationTask",
           "train_pixel_segmentation", ("classify_pixels",), exports=True, suggests=True,
           previews=True,
           train_tool=Tool("train_pixel_segmentation", "Pixel Segmentation…"),
           classify_tools=(Tool("classify_pixels", "Classify Pixels…"),)),
    Family("object_detection", "Object Detection", "detection", "ObjectDetectionTask",
           "train_object_detection", ("detect_objects",), exports=True, suggests=True,
           previews=True, pretrained="coco",
           train_tool=Tool("train_object_detection", "Object Detection…"),
           classify_tools=(Tool("detect_objects", "Detect Objects…"),)),
    Family("instance_segmentation", "Instance Segmentation", "instances",
           "InstanceSegmentationTask", "train_instance_segmentation", ("segment_objects",),
           suggests=True, previews=True, pretrained="coco",
           train_tool=Tool("train_instance_segmentation", "Instance Segmentation…"),
           classify_tools=(Tool("segment_objects", "Segment Objects…"),)),
    Family("grid", "Grid Model", "classification", "GridTask", "train_grid_model",
           ("classify_grid",), suggests=True, previews=True,
           train_tool=Tool("train_grid_model", "Grid Model…"),
           classify_tools=(Tool("classify_grid", "Classify Grid…"),)),
    Family("chip_classification", "Chip Classifier", "classification", "ChipTask",
           "train_chip_classifier", ("classify_chips",), suggests=True, previews=True,
           train_tool=Tool("train_chip_classifier", "Chip Classifier…"),
           classify_tools=(Tool("classify_chips", "Classify Chips…"),)),
    Family("pixel_regression", "Pixel Regression", "regression", "PixelRegressionTask",
           "train_pixel_regression", ("predict_values",), exports=True,
           train_tool=Tool("train_pixel_regression", "Pixel Regression…"),
           classify_tools=(Tool("predict_values", "Predict Values…"),)),
]

#: Job kinds every family shares (registered by shared modules, listed in Processing once).
SHARED_KINDS: tuple[str, ...] = ("export_onnx", "suggest_labels")


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
    return _resolve(f"{fam.package}.task:{fam.task_class}")()


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


def suggest_module(task: str):
    """The module scoring windows for Suggest Areas to Label of ``task``'s family, or None."""
    fam = family(task)
    return (importlib.import_module(f"{__package__}.{fam.suggester}")
            if fam and fam.suggester else None)


def suggesting_titles() -> list[str]:
    """Titles of the families whose models can suggest areas to label."""
    return [f.title for f in FAMILIES if f.suggester]


def preview_function(task: str) -> Callable | None:
    """The map preview of ``task``'s family (:mod:`.training.preview`), or None when it has
    none (the chip classifier: its chips are not a map)."""
    fam = family(task)
    return _resolve(fam.previewer) if fam and fam.previewer else None


def export_function(task: str) -> Callable | None:
    """The ONNX export of ``task``'s family, or None when it has none."""
    fam = family(task)
    return _resolve(fam.exporter) if fam and fam.exporter else None
