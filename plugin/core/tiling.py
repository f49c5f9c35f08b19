"""Tiling and batched tile reading, shared by every tool that applies a model to a raster.

A raster of H × W px is covered by tiles of ``T`` px whose starts step by the stride ``T − O``
(``O`` the overlap, px); the last tile of a row or column is flush with the raster's edge, and a
raster smaller than a tile is read as one tile padded by mirroring. Tiles are read as float32
(bands, T, T) arrays with invalid pixels set to a fill value (the band means of the model card,
so they are 0 after normalisation), grouped in batches and read ahead in a thread so that reading
overlaps the forward pass. Tiles without valid pixels pass through without a forward pass.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

from .errors import UserError
from .patchsize import ceil_multiple
from .validpixels import read_data, valid_mask

AUTO_OVERLAP_MIN = 32    # px: the smallest automatic overlap of the object tools
AUTO_TILE_OVERLAPS = 3   # automatic object tiles are at least this many overlaps wide


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Starts covering ``[0, length)`` with tiles of ``tile`` (last one flush with the end)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def read_tile(ds, r0: int, c0: int, th: int, tw: int, fill: np.ndarray,
               scale: tuple[float, float] = (1.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(data float32 (bands, th, tw), valid (th, tw)) of the tile at raster row ``r0``, column
    ``c0`` of the open dataset ``ds``; the data is ``a·x + b`` for ``scale`` (a, b), invalid
    pixels and a band's nodata hold ``fill``, a tile crossing the raster's edge is mirrored."""
    from rasterio.windows import Window

    h, w = min(th, ds.height - r0), min(tw, ds.width - c0)
    win = Window(c0, r0, w, h)
    data = read_data(ds, window=win)
    valid = valid_mask(ds, data, win)
    band_nodata = (data == ds.nodata) if ds.nodata is not None else None
    data = data.astype(np.float32)
    if scale != (1.0, 0.0):
        data = data * np.float32(scale[0]) + np.float32(scale[1])
    np.copyto(data, fill, where=~valid[None])
    if band_nodata is not None:   # one band's nodata: that band's mean, as in training
        np.copyto(data, np.broadcast_to(fill, data.shape), where=band_nodata)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        np.copyto(data, np.broadcast_to(fill, data.shape), where=~np.isfinite(data))
    if h < th or w < tw:
        data = np.pad(data, ((0, 0), (0, th - h), (0, tw - w)), mode="symmetric")
        valid = np.pad(valid, ((0, th - h), (0, tw - w)))
    return data, valid


def read_tiles(src, keys: list[tuple[int, int]], read: Callable, batch: int,
               readers: int | None = None) -> Iterator[tuple[list, np.ndarray | None]]:
    """Every tile of ``keys`` ((tile row index, column start) pairs, in order) read by
    ``read(key, dataset)`` → (ri, c0, data, valid, work) in ``readers`` threads (default
    :func:`.tile_io.reader_threads` of the cores this process may use), each with its own
    handle on ``src.name``; yields the groups of :func:`batches` (``batch`` tiles to run) with
    their data stacked (:func:`stacked`: (n, bands, T, T) float32, None when no tile of the
    group is to run), prepared ahead in a thread (:func:`prefetch`) so that reading overlaps
    the forward pass. The one reading pipeline of Classify Pixels and Detect Objects. Close the
    iterator to stop the threads."""
    from .tile_io import OrderedReader, reader_threads
    from .training.runtime import available_cpus

    n = readers or reader_threads(available_cpus())
    reader = OrderedReader(keys, read, lambda: open_again(src), n, depth=batch + 2 * n)
    groups = prefetch(stacked(batches(iter(reader), batch)))
    try:
        yield from groups
    finally:
        groups.close()      # stops the batching thread, then the readers
        reader.close()


def batches(tiles: Iterator, batch: int) -> Iterator[list]:
    """Groups of ``batch`` tiles to predict (item[4]; tiles entirely nodata or outside the
    cells a grid model flagged pass through without a forward pass); groups may span tile
    rows."""
    group: list = []
    n_work = 0
    for item in tiles:
        group.append(item)
        n_work += bool(item[4])
        if n_work == batch:
            yield group
            group, n_work = [], 0
    if group:
        yield group


