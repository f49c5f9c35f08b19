"""Classify Pixels: tiled inference over rasters of any size with bounded memory (the shared
tiled, blended loop of :mod:`..tiled_predict`), class raster, probabilities and polygons.

On the CPU the forward pass runs through onnxruntime when it is installed (the model is exported
once to a cache folder); on CUDA through torch with bf16/fp16 autocast and channels-last.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..areas import area_and_length
from ..atomic import remove_stale_temporaries, temp_path
from ..blend import CLASS_NODATA
from ..inference import make_engine
from ..jobs import JobContext
from ..outputs import gdal_write_guard
from ..tiled_predict import network_window, predict_raster, raster_profile
from ..tiling import rank_rows
from ..vector_output import split_layer


# -- outputs ------------------------------------------------------------------------------------
def _rgba(color: str) -> tuple[int, int, int, int]:
    h = (color or "#000000").lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)


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


def model_views(card: dict) -> tuple:
    """The TTA views of the model of ``card``: those its training augmentation taught it
    (:func:`..inference.learnt_views` of its AUGMENT_ROTATION and AUGMENT_FLIP, on by default
    and so for a card that does not record them)."""
    from ..inference import learnt_views

    training = card.get("training") or {}
    return learnt_views(bool(training.get("augment_rotation", True)),
                        bool(training.get("augment_flip", True)))


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
            views = model_views(card) if job.tta else ((False, 0),)
            ctx.log(f"Classifying {src.width} × {src.height} px with {engine.name} on {device}, "
                    f"tiles of {tile} px, overlap {job.overlap:g}"
                    + (f", TTA: the mean of {len(views)} turned/flipped views"
                       if len(views) > 1 else ""))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            for final in (out_path, prob_path):   # left by a run that was killed
                if final is not None and distributed.is_main():
                    remove_stale_temporaries(final)
            tmp_cls = part_path(out_path, rank) if world > 1 else temp_path(out_path)
            tmps.append(tmp_cls)
            written = " and ".join(str(p) for p in (out_path, prob_path) if p)
            guard = gdal_write_guard(written)   # errors GDAL signals when blocks are flushed
            guard.__enter__()
            dst = rasterio.open(tmp_cls, "w",
                                **raster_profile(src, 1, "uint8", CLASS_NODATA, (y0, y1)))
            dst.write_colormap(1, {int(c["id"]): _rgba(c["color"]) for c in classes})
            pdst = None
            if prob_path:
                prob_path.parent.mkdir(parents=True, exist_ok=True)
                tmp_prob = part_path(prob_path, rank) if world > 1 else temp_path(prob_path)
                tmps.append(tmp_prob)
                pdst = rasterio.open(tmp_prob, "w",
                                     **raster_profile(src, num_classes, "uint8", None, (y0, y1)))
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
                    batch, views if len(views) > 1 else False, on_rows,
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
                                 raster_profile(src, count, "uint8", nodata))
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
