"""Object detection: labels → boxes, the detector task for the training engine, Detect Objects,
ONNX export (QGIS-free).

Nothing heavy is imported here: torch, torchvision and rasterio are imported by the modules that
use them.
"""
