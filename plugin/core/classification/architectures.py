"""The timm backbones the grid model and the chip classifier offer (ENVI's default: ResNet50);
their own module so that the job fields, the card check (both read in QGIS, without torch) and
the network share one list without importing each other.
"""

ARCHITECTURES = ("resnet50", "resnet101", "resnet18", "resnet34", "efficientnet_b0",
                 "convnext_tiny")
