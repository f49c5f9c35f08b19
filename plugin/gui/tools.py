"""Registry of the entries of the Deep Learning menu and toolbar (one line per tool).

``opener`` is ``"module:function"`` with the module relative to ``plugin.gui``; it is imported
only when the user clicks the entry and called as ``function(plugin)``. Entries appear in
``section`` order, then registry order; a submenu ("Train", "Classify") appears where its first
tool is, and only when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass


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


TOOLS: list[Tool] = [
    Tool("labeling", "", "Labeling Tool", "labeling.svg", "labeling.dock:open_labeling_tool",
         toolbar=True),
    Tool("export_chips", "", "Export Training Chips", "export_chips.svg",
         "export_chips_dialog:open_export_chips"),
    Tool("train_pixel_segmentation", "Train", "Pixel Segmentation…", "train.svg",
         "train_segmentation_dialog:open_train_segmentation", section=2),
    Tool("training_window", "", "Training Model Window", "train.svg",
         "training_window:open_training_window", section=2),
    Tool("classify_pixels", "Classify", "Classify Pixels…", "classify.svg",
         "classify_pixels_dialog:open_classify_pixels", section=3),
    Tool("tensorboard", "", "TensorBoard…", "tensorboard.svg", "tensorboard:open_tensorboard",
         section=8),
    Tool("settings", "", "Settings…", "settings.svg", "settings:open_settings", section=9),
]
