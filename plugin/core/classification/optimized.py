"""Optimized classification (ENVI): a grid model first says which grid cells hold any of its
classes; only those cells are run through the pixel (or object) model, the others come out as
background. A cell is *flagged* when any class's score reaches its threshold (THRESHOLD, or with
0 the per-class thresholds tuned on validation); cells entirely nodata are not flagged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class CellFilter:
    """Which grid cells of a raster are flagged (``flagged``: (cell rows, cell cols) bool)."""

    flagged: np.ndarray
    size: int
    height: int
    width: int
    seconds: float = 0.0

    def mask(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """(h, w) bool: True where pixel (r0 + i, c0 + j) lies in a flagged cell (False outside
        the raster)."""
        rows = (np.arange(r0, r0 + h) // self.size).clip(0, self.flagged.shape[0] - 1)
        cols = (np.arange(c0, c0 + w) // self.size).clip(0, self.flagged.shape[1] - 1)
        out = self.flagged[rows[:, None], cols[None, :]].copy()
        out[np.arange(r0, r0 + h) >= self.height, :] = False
        out[:, np.arange(c0, c0 + w) >= self.width] = False
        return out

    @property
    def cells(self) -> int:
        return int(self.flagged.size)

    @property
    def share_skipped(self) -> float:
        return 1.0 - float(self.flagged.mean()) if self.flagged.size else 0.0


def grid_filter(src, grid_model: str, threshold: float = 0.0, batch_size: int = 16,
                device: str = "cpu", ctx=None) -> CellFilter:
    """Run the grid model over the open rasterio dataset ``src``; UserError when the model is
    not a grid model or its bands differ from the raster's."""
    from ..errors import UserError
    from .classify_grid import predict_cells, thresholds_of
    from .networks import load_classifier

    started = time.monotonic()
    predictor, card = load_classifier(grid_model, "grid")
    if src.count != int(card["bands"]):
        raise UserError(f"The grid model (GRID_MODEL) was trained on {card['bands']} band(s), "
                        f"the raster has {src.count}.", "Choose a grid model of these bands.")
    predictor = predictor.to(device)
    size = int(card["grid_size"])
    th = thresholds_of(card, threshold)
    flagged = np.zeros((-(-src.height // size), -(-src.width // size)), bool)
    cancelled = (lambda: ctx.cancelled) if ctx is not None else (lambda: False)
    progress = (lambda d, t: ctx.progress("cells", d, t, "Grid model")) if ctx else (
        lambda d, t: None)
    for ri, ci, _, _, scores in predict_cells(src, predictor, card, batch_size, device,
                                              cancelled, progress):
        flagged[ri, ci] = bool((scores >= th).any())
    out = CellFilter(flagged, size, src.height, src.width, time.monotonic() - started)
    if ctx is not None:
        ctx.log(f"Grid model: {int(flagged.sum())} of {flagged.size} cells flagged "
                f"({out.share_skipped:.0%} skipped) in {out.seconds:.1f} s.")
    return out
