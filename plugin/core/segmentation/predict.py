"""Classify Pixels: tiled inference over rasters of any size with bounded memory.

Tiles of ``T`` px overlap by ``O`` px (stride ``T − O``); the last tile of a row or column is
aligned with the raster's edge. Each tile's class probabilities are weighted by a smooth 2-D
window ``w(y, x) = h(y) · h(x)``, ``h(i) = sin²(π (i + ½) / T)`` (positive everywhere, so edge
pixels covered by one tile keep their prediction), accumulated and divided by the summed weights.
Only a band of ``T`` rows × raster width is held: once a tile row is done, the rows no later tile
touches are written out and the band moves down, so memory does not grow with the raster size.
With TTA every tile is also predicted turned and flipped (the 8 symmetries of the square) and the
probabilities are averaged.

On the CPU the forward pass runs through onnxruntime when it is installed (the model is exported
once to a cache folder); on CUDA through torch with bf16/fp16 autocast and channels-last.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..areas import area_and_length
from ..atomic import remove_stale_temporaries, temp_path
from ..blend import CLASS_NODATA, window_1d
from ..errors import JobCancelled
from ..inference import inference_context, make_engine, tta_predict
from ..jobs import JobContext
from ..outputs import gdal_write_guard
from ..tiling import rank_rows, read_tile, read_tiles, tile_grid
from ..vector_output import split_layer

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


# -- forward engines ----------------------------------------------------------------------------


# -- the tiled loop -----------------------------------------------------------------------------


def predict_raster(src, engine: Callable[[np.ndarray], np.ndarray], num_classes: int,
                   fill: list[float], tile: int, overlap: float, batch: int, tta: bool,
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

    Tiles are read by ``readers`` threads (default :func:`.tile_io.reader_threads`), each with
    its own handle on ``src.name``; an engine with a ``tensor`` method (:class:`TorchEngine`)
    keeps blending, argmax and quantisation on its device (:class:`.blend.TorchBand`), any
    other callable returns NumPy probabilities (:class:`.blend.NumpyBand`). Errors in a reader
    or the writer are raised here; cancel (:class:`JobCancelled`) stops both.
    """
    from ..blend import NumpyBand, TorchBand
    from ..tile_io import BackgroundWriter

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
                        results = iter(tta_predict(engine, x) if tta else engine(x))
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


# -- outputs ------------------------------------------------------------------------------------
def _rgba(color: str) -> tuple[int, int, int, int]:
    h = (color or "#000000").lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)


