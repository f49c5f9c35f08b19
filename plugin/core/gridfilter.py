"""Optimized classification (ENVI): a grid model first says which grid cells hold any of its
classes; only those cells are run through the pixel (or object) model, the others come out as
background. A cell is *flagged* when any class's score reaches its threshold (THRESHOLD, or with
0 the per-class thresholds tuned on validation); cells entirely nodata are not flagged. The
scores are Classify Grid's (the family's loader: a model trained with flips and turns scores the
mean over the 8, as its thresholds were tuned).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import JobCancelled


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
    from .errors import UserError
    from .modelfile import load_model
    from .raster_input import check_input

    started = time.monotonic()
    predictor, card = load_model(grid_model, "grid")
    def log(message: str, level: str) -> None:
        if ctx is not None:
            ctx.log(f"Grid model (GRID_MODEL): {message}", level)

    try:
        check_input(src, card, log)
    except UserError as exc:
        raise UserError(f"The grid model (GRID_MODEL) does not fit the raster: {exc.message}",
                        exc.fix) from None
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


def cell_windows(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """(row index, col index, row0, col0) of every cell, row-major."""
    return [(ri, ci, r0, c0) for ri, r0 in enumerate(range(0, height, size))
            for ci, c0 in enumerate(range(0, width, size))]


def predict_cells(src, predictor, card: dict, batch_size: int, device: str = "cpu",
                  cancelled: Callable[[], bool] = lambda: False,
                  progress: Callable[[int, int], None] = lambda d, t: None
                  ) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """(ri, ci, row0, col0, scores (C,)) for every cell holding valid pixels of the open
    rasterio dataset ``src``."""
    import torch
    from rasterio.windows import Window

    from .validpixels import read_data, valid_mask

    size = int(card["grid_size"])
    fill = np.asarray(card["mean"], np.float32)[:, None, None]
    cells = cell_windows(src.height, src.width, size)
    batch: list = []

    def run():
        x = torch.from_numpy(np.stack([b[4] for b in batch])).to(device)
        with torch.inference_mode():
            scores = predictor(x).float().cpu().numpy()
        done = [(*b[:4], s) for b, s in zip(batch, scores)]
        batch.clear()
        return done

    for k, (ri, ci, r0, c0) in enumerate(cells):
        if cancelled():
            raise JobCancelled()
        h, w = min(size, src.height - r0), min(size, src.width - c0)
        win = Window(c0, r0, w, h)
        data = read_data(src, window=win)
        valid = valid_mask(src, data, win)
        if not valid.any():
            continue
        arr = np.broadcast_to(fill, (fill.shape[0], size, size)).copy()
        part = data.astype(np.float32)
        part = np.where(valid[None] & np.isfinite(part), part, fill)
        arr[:, :h, :w] = part
        batch.append((ri, ci, r0, c0, arr))
        if len(batch) == batch_size:
            yield from run()
            progress(k + 1, len(cells))
    if batch:
        yield from run()
    progress(len(cells), len(cells))


def thresholds_of(card: dict, threshold: float) -> np.ndarray:
    n = len(card["classes"])
    if threshold and threshold > 0:
        return np.full(n, float(threshold), np.float32)
    return np.asarray(card.get("thresholds") or [0.5] * n, np.float32)
