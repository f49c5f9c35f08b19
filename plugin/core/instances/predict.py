"""Segment Objects: Mask R-CNN over rasters of any size, one polygon per object.

Tiling (:mod:`..tiling`, as Detect Objects): tiles of ``T`` px overlapping by ``O`` px; ``T`` is
TILE_SIZE or the model's patch size grown to at least three overlaps, ``O`` at least the longest
object of the training data (the card's ``max_box_px``; automatic: that + 10 %, ≥ 32 px), so an
object of a trained size lies whole in at least one tile. Tiles are read in batches by reader
threads; entirely nodata tiles (and, with GRID_MODEL, tiles with no flagged cell) are not run.

Per tile, Mask R-CNN gives boxes, scores, classes and mask probabilities; a pixel belongs to an
object where its mask probability reaches the card's ``mask_threshold`` (0.5) and it is valid
(not nodata, inside the raster; with a grid model, inside a flagged cell). Objects scoring below
SCORE_THRESHOLD are dropped, and so is an object whose mask overlaps a better one of its class
in the same tile by :data:`MERGE_COVER` of the smaller (:func:`suppress_overlaps`: box NMS
leaves the box of a part of an object beside the box of the whole). Each mask becomes a
polygon (``rasterio.features.shapes``, pixel edges; the largest part when a mask falls apart) in
map coordinates.

Merging across tiles. An object cut by a tile edge is found in pieces, one per tile, and whole
in a tile holding it entirely. Two polygons of the same class from *different* tiles whose
intersection covers at least :data:`MERGE_COVER` of the smaller one are one object: the groups
so linked (transitively: a large object over four tiles) become the union of their polygons
(shapely, in map coordinates), with the best score. Polygons of one tile are never merged (two
touching objects stay two). Then outlines are simplified by SIMPLIFY px (Douglas-Peucker,
topology kept).

Output: a GeoPackage layer (OUTPUT_LAYER, ``objects``; the file's other layers are kept) of
polygons in the raster's CRS with ``class_id``, ``class_name``, ``score``, the area in m²
(``area_m2``) and the perimeter in m (``perimeter_m``), both on the ellipsoid for a geographic
CRS (:func:`..areas.area_and_length`); an ungeoreferenced image gives pixel coordinates (y down)
and ``area_px`` / ``perimeter_px``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import JobCancelled
from ..jobs import JobContext
from ..patchsize import ceil_multiple

MERGE_COVER = 0.5   # share of the smaller polygon two pieces from different tiles must share


class TileSegmenter:
    """Objects of a batch of tiles: ``(N, bands, T, T)`` float32 raw pixels → per tile a list
    of (class id, score, mask bool (T, T))."""

    def __init__(self, network, device: str, mask_threshold: float) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.network = network.to(device).eval()
        self.mask_threshold = float(mask_threshold)

    def __call__(self, batch: np.ndarray) -> list[list[tuple[int, float, np.ndarray]]]:
        with self.torch.inference_mode():
            out = self.network(list(self.torch.from_numpy(batch).to(self.device)))
        return [[(int(k), float(s), m) for k, s, m in zip(
            o["labels"].cpu().numpy(), o["scores"].float().cpu().numpy(),
            (o["masks"][:, 0] >= self.mask_threshold).cpu().numpy())] for o in out]


def mask_polygon(mask: np.ndarray, row: int, col: int):
    """The largest polygon (shapely, raster pixel coordinates, pixel edges) of the True pixels
    of ``mask`` (H, W) bool whose top-left pixel is raster pixel (``row``, ``col``); None when
    the mask is empty."""
    import shapely
    from rasterio.features import shapes
    from rasterio.transform import Affine

    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if not len(rows):
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    part = np.ascontiguousarray(mask[r0:r1, c0:c1]).astype(np.uint8)
    polys = [shapely.geometry.shape(g) for g, v in shapes(
        part, mask=part.astype(bool), transform=Affine.translation(col + c0, row + r0)) if v]
    return max(polys, key=lambda p: p.area) if polys else None


def suppress_overlaps(objs: list[tuple[int, float, np.ndarray]], cover: float = MERGE_COVER
                      ) -> list[tuple[int, float, np.ndarray]]:
    """The objects ``(class id, score, mask (T, T) bool)`` of one tile left after dropping, best
    score first, an empty mask and a mask of the same class as a better kept one when their
    intersection covers ``cover`` of the smaller (mask NMS: Mask R-CNN's box NMS keeps a box of
    part of an object next to the box of the whole, their box IoU under the NMS IoU)."""
    kept: list[tuple[int, float, np.ndarray, int]] = []
    for cid, s, mask in sorted(objs, key=lambda o: -o[1]):
        area = int(mask.sum())
        if area == 0 or any(k[0] == cid and (mask & k[2]).sum() >= cover * min(area, k[3])
                            for k in kept):
            continue
        kept.append((cid, s, mask, area))
    return [k[:3] for k in kept]


def segment_raster(src, segmenter, fill: list[float], tile: int, overlap: int, batch: int,
                   score: float, progress=lambda d, t: None, cancelled=lambda: False,
                   cells=None) -> dict:
    """Objects over the open rasterio dataset ``src`` before the merge across tiles:
    {"objects": [(class id, score, polygon in raster pixel coordinates, tile id)], "tiles",
    "tiles_run", "forward_seconds"}. ``cells``: a grid model's
    :class:`~plugin.core.gridfilter.CellFilter` (only flagged cells are searched)."""
    from ..tiling import read_tile, read_tiles, tile_starts

    H, W = src.height, src.width
    th, tw = min(tile, ceil_multiple(H)), min(tile, ceil_multiple(W))
    rows = tile_starts(H, th, max(th - overlap, 1))
    cols = tile_starts(W, tw, max(tw - overlap, 1))
    fill_a = np.asarray(fill, np.float32)[:, None, None]

    def read(key, ds):
        ri, c0 = key
        data, valid = read_tile(ds, rows[ri], c0, th, tw, fill_a)
        if cells is not None:
            valid = valid & cells.mask(rows[ri], c0, th, tw)
        return ri, c0, data, valid, bool(valid.any())

    objects, done, tiles_run, forward_s = [], 0, 0, 0.0
    total = len(rows) * len(cols)
    groups = read_tiles(src, [(ri, c0) for ri in range(len(rows)) for c0 in cols], read, batch)
    try:
        for group, x in groups:
            if cancelled():
                raise JobCancelled()
            work = [it for it in group if it[4]]
            tiles_run += len(work)
            if work:
                t0 = time.perf_counter()
                found = segmenter(x)
                forward_s += time.perf_counter() - t0
                for (ri, c0, _, valid, _w), objs in zip(work, found):
                    tile_id = ri * len(cols) + cols.index(c0)
                    kept = suppress_overlaps([(c, s, m & valid) for c, s, m in objs
                                              if s >= score])
                    for cid, s, mask in kept:
                        poly = mask_polygon(mask, rows[ri], c0)
                        if poly is not None:
                            objects.append((cid, s, poly, tile_id))
            done += len(group)
            progress(done, total)
    finally:
        groups.close()      # stops the reading threads
    return {"objects": objects, "tiles": total, "tiles_run": tiles_run,
            "forward_seconds": forward_s}


def merge_across_tiles(objects: list[tuple[int, float, object, int]],
                       cover: float = MERGE_COVER) -> list[tuple[int, float, object]]:
    """(class id, score, polygon) per object, best score first, from the pieces ``objects``
    ((class id, score, polygon, tile id)) by the rule of the module docstring (union-find over
    the pairs an STRtree finds)."""
    import shapely

    n = len(objects)
    if not n:
        return []
    geoms = [o[2] for o in objects]
    areas = np.array([g.area for g in geoms])
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist()):
        if i >= j or objects[i][0] != objects[j][0] or objects[i][3] == objects[j][3]:
            continue
        inter = geoms[i].intersection(geoms[j]).area
        if inter >= cover * min(areas[i], areas[j]):
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    merged = []
    for members in groups.values():
        best = max(members, key=lambda i: objects[i][1])
        shape = shapely.union_all([geoms[i] for i in members]) if len(members) > 1 \
            else geoms[best]
        if shape.geom_type != "Polygon":      # pieces touching only at a corner
            shape = max(getattr(shape, "geoms", [shape]), key=lambda p: p.area)
        merged.append((objects[best][0], objects[best][1], shape))
    return sorted(merged, key=lambda m: -m[1])


def to_map(polygon, transform):
    """``polygon`` from raster pixel coordinates to map coordinates (affine ``transform``)."""
    from shapely import affinity

    t = transform
    return affinity.affine_transform(polygon, [t.a, t.b, t.d, t.e, t.c, t.f])


def measure_fields(geoms: list, crs_wkt: str | None, georeferenced: bool) -> dict:
    """{area field: float64 (K,), perimeter field: float64 (K,)}: m² and m in every CRS (on the
    ellipsoid for a geographic one), px² and px for an ungeoreferenced image."""
    from ..areas import area_and_length, area_field

    name = area_field(crs_wkt, georeferenced)
    perimeter = {"area_m2": "perimeter_m", "area_px": "perimeter_px"}.get(
        name, "perimeter_map_units")
    measure = area_and_length(crs_wkt)
    values = np.array([measure(g) for g in geoms], np.float64).reshape(-1, 2)
    return {name: values[:, 0], perimeter: values[:, 1]}


def write_objects(path: Path, objects: list[tuple[int, float, object]], names: dict[int, str],
                  crs_wkt: str | None, georeferenced: bool, layer: str = "objects") -> int:
    """One polygon per object with class_id, class_name, score, area and perimeter as the
    layer ``layer`` of the GeoPackage ``path`` (its other layers kept:
    :func:`~plugin.core.vector_output.write_vector_layer`); returns the number written."""
    import shapely

    from ..vector_output import write_vector_layer

    geoms = [shapely.orient_polygons(g) if hasattr(shapely, "orient_polygons")
             else shapely.geometry.polygon.orient(g) for _, _, g in objects]
    ids = np.array([o[0] for o in objects], np.int32)
    write_vector_layer(path, layer, shapely.to_wkb(np.asarray(geoms, dtype=object)), {
        "class_id": ids,
        "class_name": np.array([names.get(int(i), str(int(i))) for i in ids], dtype=object),
        "score": np.round(np.array([o[1] for o in objects], np.float64), 4),
        **measure_fields(geoms, crs_wkt, georeferenced)}, crs_wkt, "Polygon")
    return len(ids)


# -- the job ------------------------------------------------------------------------------------
def segment_objects(job, ctx: JobContext) -> dict:
    """Run a SegmentObjectsJob (see the module docstring); return counts and the output."""
    from ..environment import resolve_device
    from ..raster_input import check_input, georeferenced_or_warn, open_raster
    from ..raster_model_job import model_default
    from ..tiling import auto_tile, overlap_for
    from .modelfile import load_model, object_classes, read_card
    from .network import set_inference

    started = time.monotonic()
    card = read_card(job.model)
    score = model_default(job.score_threshold, card, "score_threshold", 0.5)
    nms_iou = model_default(job.nms_iou, card, "nms_iou", 0.5)
    tile = auto_tile(card, job.tile_size)
    overlap = overlap_for(card, tile, job.overlap, ctx)
    device = resolve_device(job.device)
    with open_raster(job.input) as src:
        check_input(src, card, ctx.log)
        georeferenced = georeferenced_or_warn(src, ctx.log, "the objects")
        network, card = load_model(job.model, card)
        set_inference(network, score, nms_iou, job.max_detections)
        segmenter = TileSegmenter(network, device, float(card.get("mask_threshold", 0.5)))
        cells = None
        if job.grid_model:
            from ..gridfilter import grid_filter

            cells = grid_filter(src, job.grid_model, job.grid_threshold, 16, device, ctx)
        ctx.log(f"Segmenting objects in {src.width} × {src.height} px on {device}: tiles of "
                f"{tile} px overlapping by {overlap} px, score ≥ {score:g}")
        found = segment_raster(src, segmenter, card["mean"], tile, overlap, job.batch_size,
                               score, progress=lambda d, t: ctx.progress("tile", d, t,
                                                                         "Segmenting"),
                               cancelled=lambda: ctx.cancelled, cells=cells)
        transform, crs = src.transform, src.crs
        step = float(abs(transform.a)) if georeferenced else 1.0
    names = {int(c["id"]): c["name"] for c in object_classes(card)}
    pieces = [(cid, s, to_map(p, transform), t) for cid, s, p, t in found["objects"]]
    unnamed = sorted({p[0] for p in pieces} - set(names) - {0})
    if unnamed:
        ctx.log(f"{sum(p[0] in unnamed for p in pieces)} object(s) of output id(s) {unnamed}, "
                "for which the model card names no class, were dropped: use the model file as "
                "training wrote it.", "warning")
    objects = merge_across_tiles([p for p in pieces if p[0] in names])
    if job.simplify > 0:
        objects = [(cid, s, g.simplify(job.simplify * step, preserve_topology=True))
                   for cid, s, g in objects]
    objects = [o for o in objects if not o[2].is_empty]
    crs_wkt = crs.to_wkt() if crs else None
    write_objects(Path(job.output), objects, names, crs_wkt, georeferenced, job.output_layer)
    ctx.artifact("objects", job.output)
    per_class = {}
    for cid, _, _ in objects:
        per_class[names[cid]] = per_class.get(names[cid], 0) + 1
    return {"output": job.output, "output_layer": job.output_layer, "objects": len(objects),
            "pieces": len(pieces), "per_class": per_class, "device": device,
            "classes": object_classes(card), "tiles": found["tiles"],
            "tiles_run": found["tiles_run"], "tile_size": tile, "overlap": overlap,
            "score_threshold": score, "forward_seconds": round(found["forward_seconds"], 3),
            "seconds": round(time.monotonic() - started, 2)}
