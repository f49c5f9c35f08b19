"""Which algorithms the ``dltrainer`` provider offers (one line each; add yours).

``ALGORITHM_JOB_KINDS``: job kinds exposed through the generic :class:`JobAlgorithm`
(``dltrainer:<kind without underscores>``). ``EXTRA_ALGORITHMS``: hand-written
``QgsProcessingAlgorithm`` subclasses (classes, instantiated without arguments).
``GROUPS``: the Processing group of a job kind when its class has no ``group`` attribute.
"""

from __future__ import annotations

ALGORITHM_JOB_KINDS: list[str] = [
    "environment_report",
    "self_test",
    "import_labels",
    "build_label_rasters",
    "import_label_raster",
    "train_pixel_segmentation",
    "classify_pixels",
    "export_onnx",
    "train_object_detection",
    "detect_objects",
    "export_chips",
]

EXTRA_ALGORITHMS: list[type] = [
]

GROUPS: dict[str, str] = {
    "environment_report": "Tools",
    "self_test": "Tools",
}
