"""Labeling: the labeling project (one GeoPackage), importing labels, building label rasters.

QGIS-free. ``project`` needs only sqlite3 and GDAL's Python bindings; ``labelraster`` and
``importers`` import rasterio inside their functions. Importing this package (e.g. for its jobs)
loads nothing.
"""

