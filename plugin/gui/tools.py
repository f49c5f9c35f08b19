"""Registry of the entries of the Deep Learning menu and toolbar (one line per tool).

``opener`` is ``"module:function"`` with the module relative to ``plugin.gui``; it is imported
only when the user clicks the entry and called as ``function(plugin)``. Entries appear in
``section`` order, then registry order; a submenu ("Train", "Classify") appears where its first
tool is, and only when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.families import FAMILIES


@dataclass(frozen=True)
class Tool:
    """One menu entry (and optionally a toolbar button)."""

    id: str
    menu: str       # "" for the top level, else a submenu title such as "Train" or "Classify"
    label: str
    icon: str       # file name in resources/icons/
    opener: str     # "module_relative_to_plugin.gui:function"
    toolbar: bool = False
    section: int = 1  # entries are grouped by section (ascending), separators between groups


#: The dialog that opens each family tool (job kind → ``"module:function"``): the GUI's side of
#: the family table (``plugin/core/families.py``), which names tools by job kind only.
DIALOGS: dict[str, str] = {
    "train_pixel_segmentation": "train_segmentation_dialog:open_train_segmentation",
    "classify_pixels": "classify_pixels_dialog:open_classify_pixels",
    "train_object_detection": "train_detection_dialog:open_train_detection",
    "detect_objects": "detect_objects_dialog:open_detect_objects",
    "train_instance_segmentation": "instance_dialogs:open_train_instance_segmentation",
    "segment_objects": "instance_dialogs:open_segment_objects",
    "train_grid_model": "classification_dialogs:open_train_grid_model",
    "classify_grid": "classification_dialogs:open_classify_grid",
    "train_chip_classifier": "classification_dialogs:open_train_chip_classifier",
    "classify_chips": "classification_dialogs:open_classify_chips",
    "train_pixel_regression": "classification_dialogs:open_train_pixel_regression",
    "predict_values": "classification_dialogs:open_predict_values",
}

TOOLS: list[Tool] = [
    Tool("labeling", "", "Labeling Tool", "labeling.svg", "labeling.dock:open_labeling_tool",
         toolbar=True),
    Tool("export_chips", "", "Export Training Chips", "export_chips.svg",
         "export_chips_dialog:open_export_chips"),
    # one Train and one Classify entry per model family (plugin/core/families.py)
    *(Tool(f.train_tool.kind, "Train", f.train_tool.label, "train.svg",
           DIALOGS[f.train_tool.kind], section=2) for f in FAMILIES if f.train_tool),
    *(Tool(t.kind, "Classify", t.label, "classify.svg", DIALOGS[t.kind], section=3)
      for f in FAMILIES for t in f.classify_tools),
    Tool("training_window", "", "Training Model Window", "train.svg",
         "training_window:open_training_window", section=2),
    Tool("tensorboard", "", "TensorBoard…", "tensorboard.svg", "tensorboard:open_tensorboard",
         section=8),
    Tool("settings", "", "Settings…", "settings.svg", "settings:open_settings", section=9),
]


def call_opener(opener: str, plugin, *args):
    """Import ``opener`` (``"module:function"``, module relative to ``plugin.gui``) and call it
    as ``function(plugin, *args)``; what it returns (the dialog)."""
    import importlib

    module_name, _, function = opener.partition(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, function)(plugin, *args)


def classify_tool(kind: str) -> Tool | None:
    """The menu entry of the classify tool of the family trained or applied by job ``kind``
    (the family's ``window_tool``): what the Training Model window offers for the model it
    trained; None when the family has none."""
    from ..core.families import family_of_kind

    fam = family_of_kind(kind)
    tool = fam.window_tool if fam is not None else None
    return next((t for t in TOOLS if tool is not None and t.id == tool.kind), None)
