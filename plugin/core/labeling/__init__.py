"""Labeling: the labeling project (one GeoPackage), importing labels, building label rasters.

QGIS-free. ``project`` needs only sqlite3 and GDAL's Python bindings; ``labelraster`` and
``importers`` import rasterio inside their functions. Importing this package (e.g. for its jobs)
loads nothing: the names below are resolved on first use.
"""

from __future__ import annotations

__all__ = ["LabelClass", "LabelFeature", "LabelingProject", "TrainingRaster"]


def __getattr__(name: str):
    if name in __all__:
        from . import project

        return getattr(project, name)
    raise AttributeError(name)
