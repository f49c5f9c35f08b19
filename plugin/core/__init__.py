"""The machine-learning core: no QGIS imports here (it runs in workers, the CLI and on servers)."""

import warnings

# Debian's python3-matplotlib puts its mpl_toolkits beside the pip matplotlib the core uses, so
# importing matplotlib (torchmetrics does, for its plots) warns "Unable to import Axes3D" in
# every training run; no 3-D plot is ever drawn.
warnings.filterwarnings("ignore", message="Unable to import Axes3D")
