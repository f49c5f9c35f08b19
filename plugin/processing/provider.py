"""The ``dltrainer`` Processing provider."""

from __future__ import annotations

from qgis.core import QgsMessageLog, QgsProcessingProvider

from ..gui.icons import icon
from . import algorithms
from .job_algorithm import JobAlgorithm


class DeepLearningTrainerProvider(QgsProcessingProvider):
    """Offers one algorithm per registered job kind, plus hand-written ones."""

    def id(self) -> str:
        return "dltrainer"

    def name(self) -> str:
        return "Deep Learning Trainer"

    def longName(self) -> str:  # noqa: N802
        return "Deep Learning Trainer"

    def icon(self):
        return icon("icon.svg")

    def loadAlgorithms(self) -> None:  # noqa: N802
        for kind in algorithms.ALGORITHM_JOB_KINDS:
            try:
                self.addAlgorithm(JobAlgorithm.for_kind(kind))
            except Exception as exc:  # noqa: BLE001 - one broken job must not hide the others
                QgsMessageLog.logMessage(f"Algorithm for job {kind!r} not loaded: {exc}",
                                         "Deep Learning Trainer")
        for cls in algorithms.EXTRA_ALGORITHMS:
            self.addAlgorithm(cls())
