"""Tiled, blended prediction of a raster with a pixel network, shared by the pixel families
(Classify Pixels, Predict Values): moved from ``segmentation/predict.py``.

Tiles of ``T`` px overlap by ``O`` px (stride ``T − O``); the last tile of a row or column is
aligned with the raster's edge. Each tile's outputs (class probabilities, or values) are weighted
by a smooth 2-D window ``w(y, x) = h(y) · h(x)``, ``h(i) = sin²(π (i + ½) / T)`` (positive
everywhere, so edge pixels covered by one tile keep their prediction), accumulated and divided by
the summed weights (:mod:`.blend`). Only a band of ``T`` rows × raster width is held: once a tile
row is done, the rows no later tile touches are written out and the band moves down, so memory
does not grow with the raster size. With TTA every tile is also predicted turned and flipped (the
8 symmetries of the square, or the views given: :func:`.inference.learnt_views`) and the outputs
are averaged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .blend import window_1d
from .errors import JobCancelled
from .inference import inference_context, tta_predict
from .tiling import read_tile, read_tiles, tile_grid

# -- tiling -------------------------------------------------------------------------------------


def network_window(card: dict, tile_size: int, batch_size: int) -> tuple[int, int]:
    """(window edge the network sees, windows per forward pass).

    The network always sees windows of the patch size it was trained on. A CNN's deepest
    features cover 32 × 32 px: trained on 32 px patches they are one value per patch, computed
    from the zero padding around it; on 256 px tiles they become 8 × 8 maps of interior context
    the network never saw, and its answers change (issue 9: 92.7 % on 32 px windows, 33 % on
    256 px tiles of the same pixels). So ``tile_size`` (TILE_SIZE) no longer changes the
    windows: it sets how many pixels go through one forward pass, ``batch_size × (tile_size /
    patch)²`` windows, and the answer stays the same up to blending noise."""
    patch = int(card.get("patch_size") or 256)
    scale = max(1, (tile_size // patch) ** 2) if tile_size else 1
    return patch, max(1, batch_size) * scale   # batch_size 0 (auto): see blend.auto_windows


def predict_raster(src, engine: Callable[[np.ndarray], np.ndarray], num_classes: int,
                   fill: list[float], tile: int, overlap: float, batch: int,
                   tta: bool | tuple,
                   on_rows: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None],
                   progress: Callable[[int, int], None] = lambda d, t: None,
                   cancelled: Callable[[], bool] = lambda: False,
                   part: range | None = None,
                   scale: tuple[float, float] = (1.0, 0.0),
                   cell_mask: Callable[[int, int, int, int], np.ndarray] | None = None,
                   probs: str | None = "float", readers: int | None = None) -> dict:
    """Tiled, blended prediction of the open rasterio dataset ``src`` (its values mapped to
    ``a·x + b`` for ``scale`` (a, b) before the network).

    ``on_rows(row0, probs, classes (n, W) uint8, valid (n, W) bool)`` receives finished rows top
    to bottom, in a writer thread of its own; ``probs`` is (C, n, W) float32 (``probs="float"``),
    uint8 ``rint(p · 255)`` with 0 outside valid pixels (``"uint8"``) or None. ``part``: only
    the rows finished by these tile rows (:func:`rank_rows`), from every tile that overlaps them,
    so they equal those of a whole run. ``cell_mask(row0, col0, h, w)``: (h, w) bool of the
    pixels to predict (a grid model's flagged cells); the other valid pixels come out as
    background (class 0, its probability 1) and tiles without any are not run. Returns counts
    (tiles, tiles run, tiles skipped for the grid model, seconds in the forward pass).
    ``tta``: False, True (the 8 turns and flips) or the views to average
    (:func:`.inference.tta_views`).

    Tiles are read by ``readers`` threads (default :func:`.tile_io.reader_threads`), each with
    its own handle on ``src.name``; an engine with a ``tensor`` method (:class:`TorchEngine`)
    keeps blending, argmax and quantisation on its device (:class:`.blend.TorchBand`), any
    other callable returns NumPy probabilities (:class:`.blend.NumpyBand`). Errors in a reader
    or the writer are raised here; cancel (:class:`JobCancelled`) stops both.
    """
    from .blend import NumpyBand, TorchBand
    from .tile_io import BackgroundWriter

    H, W = src.height, src.width
    th, tw, ov_h, ov_w, rows, cols = tile_grid(H, W, tile, overlap)
    part = part if part is not None else range(len(rows))
    if not part:
        return {"tiles": 0, "tiles_run": 0, "tiles_skipped_by_grid": 0, "tile_height": th,
                "tile_width": tw, "forward_seconds": 0.0}
    # the band starts at the first tile row that reaches into the part's first row
    first = next(ri for ri in range(len(rows)) if rows[ri] + th > rows[part.start])
    win2d = np.outer(window_1d(th, ov_h > 0), window_1d(tw, ov_w > 0))
    fill_a = np.asarray(fill, np.float32)[:, None, None]
    total = (part.stop - first) * len(cols)
    on_device = hasattr(engine, "tensor")
    with inference_context(on_device):
        band = (TorchBand(num_classes, th, W, win2d, probs, engine.device) if on_device
                else NumpyBand(num_classes, th, W, win2d, probs))
        background = band.background(th, tw)

    def read(key, ds):
        ri, c0 = key
        data, valid = read_tile(ds, rows[ri], c0, th, tw, fill_a, scale)
        work = valid.any() and (cell_mask is None or bool(
            (valid & cell_mask(rows[ri], c0, th, tw)).any()))
        return ri, c0, data, valid, work

    def write(rows_of) -> None:
        r = rows_of()
        on_rows(r.r0, r.probs, r.classes, r.valid)

    def flush(ri: int) -> None:
        """Hand the rows finished before tile row ``ri + 1`` to the writer; move the band."""
        r0 = rows[ri]
        n = min((rows[ri + 1] if ri + 1 < len(rows) else H) - r0, H - r0)
        if n <= 0:
            return
        if ri not in part:
            band.take(r0, n)
            return
        off = ~cell_mask(r0, 0, n, W) if cell_mask is not None else None
        writer.put(write, band.take(r0, n, off))

    keys = [(ri, c0) for ri in range(first, part.stop) for c0 in cols]
    writer = BackgroundWriter()
    tiles = read_tiles(src, keys, read, batch, readers)
    done = run = skipped = 0
    forward_s = 0.0
    current = first
    try:
        with inference_context(on_device):
            for group, x in tiles:
                if cancelled():
                    raise JobCancelled()
                run += sum(1 for it in group if it[4])
                skipped += sum(1 for it in group if not it[4] and it[3].any())
                results = iter(())
                if x is not None:
                    t0 = time.perf_counter()
                    if on_device:
                        results = iter(engine.tensor(x, tta))
                    else:
                        results = iter(tta_predict(engine, x, tta) if tta else engine(x))
                    forward_s += time.perf_counter() - t0
                for ri, c0, _, valid, worked in group:
                    while current < ri:
                        flush(current)
                        current += 1
                    if not valid.any():
                        continue
                    p = next(results) if worked else background
                    band.add(p, c0, min(th, H - rows[ri]), min(tw, W - c0), valid)
                done += len(group)
                progress(done, total)
            while current < part.stop:
                flush(current)
                current += 1
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        tiles.close()      # stops the reading threads
    return {"tiles": total, "tiles_run": run, "tiles_skipped_by_grid": skipped,
            "tile_height": th, "tile_width": tw, "forward_seconds": forward_s}


def raster_profile(src, count: int, dtype: str, nodata,
                   rows: tuple[int, int] | None = None) -> dict:
    """GeoTIFF profile (deflate, 256 px tiles when the raster is that large) on the open
    ``src``'s grid, or on its raster rows ``rows`` = (first, end)."""
    from rasterio.transform import Affine

    bs = 256
    y0, y1 = rows or (0, src.height)
    prof = {"driver": "GTiff", "width": src.width, "height": max(y1 - y0, 1), "count": count,
            "dtype": dtype, "crs": src.crs, "transform": src.transform * Affine.translation(0, y0),
            "nodata": nodata, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    if src.width >= bs and src.height >= bs:
        prof.update(tiled=True, blockxsize=bs, blockysize=bs)
    return prof
