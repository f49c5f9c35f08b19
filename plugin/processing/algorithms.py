"""Which algorithms the ``dltrainer`` provider offers (one line each; add yours).

``ALGORITHM_JOB_KINDS``: job kinds exposed through the generic :class:`JobAlgorithm`
(``dltrainer:<kind without underscores>``). ``EXTRA_ALGORITHMS``: hand-written
``QgsProcessingAlgorithm`` subclasses (classes, instantiated without arguments).
``GROUPS``: the Processing group of a job kind when its class has no ``group`` attribute.
"""

from __future__ import annotations

from ..core.families import job_kinds

ALGORITHM_JOB_KINDS: list[str] = [
    "environment_report",
    "self_test",
    "import_labels",
    "build_label_rasters",
    "import_label_raster",
    "export_chips",
    *job_kinds(),        # every model family's train, classify and other jobs
]

EXTRA_ALGORITHMS: list[type] = [
]

GROUPS: dict[str, str] = {
    "environment_report": "Tools",
    "self_test": "Tools",
}
