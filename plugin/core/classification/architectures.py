"""The timm backbones the grid model and the chip classifier offer (ENVI's default: ResNet50);
their own module so that the job fields, the card check (both read in QGIS, without torch) and
the network share one list without importing each other.

ARCHITECTURE ``auto`` (the default) is resolved when training starts: ResNet18 on a CPU, ENVI's
ResNet50 on a GPU; the model card keeps the one trained. ResNet50's 25 M weights made a CPU step
about three times as long as ResNet18's 11 M even on 16–32 px cells and chips (the optimiser
and per-layer costs dominate there), and the few hundred cells or chips of a small project do
not need its size (bench/grid_real_data.py, bench/real_classifiers.py).
"""

ARCHITECTURES = ("resnet50", "resnet101", "resnet18", "resnet34", "efficientnet_b0",
                 "convnext_tiny")
AUTO = "auto"
CPU_ARCHITECTURE, GPU_ARCHITECTURE = "resnet18", "resnet50"


def resolve_architecture(architecture: str, device: str) -> str:
    """``architecture``, or for :data:`AUTO` the one that fits ``device`` (a torch device
    string: 'cpu', 'cuda', 'cuda:1', 'mps' …)."""
    if architecture != AUTO:
        return architecture
    return CPU_ARCHITECTURE if device == "cpu" else GPU_ARCHITECTURE
