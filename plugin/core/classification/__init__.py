"""Image classification: grid models (ENVI "Train a Grid Model") and chip classifiers (GBDX chip
classifier, Planet multi-label). One timm network, one training task on the shared engine."""
