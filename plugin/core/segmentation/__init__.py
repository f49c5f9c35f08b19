"""Pixel segmentation: training engine, model file, tiled classification (QGIS-free).

Nothing heavy is imported here: torch, rasterio and smp are imported by the modules that use them.
"""
