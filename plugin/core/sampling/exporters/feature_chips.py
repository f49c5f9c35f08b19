"""GBDX-style chips cut around label features: ``chips/<feature_id>.tif`` + ``ref.geojson``.

A chip is the feature's pixel box (points: a ``box_size`` square). Chips with a side longer than
``max_side`` or shorter than ``min_side`` are skipped; the others are zero-padded, centred, to
``max_side × max_side`` and, with ``resize`` > 0, resampled (bilinear) to ``resize × resize``.
Each chip is georeferenced (its padded, resized grid).
"""

from __future__ import annotations

import json
import math

import numpy as np

from ...validpixels import data_band_count, read_data
from ..boxes import Box
from ..reader import PatchReader
from .common import ExportState, write_geotiff

LAYOUT = {"chips": "chips/<feature_id>.tif",
          "reference": "ref.geojson: one feature per chip with feature_id, class_name, class_id, "
                       "split (geometry: the label, in the raster CRS)"}


def feature_id(state: ExportState, source: int, box: Box) -> str:
    if len(state.data.sources) == 1:
        return f"{box.kind}_{box.fid}"
    return f"{state.names[source]}_{box.kind}_{box.fid}"


def chip_window(box: Box) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the whole pixels a box covers."""
    c0, r0 = math.floor(box.x0 + 1e-6), math.floor(box.y0 + 1e-6)
    c1, r1 = math.ceil(box.x1 - 1e-6), math.ceil(box.y1 - 1e-6)
    return r0, c0, max(r1 - r0, 1), max(c1 - c0, 1)


def write_feature_chip(state: ExportState, reader: PatchReader, source: int, box: Box,
                       geometry: dict, split: str) -> str | None:
    """Write one chip; return why it was skipped, or None."""
    from rasterio.windows import Window

    opts = state.options
    row, col, h, w = chip_window(box)
    if max(h, w) > opts.max_side:
        return "larger than the maximum side"
    if min(h, w) < opts.min_side:
        return "smaller than the minimum side"
    ds = reader.image_dataset(source)
    side = int(opts.max_side)
    off_r, off_c = (side - h) // 2, (side - w) // 2
    chip = np.zeros((data_band_count(ds), side, side), dtype=ds.dtypes[0])
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, ds.height), min(col + w, ds.width)
    if r1 > r0 and c1 > c0:
        data = read_data(ds, window=Window(c0, r0, c1 - c0, r1 - r0))
        chip[:, off_r + r0 - row:off_r + r1 - row, off_c + c0 - col:off_c + c1 - col] = data
    transform = ds.window_transform(Window(col - off_c, row - off_r, side, side))
    if opts.resize and opts.resize != side:
        from affine import Affine
        from scipy.ndimage import zoom

        factor = opts.resize / side
        chip = np.stack([zoom(b.astype(np.float32), factor, order=1) for b in chip])
        chip = chip[:, :opts.resize, :opts.resize]
        if np.issubdtype(ds.dtypes[0], np.integer):
            info = np.iinfo(ds.dtypes[0])
            chip = np.clip(np.rint(chip), info.min, info.max)
        chip = chip.astype(ds.dtypes[0])
        transform = transform * Affine.scale(side / opts.resize)
    fid = feature_id(state, source, box)
    rel = f"chips/{fid}.tif"
    write_geotiff(state.folder / rel, chip, ds.crs, transform, None, opts.compress)
    name = state.data.class_names.get(box.class_id, str(box.class_id))
    state.items.append({"name": fid, "image": rel, "split": split, "source": state.names[source],
                        "feature_id": fid, "fid": box.fid, "layer": box.kind,
                        "class_id": box.class_id, "class_name": name,
                        "box": [round(v, 3) for v in (box.x0, box.y0, box.x1, box.y1)],
                        "side": [w, h], "geometry": geometry})
    return None


def finish_feature_chips(state: ExportState, crs: str | None) -> None:
    features = []
    for item in state.items:
        features.append({"type": "Feature", "id": item["feature_id"],
                         "geometry": item["geometry"],
                         "properties": {"feature_id": item["feature_id"],
                                        "class_name": item["class_name"],
                                        "class_id": item["class_id"], "split": item["split"],
                                        "image": item["image"]}})
    data = {"type": "FeatureCollection", "features": features}
    if crs:
        data["crs"] = {"type": "name", "properties": {"name": crs}}
    (state.folder / "ref.geojson").write_text(json.dumps(data), encoding="utf-8")
    for item in state.items:  # the manifest keeps the index small: geometries are in ref.geojson
        item.pop("geometry", None)
