"""Random grid-cell windows of a grid model's training, drawn anew every epoch.

The sample plan's training cells (the fixed grid from the raster's top-left corner, picked with
FEATURE_PATCH_PERCENTAGE and BACKGROUND_PATCH_RATIO) are anchors: every epoch each window is an
anchor (uniformly, or with CLASS_BALANCE "sampling" with probability ∝ 1 / its class
frequency, ``balance.py``) shifted by a random offset of up to half a cell in both directions
and moved flush with the raster edges, so the network sees the objects at every position of a
cell instead of the same few hundred crops. The validation cells stay on the fixed grid (the
grid Classify Grid uses) and are hidden from training: a window overlapping them by more than
:data:`MAX_HIDDEN` of its area is drawn again (up to :data:`TRIES` times, then the anchor
itself), and the overlapping pixels are masked (image 0 after normalisation, labels ignored).
A window's target is computed from its own label pixels (``gridcells.cell_targets``), so it is
exact wherever the window lies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..sampling.plan import Patch

MAX_HIDDEN = 0.25     # largest share of a window over validation cells
TRIES = 4             # random offsets tried per window before the anchor itself is used


@dataclass
class CellWindows:
    """``anchors``: training cells (Patch); ``shapes``: source → (height, width) px;
    ``hidden``: source → {(grid row, grid col)} of validation cells on training rasters;
    ``weights``: (len(anchors),) drawing probabilities or None (uniform)."""

    size: int
    anchors: list[Patch]
    shapes: dict[int, tuple[int, int]]
    hidden: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    weights: np.ndarray | None = None

    def hidden_boxes(self, source: int, row: int, col: int) -> list[tuple[int, int, int, int]]:
        """(r0, c0, r1, c1) window pixel boxes of the validation cells a window at (row, col)
        of ``source`` overlaps (at most 4)."""
        cells = self.hidden.get(source)
        if not cells:
            return []
        s, out = self.size, []
        for gr in range(row // s, (row + s - 1) // s + 1):
            for gc in range(col // s, (col + s - 1) // s + 1):
                if (gr, gc) in cells:
                    r0, c0 = max(gr * s - row, 0), max(gc * s - col, 0)
                    r1, c1 = min((gr + 1) * s - row, s), min((gc + 1) * s - col, s)
                    if r1 > r0 and c1 > c0:
                        out.append((r0, c0, r1, c1))
        return out

    def _hidden_share(self, source: int, row: int, col: int) -> float:
        return sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in
                   self.hidden_boxes(source, row, col)) / float(self.size ** 2)

    def _flush(self, source: int, row: int, col: int) -> tuple[int, int]:
        h, w = self.shapes[source]
        return (min(max(row, 0), max(h - self.size, 0)),
                min(max(col, 0), max(w - self.size, 0)))

    def draw(self, n: int, rng: np.random.Generator) -> list[Patch]:
        """``n`` training windows (Patch, split "train") for one epoch."""
        if not self.anchors or n <= 0:
            return []
        if self.weights is not None:
            picks = rng.choice(len(self.anchors), n, p=self.weights)
        else:   # every anchor once per pass, in a fresh order
            passes = -(-n // len(self.anchors))
            picks = np.concatenate([rng.permutation(len(self.anchors))
                                    for _ in range(passes)])[:n]
        half = self.size // 2
        out = []
        for i in picks:
            a = self.anchors[int(i)]
            row, col = a.row, a.col
            for _ in range(TRIES):
                r, c = self._flush(a.source, a.row + int(rng.integers(-half, half + 1)),
                                   a.col + int(rng.integers(-half, half + 1)))
                if self._hidden_share(a.source, r, c) <= MAX_HIDDEN:
                    row, col = r, c
                    break
            out.append(Patch(a.source, row, col, self.size, "train", a.has_features, {}, 0.0))
        return out


#: BATCH_SIZE 0 (automatic): cells of about as many pixels as ENVI's default batch of 5 cells of
#: 224 px, between :data:`MIN_BATCH` and :data:`MAX_BATCH` cells (5 of 224 px, 15 of 128 px, 32
#: of 64 px or less). Batch-norm statistics of 5 cells of 16 px are noise: on the Landsat scene
#: with 16 px cells the held-out macro AUC was 0.77 with batches of 5 (1500 steps) and 0.85 with
#: batches of 32 (900 steps) in the same time (bench/grid_real_data.py).
BATCH_PIXELS = 5 * 224 * 224
MIN_BATCH, MAX_BATCH = 5, 32


def grid_batch(job) -> int:
    """Cells per batch of a grid model: BATCH_SIZE, or for 0 the automatic size (see
    :data:`BATCH_PIXELS`)."""
    if job.batch_size:
        return int(job.batch_size)
    return int(min(MAX_BATCH, max(MIN_BATCH, round(BATCH_PIXELS / job.grid_size ** 2))))


def grid_steps(job, n_train: int) -> int:
    """Batches per epoch of a grid model with ``n_train`` training cells: STEPS_PER_EPOCH when
    set, else one pass over the cells in batches of :func:`grid_batch`, at least
    :func:`..training.length.least_batches` of the default epochs (300 steps with the
    defaults)."""
    from ..training.length import automatic_steps, least_batches
    from .defaults import GRID_EPOCHS

    return job.steps_per_epoch or automatic_steps(n_train, grid_batch(job),
                                                  least=least_batches(GRID_EPOCHS))


def scan_windows(sources, train: list[Patch], val: list[Patch], size: int,
                 weights: np.ndarray | None) -> CellWindows:
    """The :class:`CellWindows` of a plan's training and validation cells (raster sizes read
    from the label rasters)."""
    import rasterio

    shapes = {}
    for sid in sorted({p.source for p in train}):
        with rasterio.open(sources[sid].labels) as ds:
            shapes[sid] = (ds.height, ds.width)
    hidden: dict[int, set[tuple[int, int]]] = {}
    for p in val:
        if p.source in shapes:
            hidden.setdefault(p.source, set()).add((p.row // size, p.col // size))
    return CellWindows(size, list(train), shapes, hidden, weights)