def stacked(groups: Iterator[list]) -> Iterator[tuple[list, np.ndarray | None]]:
    """Each group of :func:`batches` with the stacked data of its tiles to predict (None when
    none is)."""
    for group in groups:
        work = [it[2] for it in group if it[4]]
        yield group, np.stack(work) if work else None


def prefetch(gen: Iterator, depth: int = 2) -> Iterator:
    """Run ``gen`` in a thread (reading overlaps the forward pass)."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in gen:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)
        q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def tile_grid(height: int, width: int, tile: int, overlap: float
              ) -> tuple[int, int, int, int, list[int], list[int]]:
    """(tile height, tile width, overlap rows, overlap cols, tile row starts, tile col starts)
    of a ``height`` × ``width`` raster (pixels)."""
    th, tw = min(tile, ceil_multiple(height)), min(tile, ceil_multiple(width))
    ov_h, ov_w = (int(round(overlap * t / 2)) * 2 for t in (th, tw))
    rows = tile_starts(height, th, max(th - ov_h, 1))
    cols = tile_starts(width, tw, max(tw - ov_w, 1))
    return th, tw, ov_h, ov_w, rows, cols


def rank_rows(height: int, width: int, tile: int, overlap: float, rank: int,
              world: int) -> tuple[range, int, int]:
    """The share of rank ``rank`` of ``world`` processes: (tile rows whose finished rows it
    writes, first raster row, end raster row). Shares are contiguous, in rank order, and cover
    the raster exactly once; a rank may get none (range empty, first == end)."""
    rows = tile_grid(height, width, tile, overlap)[4]
    a, b = len(rows) * rank // world, len(rows) * (rank + 1) // world
    y0 = rows[a] if a < len(rows) else height
    y1 = rows[b] if b < len(rows) else height
    return range(a, b), y0, y1


def open_again(src):
    """A second handle on the dataset ``src`` (GDAL handles must not be shared by threads)."""
    import rasterio

    return rasterio.open(src.name)


def overlap_for(card: dict, tile: int, requested: int, ctx=None) -> int:
    """The tile overlap in px of an object family's tool (Detect Objects, Segment Objects) for
    tiles of ``tile`` px: ``requested`` (raised to the longest object box of the training
    data, the card's ``max_box_px``, with a warning on ``ctx``) or, when negative, that + 10 %,
    at least :data:`AUTO_OVERLAP_MIN`: every object of a trained size then lies wholly inside
    at least one tile (for a stride ``S = T − O``, an object starting at ``a`` with width
    ``w ≤ O`` fits in tile ``⌊a / S⌋``). UserError when the tile cannot hold the overlap."""
    largest = float(card.get("max_box_px") or 0.0)
    need = int(math.ceil(largest))
    if requested is None or requested < 0:
        overlap = max(AUTO_OVERLAP_MIN, int(math.ceil(largest * 1.1)))
    else:
        overlap = int(requested)
        if overlap < need:
            if ctx:
                ctx.log(f"Overlap {overlap} px is smaller than the largest trained box "
                        f"({need} px): using {need} px so no object is cut.", "warning")
            overlap = need
    if overlap >= tile:
        raise UserError(f"A tile overlap of {overlap} px does not fit tiles of {tile} px (the "
                        f"largest trained box is {need} px).",
                        f"Use a tile size (TILE_SIZE) of at least {ceil_multiple(2 * overlap)} px.")
    return overlap


def auto_tile(card: dict, requested: int) -> int:
    """The tile size in px: ``requested`` when set, else the model's patch size grown to at
    least :data:`AUTO_TILE_OVERLAPS` automatic overlaps (the model is convolutional and never
    resizes, so a larger tile sees objects at the same pixel size with fewer repeats)."""
    if requested:
        return int(requested)
    patch = int(card.get("patch_size") or 512)
    return max(patch, ceil_multiple(AUTO_TILE_OVERLAPS * overlap_for(card, 1 << 30, -1)))
