"""A seeded synthetic object scene with exact boxes, for tests, the demo and the benchmark.

Objects are axis-aligned squares on pixel edges ("car": bright red, "roof": bright grey) on a
noisy green-brown background; their boxes are known exactly, in pixels and in map coordinates.

Scenes of different seeds lie side by side in map coordinates (:data:`SEED_SPACING` m apart, all
in the same CRS), never on each other: a labeling project's labels are map geometries, so two
overlapping scenes in one project would label each other's raster with boxes of objects that
are not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..synthetic import scene_labeling_project, write_painted_raster

OBJECT_CLASSES = [(1, "car", "#e31a1c"), (2, "roof", "#6a3d9a")]
SEED_SPACING = 5000.0     # map units between the left edges of scenes of consecutive seeds
_COLOURS = {0: (0.30, 0.40, 0.25), 1: (0.90, 0.15, 0.10), 2: (0.80, 0.80, 0.85)}


@dataclass
class ObjectScene:
    raster: Path
    boxes: list[tuple[int, int, int, int, int]]   # (class id, col0, row0, col1, row1) px edges
    transform: object
    crs: str
    width: int
    height: int

    def map_box(self, box) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in map units of a pixel box."""
        _, c0, r0, c1, r1 = box
        (x0, y0), (x1, y1) = self.transform * (c0, r1), self.transform * (c1, r0)
        return x0, y0, x1, y1


def make_object_scene(folder: str | Path, size: int = 256, n_objects: int = 24,
                      seed: int = 0, sizes: tuple[int, int] = (25, 40), classes: int = 1,
                      crs: str = "EPSG:32631", pixel_size: float = 0.5,
                      name: str = "objects.tif",
                      fixed: list[tuple[int, int, int, int, int]] | None = None,
                      origin: tuple[float, float] | None = None) -> ObjectScene:
    """Write a 3-band uint8 GeoTIFF with ``n_objects`` non-touching squares of ``sizes`` px
    (``classes`` 1 or 2) and return the scene; ``fixed`` boxes are placed first. ``origin``:
    map coordinates of the bottom-left corner (default: x = 500000 + seed × SEED_SPACING,
    y = 5600000, so scenes of different seeds never overlap)."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x0, y0 = origin if origin is not None else (500000.0 + seed * SEED_SPACING, 5600000.0)
    transform = from_origin(x0, y0 + size * pixel_size, pixel_size, pixel_size)
    paint = np.zeros((size, size), np.uint8)
    boxes = list(fixed or [])
    for cid, c0, r0, c1, r1 in boxes:
        paint[r0:r1, c0:c1] = cid
    for _ in range(n_objects * 40):
        if len(boxes) >= n_objects + len(fixed or []):
            break
        s = int(rng.integers(sizes[0], sizes[1] + 1))
        c0, r0 = (int(v) for v in rng.integers(1, size - s - 1, 2))
        if paint[max(r0 - 3, 0):r0 + s + 3, max(c0 - 3, 0):c0 + s + 3].any():
            continue
        cid = int(rng.integers(1, classes + 1))
        paint[r0:r0 + s, c0:c0 + s] = cid
        boxes.append((cid, c0, r0, c0 + s, r0 + s))
    raster = write_painted_raster(folder / name, paint, _COLOURS, rng, crs, transform)
    return ObjectScene(raster, boxes, transform, crs, size, size)


def scene_project(scene: ObjectScene, project_path: str | Path, classes: int = 1,
                  role: str = "auto"):
    """A labeling project with the scene's raster and one rectangle polygon per box."""
    items = []
    for box in scene.boxes:
        x0, y0, x1, y1 = scene.map_box(box)
        items.append((box[0], {"type": "Polygon", "coordinates": [[
            [x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}))
    return scene_labeling_project(project_path, scene.raster, scene.crs,
                                  OBJECT_CLASSES[:classes], items, role)
