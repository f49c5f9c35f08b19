"""Object boxes in pixel coordinates: from label geometries, padded, clipped to patches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MIN_CLIPPED_PX = 1.0  # a box piece narrower or shorter than this inside a patch is dropped


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in raster pixel coordinates (x to the right, y down), edges
    inclusive of the covered pixel area: x1 - x0 is the width in px."""

    fid: int
    class_id: int
    x0: float
    y0: float
    x1: float
    y1: float
    kind: str = "polygons"   # geometry family it came from

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def _coords(coords: Any) -> Iterable[tuple[float, float]]:
    if coords and isinstance(coords[0], (int, float)):
        yield float(coords[0]), float(coords[1])
        return
    for c in coords:
        yield from _coords(c)


def geometry_box(geometry: dict, transform) -> tuple[float, float, float, float] | None:
    """Pixel extent (x0, y0, x1, y1) of a GeoJSON geometry given the raster's affine transform."""
    inv = ~transform
    pts = [inv * xy for xy in _coords(geometry.get("coordinates", []))]
    if not pts:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def feature_boxes(features: Iterable[Any], transform, width: int, height: int,
                  point_box: float | dict[int, float] = 25.0, min_size: float = 25.0,
                  pad: bool = True) -> list[Box]:
    """Boxes of label features (objects with fid, class_id, layer, geometry) on a raster.

    Polygons and lines give their extent (at least 1 px across), points a ``point_box`` px
    square around them (one size, or a size per class id; missing ids: 25 px). With ``pad``,
    boxes smaller than ``min_size`` px in x or y grow to it
    around their centre. Boxes are clipped to the raster; those with nothing inside are dropped.
    """
    out = []
    for f in features:
        ext = geometry_box(f.geometry, transform)
        if ext is None:
            continue
        x0, y0, x1, y1 = ext
        layer = getattr(f, "layer", "polygons")
        if layer == "points" or (x1 - x0 == 0 and y1 - y0 == 0):
            size = (point_box.get(int(f.class_id), 25.0) if isinstance(point_box, dict)
                    else point_box)
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, size / 2
            x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
        # a horizontal or vertical line still covers the pixels it crosses: at least 1 px
        x0, y0, x1, y1 = pad_box((x0, y0, x1, y1), min_size if pad else 1.0)
        x0, y0 = max(x0, 0.0), max(y0, 0.0)
        x1, y1 = min(x1, float(width)), min(y1, float(height))
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            continue
        out.append(Box(int(f.fid), int(f.class_id), x0, y0, x1, y1, layer))
    return out


def pad_box(box: tuple[float, float, float, float], min_size: float
            ) -> tuple[float, float, float, float]:
    """Grow a box to at least ``min_size`` in x and in y, keeping its centre."""
    x0, y0, x1, y1 = box
    if x1 - x0 < min_size:
        cx = (x0 + x1) / 2
        x0, x1 = cx - min_size / 2, cx + min_size / 2
    if y1 - y0 < min_size:
        cy = (y0 + y1) / 2
        y0, y1 = cy - min_size / 2, cy + min_size / 2
    return x0, y0, x1, y1


def clip_to_patch(box: Box, row: int, col: int, size: int, height: int, width: int
                  ) -> tuple[float, float, float, float] | None:
    """The part of ``box`` inside the patch (and the raster), in patch pixel coordinates, or
    None when less than :data:`MIN_CLIPPED_PX` of it is inside in x or y."""
    x0 = max(box.x0, col, 0) - col
    y0 = max(box.y0, row, 0) - row
    x1 = min(box.x1, col + size, width) - col
    y1 = min(box.y1, row + size, height) - row
    if x1 - x0 < MIN_CLIPPED_PX or y1 - y0 < MIN_CLIPPED_PX:
        return None
    return x0, y0, x1, y1


def boxes_in_patch(boxes: list[Box], row: int, col: int, size: int, height: int, width: int
                   ) -> list[tuple[Box, tuple[float, float, float, float]]]:
    """(box, clipped box in patch coordinates) for each box overlapping the patch."""
    out = []
    for b in boxes:
        if b.x1 <= col or b.x0 >= col + size or b.y1 <= row or b.y0 >= row + size:
            continue
        clipped = clip_to_patch(b, row, col, size, height, width)
        if clipped is not None:
            out.append((b, clipped))
    return out
