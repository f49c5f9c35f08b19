"""Default lengths of the grid model's and chip classifier's training (no imports: read by the
jobs and by the modules that size an epoch, without an import circle)."""

GRID_EPOCHS = 100     # ENVI's default
CHIP_EPOCHS = 35      # GBDX's default (round 1)