def _profile(src, count: int, dtype: str, nodata, rows: tuple[int, int] | None = None) -> dict:
    """GeoTIFF profile on ``src``'s grid, or on its raster rows ``rows`` = (first, end)."""
    from rasterio.transform import Affine

    bs = 256
    y0, y1 = rows or (0, src.height)
    prof = {"driver": "GTiff", "width": src.width, "height": max(y1 - y0, 1), "count": count,
            "dtype": dtype, "crs": src.crs, "transform": src.transform * Affine.translation(0, y0),
            "nodata": nodata, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    if src.width >= bs and src.height >= bs:
        prof.update(tiled=True, blockxsize=bs, blockysize=bs)
    return prof


def polygonize(class_raster: Path, out_gpkg: Path, classes: list[dict], min_area: float,
               crs_wkt: str | None, min_pixels: int = 0, layer: str = "classes") -> int:
    """Class polygons (no background, no nodata) with class_id, class_name, area (m²) and
    perimeter (m) as the layer ``layer`` of the GeoPackage ``out_gpkg`` (its other layers kept,
    a previous ``layer`` replaced atomically: :mod:`~plugin.core.vector_output`), dropping
    polygons under ``min_area`` m² (on the ellipsoid for geographic CRSs,
    :func:`area_and_length`) or of fewer than ``min_pixels`` pixels (ENVI's aggregate minimum
    size); returns the number kept. GDAL's polygonize
    (4-connected, through rasterio) works on the band, not on a copy."""
    import numpy as np
    import rasterio
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import shape

    from ..vector_output import write_vector_layer

    names = {int(c["id"]): c["name"] for c in classes}
    measure = area_and_length(crs_wkt)
    ids, geoms, areas, perimeters = [], [], [], []
    with rasterio.open(class_raster) as src:
        t = src.transform
        min_planar = min_pixels * abs(t.a * t.e - t.b * t.d) * (1 - 1e-9)
        for geojson, value in shapes(rasterio.band(src, 1), transform=t):
            cid = int(value)
            if cid == 0 or cid == CLASS_NODATA:
                continue
            geom = shape(geojson)
            if geom.area < min_planar:
                continue
            area, perimeter = measure(geom)
            if area < min_area:
                continue
            ids.append(cid)
            geoms.append(geom)
            areas.append(area)
            perimeters.append(perimeter)
    write_vector_layer(out_gpkg, layer, shapely.to_wkb(np.array(geoms, dtype=object)), {
        "class_id": np.array(ids, np.int32),
        "class_name": np.array([names.get(i, str(i)) for i in ids], dtype=object),
        "area": np.array(areas, np.float64), "perimeter": np.array(perimeters, np.float64)},
        crs_wkt, "Polygon")
    return len(ids)


def classify_pixels(job, ctx: JobContext) -> dict:
    """Run a ClassifyPixelsJob (see the module docstring)."""
    import rasterio
    from rasterio.windows import Window

    from .. import distributed
    from ..blend import auto_windows
    from ..environment import resolve_device
    from ..raster_input import check_input, open_raster
    from ..raster_parts import assemble, part_path
    from .export import export_onnx
    from .modelfile import load_model, read_card

    started = time.monotonic()
    card = read_card(job.model)
    device = distributed.device_for(resolve_device(job.device))
    distributed.setup(device)   # several processes (torchrun): each classifies a share of rows
    classes = card["classes"]
    num_classes = int(card["num_outputs"])
    out_path = Path(job.output)
    prob_path = Path(job.output_probabilities) if job.output_probabilities else None
    vec_text, vec_layer = split_layer(job.output_vector or "", job.output_vector_layer)
    vec_path = Path(vec_text) if vec_text else None
    src = open_raster(job.input)
    tmps: list[Path] = []
    try:
        with src:
            scale_a, scale_b = check_input(src, card, ctx.log, job.rescale)
            tile, batch = network_window(card, job.tile_size, job.batch_size)
            if not job.batch_size:   # auto: from the free GPU memory
                batch = auto_windows(device, tile, int(card["bands"]), num_classes)
                ctx.log(f"{batch} windows of {tile} px per forward pass (BATCH_SIZE auto).")
            cells = None
            if getattr(job, "grid_model", ""):
                from ..gridfilter import grid_filter

                cells = grid_filter(src, job.grid_model, job.grid_threshold, 16, device, ctx)
            with distributed.main_first():   # one ONNX export into the shared cache
                engine = make_engine(job.model, lambda: load_model(job.model)[0], device,
                                     job.engine, ctx=ctx, export=export_onnx)
            rank, world = distributed.rank(), distributed.world_size()
            part, y0, y1 = rank_rows(src.height, src.width, tile, job.overlap, rank, world)
            ctx.log(f"Classifying {src.width} × {src.height} px with {engine.name} on {device}, "
                    f"tiles of {tile} px, overlap {job.overlap:g}" + (", TTA" if job.tta else ""))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            for final in (out_path, prob_path):   # left by a run that was killed
                if final is not None and distributed.is_main():
                    remove_stale_temporaries(final)
            tmp_cls = part_path(out_path, rank) if world > 1 else temp_path(out_path)
            tmps.append(tmp_cls)
            written = " and ".join(str(p) for p in (out_path, prob_path) if p)
            guard = gdal_write_guard(written)   # errors GDAL signals when blocks are flushed
            guard.__enter__()
            dst = rasterio.open(tmp_cls, "w", **_profile(src, 1, "uint8", CLASS_NODATA, (y0, y1)))
            dst.write_colormap(1, {int(c["id"]): _rgba(c["color"]) for c in classes})
            pdst = None
            if prob_path:
                prob_path.parent.mkdir(parents=True, exist_ok=True)
                tmp_prob = part_path(prob_path, rank) if world > 1 else temp_path(prob_path)
                tmps.append(tmp_prob)
                pdst = rasterio.open(tmp_prob, "w",
                                     **_profile(src, num_classes, "uint8", None, (y0, y1)))
                for c in classes:
                    pdst.set_band_description(int(c["id"]) + 1, f"{c['id']} {c['name']}")
            counts = np.zeros(256, np.int64)

            def on_rows(r0, p8, cls, valid) -> None:   # in the writer thread
                win = Window(0, r0 - y0, src.width, cls.shape[0])
                dst.write(cls, 1, window=win)
                counts[:] += np.bincount(cls.ravel(), minlength=256)
                if pdst is not None:
                    pdst.write(p8, window=win)

            try:
                stats = predict_raster(
                    src, engine, num_classes, card["mean"], tile, job.overlap,
                    batch, job.tta, on_rows,
                    progress=lambda d, t: ctx.progress("tile", d, t, "Classifying"),
                    cancelled=lambda: ctx.cancelled, part=part, scale=(scale_a, scale_b),
                    cell_mask=cells.mask if cells is not None else None,
                    probs="uint8" if pdst is not None else None)
            finally:   # a GPU out of memory becomes a UserError in Job.execute
                dst.close()
                if pdst is not None:
                    pdst.close()
                guard.__exit__(*sys.exc_info())   # raises only when nothing else did
            if world > 1:   # rank 0 puts the ranks' parts together; the others are done
                counts[:] = np.sum(distributed.gather(counts), axis=0)
                stats["tiles"] = sum(distributed.gather(stats["tiles"]))
                tmps.remove(tmp_cls)   # rank 0 reads, then deletes every part
                if prob_path:
                    tmps.remove(tmp_prob)
                distributed.barrier()
                if not distributed.is_main():
                    distributed.barrier()   # until rank 0 has read the parts
                    return {"rank": rank, "rows": [y0, y1], "tiles": stats["tiles"]}
                spans = [rank_rows(src.height, src.width, tile, job.overlap, r, world)[1:]
                         for r in range(world)]
                try:
                    for final, count, nodata in ((out_path, 1, CLASS_NODATA),
                                                 (prob_path, num_classes, None)):
                        if final is None:
                            continue
                        parts = [part_path(final, r) for r in range(world)]
                        tmps += [*parts, temp_path(final)]
                        assemble(parts, spans, temp_path(final),
                                 _profile(src, count, "uint8", nodata))
                finally:
                    distributed.barrier()
                tmp_cls = temp_path(out_path)
                tmp_prob = temp_path(prob_path) if prob_path else None
            os.replace(tmp_cls, out_path)
            ctx.artifact("class_raster", str(out_path))
            if prob_path:
                os.replace(tmp_prob, prob_path)
                ctx.artifact("probabilities", str(prob_path))
            crs_wkt = src.crs.to_wkt() if src.crs else None
        n_polygons = None
        if vec_path:
            ctx.progress("polygons", 0, 1, "Vectorising")
            n_polygons = polygonize(out_path, vec_path, classes, job.min_area, crs_wkt,
                                    job.min_pixels, vec_layer)
            ctx.artifact("polygons", str(vec_path))
            ctx.progress("polygons", 1, 1, "Done")
    finally:
        for t in tmps:
            if t.exists():
                t.unlink()
    names = {int(c["id"]): c["name"] for c in classes}
    pixels = {names.get(i, str(i)): int(counts[i]) for i in sorted(names) if counts[i]}
    optimized = {}
    if cells is not None:
        per_tile = stats["forward_seconds"] / max(stats["tiles_run"], 1)
        optimized = {"grid_cells": cells.cells, "grid_cells_skipped_share":
                     round(cells.share_skipped, 4), "grid_seconds": round(cells.seconds, 2),
                     "tiles_skipped": stats["tiles_skipped_by_grid"],
                     "seconds_saved": round(per_tile * stats["tiles_skipped_by_grid"]
                                            - cells.seconds, 2)}
        ctx.log(f"Optimized classification: {optimized['grid_cells_skipped_share']:.0%} of the "
                f"grid cells skipped, {optimized['tiles_skipped']} of {stats['tiles']} tiles not "
                f"run, about {optimized['seconds_saved']:g} s saved.")
        if not optimized["tiles_skipped"] and cells.share_skipped > 0:
            ctx.log(f"Every tile holds a flagged grid cell, so none was skipped: use tiles of "
                    f"the grid size (TILE_SIZE {cells.size}) or a higher GRID_THRESHOLD.",
                    "warning")
    return {**optimized, "output": str(out_path),
            "output_probabilities": str(prob_path) if prob_path else None,
            "output_vector": str(vec_path) if vec_path else None, "polygons": n_polygons,
            "output_vector_layer": vec_layer if vec_path else None,
            "engine": engine.name, "device": device, "pixels_per_class": pixels,
            "nodata_pixels": int(counts[CLASS_NODATA]), "tiles": stats["tiles"],
            "seconds": round(time.monotonic() - started, 2)}
