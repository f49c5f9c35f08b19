"""Detect Objects: tiled detection over rasters of any size, boxes merged across tiles.

Tiling. Tiles of ``T`` px overlap by ``O`` px. ``T`` is TILE_SIZE, or automatically the model's
patch size grown to at least ``AUTO_TILE_OVERLAPS × O`` (rounded up to 32 px): with trees up to
120 px trained on 128 px patches, tiles of the patch size moved 8 px at a time and ran 1225
tiles over a 400 px raster (each pixel detected ~150 times); 384 px tiles run 4. The detector is
convolutional and never resizes, so a larger tile sees objects at the same pixel size.
``O ≥`` the largest box the model was trained on (automatic: that + 10 %, at least 32 px), so
every object of a trained size lies wholly inside at least one tile (for a tile stride
``S = T − O``, an object starting at ``a`` with width ``w ≤ O`` fits in tile ``⌊a / S⌋``). The
last tile of a row or column is flush with the raster's edge; rasters smaller than a tile are
padded (mirrored) and boxes whose centre falls outside the raster are dropped. Tiles are read one
batch at a time (a reader thread keeps the next batch ready): memory does not grow with the
raster.

Merging. In each tile, boxes touching an inner tile edge (within :data:`EDGE_PX`) are dropped:
the object is cut there and lies whole in a neighbouring tile. Then boxes of the same class from
all tiles are merged by non-maximum suppression in map coordinates (torchvision's
``batched_nms``, float64) at the NMS IoU, so an object seen by two tiles is reported once. A
detector may box one object twice with an IoU under the NMS IoU — a little differently in two
tiles, or the whole object and a part of it in one tile — so two boxes of a class whose
intersection covers :data:`BOXED_TWICE_COVER` of the smaller one are merged too (the better
kept): :func:`merge_boxed_twice`.
Boxes whose centre pixel is nodata, and tiles that are entirely nodata, are skipped.

TTA (flips): every tile is also detected flipped left-right and up-down; the boxes are flipped
back and merged by the same per-class NMS.

Output: a GeoPackage layer (OUTPUT_LAYER, ``detections``; the file's other layers are kept) of
box polygons in the raster's CRS with ``class_id``, ``class_name``, ``score`` and the area in m²
(``area_m2``, on the ellipsoid for a geographic CRS: :func:`..areas.area_and_length`, as every
output's areas), or ``area_px`` for an ungeoreferenced image, whose boxes are in pixel
coordinates with y down; optionally the same layer of box centre points in a second GeoPackage.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ..errors import JobCancelled
from ..jobs import JobContext
from ..patchsize import ceil_multiple
from ..tiling import auto_tile, overlap_for

EDGE_PX = 2.0            # px: a box this close to an inner tile edge is left to the neighbour
#: Share of the smaller of two boxes of a class their intersection must cover for them to be
#: one object boxed twice. Across tiles from the start; within a tile too since OSBS_029
#: (bench/detection_real.py, seed 0): 23 pairs of the 62 boxes found covered ≥ 60 % of the
#: smaller (a crown and a part of it, IoU ≤ 0.5 so NMS kept both) while no two of the 61 true
#: crowns of the closed canopy covered more than 24 %; merging them raised F1 0.43 → 0.51.
BOXED_TWICE_COVER = 0.6


def box_areas(boxes_map: np.ndarray, crs_wkt: str | None, georeferenced: bool
              ) -> tuple[str, np.ndarray]:
    """(area field name, float64 (K,) areas) of (K, 4) map boxes: m² in every CRS (on the
    ellipsoid for a geographic one, :func:`..areas.area_and_length`), px² for an
    ungeoreferenced image."""
    import shapely

    from ..areas import area_field, areas

    b = np.asarray(boxes_map, np.float64).reshape(-1, 4)
    return (area_field(crs_wkt, georeferenced),
            areas(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]), crs_wkt))


# -- detection on tiles -------------------------------------------------------------------------
class TileDetector:
    """Boxes of a batch of tiles: ``(N, bands, T, T)`` float32 raw pixels → per tile
    ``(boxes (K, 4) float32 xyxy px, scores (K,), labels (K,))`` as numpy arrays."""

    def __init__(self, network, device: str, tta: bool, nms_iou: float) -> None:
        import torch

        self.device = device
        self.network = network.to(device).eval()
        self.tta = tta
        self.nms_iou = nms_iou
        self.torch = torch

    def _run(self, x):
        out = self.network(list(x))
        return [(o["boxes"].float(), o["scores"].float(), o["labels"]) for o in out]

    def __call__(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            results = self._run(x)
            if self.tta:
                from torchvision.ops import batched_nms

                w, h = x.shape[-1], x.shape[-2]
                lr = self._run(x.flip(-1))
                ud = self._run(x.flip(-2))
                merged = []
                for (b, s, lab), (b1, s1, l1), (b2, s2, l2) in zip(results, lr, ud):
                    b1 = torch.stack([w - b1[:, 2], b1[:, 1], w - b1[:, 0], b1[:, 3]], 1)
                    b2 = torch.stack([b2[:, 0], h - b2[:, 3], b2[:, 2], h - b2[:, 1]], 1)
                    bb, ss, ll = torch.cat([b, b1, b2]), torch.cat([s, s1, s2]), torch.cat(
                        [lab, l1, l2])
                    keep = batched_nms(bb, ss, ll, self.nms_iou)
                    merged.append((bb[keep], ss[keep], ll[keep]))
                results = merged
            return [(b.cpu().numpy(), s.cpu().numpy(), lab.cpu().numpy())
                    for b, s, lab in results]


def torch_tile_detector(job, card: dict, tile: int, score: float, nms_iou: float,
                        device: str) -> TileDetector:
    """A :class:`TileDetector` with the model's weights, set for ``job``'s thresholds."""
    from .modelfile import load_detector
    from .network import set_inference

    network, card = load_detector(job.model, card)
    network.transform.min_size, network.transform.max_size = (tile,), tile
    set_inference(network, min(score, 0.05) if job.tta else score, nms_iou,
                  job.max_detections)
    return TileDetector(network, device, job.tta, nms_iou)


def detect_raster(src, detector, fill: list[float], tile: int, overlap: int, batch: int,
                  progress=lambda d, t: None, cancelled=lambda: False, cells=None) -> dict:
    """Detect over the open rasterio dataset ``src``; boxes in raster pixel coordinates before
    the cross-tile NMS: {"boxes" (K, 4) float64, "scores", "labels", "tiles", "tiles_run",
    "forward_seconds"}. ``cells``: a grid model's
    :class:`~plugin.core.gridfilter.CellFilter`; tiles without a flagged cell are
    not run and boxes centred in an unflagged cell are dropped (optimized classification).
    """
    from ..tiling import read_tile, read_tiles, tile_starts

    H, W = src.height, src.width
    th, tw = min(tile, ceil_multiple(H)), min(tile, ceil_multiple(W))
    rows = tile_starts(H, th, max(th - overlap, 1))
    cols = tile_starts(W, tw, max(tw - overlap, 1))
    fill_a = np.asarray(fill, np.float32)[:, None, None]
    boxes, scores, labels, tiles = [], [], [], []
    total, done, forward_s = len(rows) * len(cols), 0, 0.0
    if cells is not None:   # only the pixels of flagged cells count as searched
        def searched(ri, c0, valid):
            return valid & cells.mask(rows[ri], c0, th, tw)
    else:
        def searched(ri, c0, valid):
            return valid

    def read(key, ds):
        ri, c0 = key
        data, valid = read_tile(ds, rows[ri], c0, th, tw, fill_a)
        v = searched(ri, c0, valid)
        return ri, c0, data, v, bool(v.any())     # (…, holds pixels to search)

    tiles_run = 0
    keys = [(ri, c0) for ri in range(len(rows)) for c0 in cols]
    groups = read_tiles(src, keys, read, batch)
    try:
        for group, x in groups:
            if cancelled():
                raise JobCancelled()
            work = [it for it in group if it[4]]
            tiles_run += len(work)
            if work:
                t0 = time.perf_counter()
                found = detector(x)
                forward_s += time.perf_counter() - t0
                for (ri, c0, _, valid, _work), (b, s, lab) in zip(work, found):
                    r0 = rows[ri]
                    keep = _inside_tile(b, r0, c0, th, tw, H, W) & _valid_centre(b, valid)
                    b = b[keep].astype(np.float64)
                    b[:, [0, 2]] += c0
                    b[:, [1, 3]] += r0
                    boxes.append(b)
                    scores.append(s[keep])
                    labels.append(lab[keep])
                    tiles.append(np.full(len(b), ri * len(cols) + cols.index(c0), np.int64))
            done += len(group)
            progress(done, total)
    finally:
        groups.close()      # stops the reading threads
    return {"boxes": _cat(boxes, (0, 4), np.float64), "scores": _cat(scores, (0,), np.float32),
            "labels": _cat(labels, (0,), np.int64), "tile_ids": _cat(tiles, (0,), np.int64),
            "tiles": total, "tiles_run": tiles_run,
            "tile_height": th, "tile_width": tw, "forward_seconds": forward_s}


def _cat(parts: list, shape: tuple, dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, dtype)


def _inside_tile(b: np.ndarray, r0: int, c0: int, th: int, tw: int, H: int, W: int
                 ) -> np.ndarray:
    """Boxes not touching an inner tile edge and with their centre inside the raster."""
    keep = np.ones(len(b), bool)
    if c0 > 0:
        keep &= b[:, 0] > EDGE_PX
    if c0 + tw < W:
        keep &= b[:, 2] < tw - EDGE_PX
    if r0 > 0:
        keep &= b[:, 1] > EDGE_PX
    if r0 + th < H:
        keep &= b[:, 3] < th - EDGE_PX
    cx, cy = (b[:, 0] + b[:, 2]) / 2 + c0, (b[:, 1] + b[:, 3]) / 2 + r0
    return keep & (cx < W) & (cy < H)


def _valid_centre(b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    h, w = valid.shape
    cx = np.clip(((b[:, 0] + b[:, 2]) / 2).astype(int), 0, w - 1)
    cy = np.clip(((b[:, 1] + b[:, 3]) / 2).astype(int), 0, h - 1)
    return valid[cy, cx]


def to_map(boxes_px: np.ndarray, transform) -> np.ndarray:
    """(K, 4) pixel xyxy → (K, 4) map (xmin, ymin, xmax, ymax), float64 (north-up or any
    axis-aligned transform)."""
    a, c, e, f = transform.a, transform.c, transform.e, transform.f
    x0, x1 = a * boxes_px[:, 0] + c, a * boxes_px[:, 2] + c
    y0, y1 = e * boxes_px[:, 1] + f, e * boxes_px[:, 3] + f
    return np.stack([np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1),
                     np.maximum(y0, y1)], 1)


def merge_across_tiles(boxes_map: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                       nms_iou: float) -> np.ndarray:
    """Indices kept by per-class NMS in map coordinates (float64), best score first, then by
    :func:`merge_boxed_twice`."""
    if len(boxes_map) == 0:
        return np.zeros(0, np.int64)
    origin = boxes_map[:, :2].min(0)
    local = boxes_map - np.concatenate([origin, origin])   # keeps float64 exact and small
    if "torch" in sys.modules:       # torchvision's batched_nms (the torch engine loaded it)
        import torch
        from torchvision.ops import batched_nms

        keep = batched_nms(torch.from_numpy(local), torch.from_numpy(scores.astype(np.float64)),
                           torch.from_numpy(labels), float(nms_iou)).numpy()
    else:                            # onnxruntime engine: the same rule without torch
        from .predict_onnx import nms_numpy

        keep = nms_numpy(local, scores, labels, float(nms_iou))
    return keep[merge_boxed_twice(local[keep], scores[keep], labels[keep])]


def merge_boxed_twice(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                      cover: float = BOXED_TWICE_COVER) -> np.ndarray:
    """Indices (into the inputs, best score first) left after dropping a box of the same class
    as a better box when their intersection covers ``cover`` of the smaller one: one object
    boxed twice (by two tiles, a little differently in each, or whole and in part by one tile),
    whose IoU can stay under the NMS IoU. ``boxes`` (n, 4) xyxy, ``scores`` (n,), ``labels``
    (n,). Neighbours are found through the boxes sorted by x, so the cost grows with n log n,
    not n²."""
    n = len(boxes)
    order = np.argsort(-scores, kind="stable")
    by_x = np.argsort(boxes[:, 0], kind="stable")
    x0_sorted = boxes[by_x, 0]
    widest = float((boxes[:, 2] - boxes[:, 0]).max()) if n else 0.0
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(n, bool)
    for i in order:
        if not alive[i]:
            continue
        lo = np.searchsorted(x0_sorted, boxes[i, 0] - widest, "left")
        hi = np.searchsorted(x0_sorted, boxes[i, 2], "right")
        c = by_x[lo:hi]
        c = c[alive[c] & (labels[c] == labels[i]) & (scores[c] <= scores[i]) & (c != i)]
        if not len(c):
            continue
        ix = np.minimum(boxes[c, 2], boxes[i, 2]) - np.maximum(boxes[c, 0], boxes[i, 0])
        iy = np.minimum(boxes[c, 3], boxes[i, 3]) - np.maximum(boxes[c, 1], boxes[i, 1])
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        alive[c[inter >= cover * np.minimum(area[c], area[i])]] = False
    return order[alive[order]]


# -- output -------------------------------------------------------------------------------------
def write_detections(path: Path, boxes_map: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                     names: dict[int, str], crs_wkt: str | None, area: tuple[str, np.ndarray],
                     points: bool = False, layer: str = "detections") -> int:
    """Box polygons (or centre points) with class_id, class_name, score, area as the layer
    ``layer`` of the GeoPackage ``path`` (:func:`~plugin.core.vector_output.write_vector_layer`:
    its other layers are kept, a previous ``layer`` replaced atomically); ``area``: (field name,
    the boxes' areas, see :func:`box_areas`); returns the number written."""
    import shapely

    from ..vector_output import write_vector_layer

    b = np.asarray(boxes_map, np.float64).reshape(-1, 4)
    if points:
        geoms = shapely.points((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
    else:
        geoms = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3], ccw=True)
    ids = np.asarray(labels, np.int32).reshape(-1)
    write_vector_layer(path, layer, shapely.to_wkb(np.asarray(geoms, dtype=object)), {
        "class_id": ids,
        "class_name": np.array([names.get(int(i), str(int(i))) for i in ids], dtype=object),
        "score": np.round(np.asarray(scores, np.float64), 4),
        area[0]: np.broadcast_to(np.asarray(area[1], np.float64), (len(b),))},
        crs_wkt, "Point" if points else "Polygon")
    return len(ids)


# -- the job ------------------------------------------------------------------------------------
def detect_objects(job, ctx: JobContext) -> dict:
    """Run a DetectObjectsJob (see the module docstring); return counts and output paths.
    On the CPU the tiles run through onnxruntime (:mod:`.detect_onnx`, torch is not imported
    once the export is cached) unless ENGINE is torch; on CUDA through torch."""
    from ..environment import resolve_device
    from ..raster_input import check_input, georeferenced_or_warn, open_raster
    from ..raster_model_job import model_default
    from .modelfile import object_classes, read_card
    from .predict_onnx import ort_tile_detector

    started = time.monotonic()
    card = read_card(job.model)
    score = model_default(job.score_threshold, card, "score_threshold", 0.3)
    nms_iou = model_default(job.nms_iou, card, "nms_iou", 0.5)
    tile = auto_tile(card, job.tile_size)
    overlap = overlap_for(card, tile, job.overlap, ctx)
    device = resolve_device(job.device)
    with open_raster(job.input) as src:
        check_input(src, card, ctx.log)
        georeferenced = georeferenced_or_warn(src, ctx.log, "the boxes")
        # a raster smaller than the tile is searched in one tile of its own size (rounded up
        # to 32 px), as detect_raster does
        square = min(tile, ceil_multiple(max(src.height, src.width)))
        detector = ort_tile_detector(job, card, square, score, nms_iou, device, ctx)
        if detector is None:
            detector = torch_tile_detector(job, card, tile, score, nms_iou, device)
        cells = None
        if job.grid_model:
            from ..gridfilter import grid_filter

            cells = grid_filter(src, job.grid_model, job.grid_threshold, 16, device, ctx)
        ctx.log(f"Detecting objects in {src.width} × {src.height} px on {device}: tiles of "
                f"{tile} px overlapping by {overlap} px, score ≥ {score:g}, NMS IoU "
                f"{nms_iou:g}" + (", flips TTA" if job.tta else ""))
        found = detect_raster(src, detector, card["mean"], tile, overlap, job.batch_size,
                              progress=lambda d, t: ctx.progress("tile", d, t, "Detecting"),
                              cancelled=lambda: ctx.cancelled, cells=cells)
        transform, crs = src.transform, src.crs
    sel = found["scores"] >= score
    boxes_map = to_map(found["boxes"][sel], transform)
    scores, labels = found["scores"][sel], found["labels"][sel]
    keep = merge_across_tiles(boxes_map, scores, labels, nms_iou)
    boxes_map, scores, labels = boxes_map[keep], scores[keep], labels[keep]
    names = {int(c["id"]): c["name"] for c in object_classes(card)}
    # background (0, never a training positive) and outputs the card names no class for (an
    # edited card: warned) are no detections
    named = np.isin(labels, list(names))
    unnamed = sorted(set(labels[~named].tolist()) - {0})
    if unnamed:
        ctx.log(f"{int((~named & (labels != 0)).sum())} detection(s) of output id(s) "
                f"{unnamed}, for which the model card names no class, were dropped: use the "
                "model file as training wrote it.", "warning")
    boxes_map, scores, labels = boxes_map[named], scores[named], labels[named]
    crs_wkt = crs.to_wkt() if crs else None
    area = box_areas(boxes_map, crs_wkt, georeferenced)
    outputs = [(Path(job.output), False)]
    if job.output_points:
        outputs.append((Path(job.output_points), True))
    for path, points in outputs:
        write_detections(path, boxes_map, scores, labels, names, crs_wkt, area, points,
                         job.output_layer)
        ctx.artifact("points" if points else "detections", str(path))
    per_class = {names.get(int(k), str(k)): int((labels == k).sum()) for k in np.unique(labels)}
    optimized = {}
    if cells is not None:
        skipped = found["tiles"] - found["tiles_run"]
        per_tile = found["forward_seconds"] / max(found["tiles_run"], 1)
        optimized = {"grid_cells": cells.cells,
                     "grid_cells_skipped_share": round(cells.share_skipped, 4),
                     "grid_seconds": round(cells.seconds, 2), "tiles_skipped": skipped,
                     "seconds_saved": round(per_tile * skipped - cells.seconds, 2)}
        ctx.log(f"Optimized detection: {cells.share_skipped:.0%} of the grid cells skipped, "
                f"{skipped} of {found['tiles']} tiles not run, about "
                f"{optimized['seconds_saved']:g} s saved.")
    return {**optimized, "output": job.output, "output_points": job.output_points or None,
            "output_layer": job.output_layer,
            "detections": int(len(scores)), "per_class": per_class, "device": device,
            "engine": getattr(detector, "name", "torch"),
            "tiles": found["tiles"], "tile_size": tile, "overlap": overlap,
            "score_threshold": score, "nms_iou": nms_iou, "area_field": area[0],
            "forward_seconds": round(found["forward_seconds"], 3),
            "seconds": round(time.monotonic() - started, 2)}
