"""Grid cells: the square windows a grid model classifies, and their multi-label targets.

A raster is cut into cells of ``grid_size`` px (rows and columns from 0, the last ones may reach
past the raster edge; outside pixels are padded and not counted). A cell is labelled with every
class whose labelled pixels cover at least ``min_cover`` (0–1) of the cell's valid pixels (pixels
inside the raster and not nodata/ignored). With ``pad_small_features``, a class also counts when
it holds at least :data:`SMALL_FEATURE_PX` pixels in the cell (so a small object, e.g. one car
in a 224 px cell, still flags it). A cell with no such class is a background cell (all targets
0). Targets follow the order of the classes list (output k ↔ classes[k]).
"""

from __future__ import annotations

import numpy as np

SMALL_FEATURE_PX = 64     # px (an 8 × 8 object) that flag a cell with pad small features
DEFAULT_MIN_COVER = 0.05


def cell_targets(class_pixels: dict[int, int], class_ids: list[int], min_cover: float,
                 pad_small_features: bool = False) -> np.ndarray:
    """(C,) float32 multi-hot target of a cell from its pixel counts per label value
    (0 = background; ignored pixels are not in ``class_pixels``)."""
    valid = float(sum(class_pixels.values()))
    out = np.zeros(len(class_ids), np.float32)
    if valid <= 0:
        return out
    for k, cid in enumerate(class_ids):
        n = class_pixels.get(cid, 0)
        if n and (n / valid >= min_cover or (pad_small_features and n >= SMALL_FEATURE_PX)):
            out[k] = 1.0
    return out


def cell_starts(length: int, size: int) -> list[int]:
    """Cell starts 0, size, 2·size, … covering ``length`` px."""
    return list(range(0, max(length, 1), size))
