"""Helpers for tests that run in QGIS's process (pytest-qgis)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def dltrainer_provider():
    """The ``dltrainer`` Processing provider registered for the block (when a test session has
    not registered it already, it is removed afterwards); yields the registered provider."""
    from qgis.core import QgsApplication

    from plugin.processing.provider import DeepLearningTrainerProvider

    registry = QgsApplication.processingRegistry()
    added = None
    if registry.providerById("dltrainer") is None:
        added = DeepLearningTrainerProvider()
        registry.addProvider(added)
    try:
        yield registry.providerById("dltrainer")
    finally:
        if added is not None:
            registry.removeProvider(added)
