"""Deep Learning Trainer: label rasters, train deep-learning models and classify, inside QGIS.

Nothing heavy is imported here: QGIS calls :func:`classFactory`, the worker process and the CLI
import subpackages without QGIS.
"""


def classFactory(iface):  # noqa: N802 - QGIS's name
    """QGIS entry point."""
    from .gui.plugin import DeepLearningTrainerPlugin

    return DeepLearningTrainerPlugin(iface)
