"""The Labeling Tool: a dock to define classes, pick rasters and draw labels with QGIS tools."""
