"""A seeded synthetic scene of objects with exact polygons, for tests, the demo and the bench.

Objects are regular polygons (5 to 8 corners, turned at random, "crown": bright green) and
turned rectangles ("roof": light grey) on a noisy brown background; two objects never touch (a
gap of at least :data:`GAP_PX`). A pixel belongs to an object when its centre lies inside the
polygon (``rasterio.features.rasterize``'s rule, the rule training masks use), so the polygons
are the exact truth of the painted pixels. Scenes of different seeds lie side by side in map
coordinates (:data:`SEED_SPACING` m apart), never on each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..synthetic import scene_labeling_project, write_painted_raster

OBJECT_CLASSES = [(1, "crown", "#33a02c"), (2, "roof", "#b15928")]
SEED_SPACING = 5000.0
GAP_PX = 3
_COLOURS = {0: (0.45, 0.35, 0.25), 1: (0.20, 0.75, 0.20), 2: (0.85, 0.85, 0.80)}


@dataclass
class InstanceScene:
    raster: Path
    objects: list[tuple[int, object]]   # (class id, shapely Polygon in pixel coordinates)
    transform: object                   # rasterio Affine: pixel → map
    crs: str
    width: int
    height: int

    def map_polygon(self, polygon):
        """The shapely polygon in map coordinates."""
        from shapely import affinity

        t = self.transform
        return affinity.affine_transform(polygon, [t.a, t.b, t.d, t.e, t.c, t.f])


def _shape(rng: np.random.Generator, cid: int, cx: float, cy: float, radius: float):
    from shapely import Polygon

    turn = rng.uniform(0, 2 * math.pi)
    if cid == 2:   # a turned rectangle, sides 2r × 1.3r
        half = np.array([[-1, -0.65], [1, -0.65], [1, 0.65], [-1, 0.65]]) * radius
        c, s = math.cos(turn), math.sin(turn)
        pts = half @ np.array([[c, s], [-s, c]])
    else:          # a regular polygon of 5 to 8 corners
        k = int(rng.integers(5, 9))
        a = turn + np.arange(k) * 2 * math.pi / k
        pts = np.stack([np.cos(a), np.sin(a)], 1) * radius
    return Polygon(pts + [cx, cy])


def make_instance_scene(folder: str | Path, size: int = 128, n_objects: int = 12,
                        seed: int = 0, radii: tuple[float, float] = (6.0, 12.0),
                        classes: int = 1, crs: str = "EPSG:32631", pixel_size: float = 0.5,
                        name: str = "instances.tif",
                        fixed: list[tuple[int, float, float, float]] | None = None
                        ) -> InstanceScene:
    """Write a 3-band uint8 GeoTIFF of ``size`` × ``size`` px with up to ``n_objects``
    non-touching objects of radius ``radii`` px (classes 1 … ``classes``, at most 2) and
    return the scene. ``fixed``: (class id, centre col, centre row, radius) objects placed
    first (e.g. one across a tile edge)."""
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x0, y0 = 500000.0 + seed * SEED_SPACING, 5600000.0
    transform = from_origin(x0, y0 + size * pixel_size, pixel_size, pixel_size)
    paint = np.zeros((size, size), np.uint8)
    objects: list[tuple[int, object]] = []

    def place(cid: int, poly) -> bool:
        mask = rasterize([(poly, 1)], out_shape=(size, size), dtype="uint8").astype(bool)
        if not mask.any() or (binary_dilation(mask, iterations=GAP_PX) & (paint > 0)).any():
            return False
        paint[mask] = cid
        objects.append((cid, poly))
        return True

    for cid, cx, cy, r in fixed or []:
        place(cid, _shape(rng, cid, cx, cy, r))
    want = n_objects + len(fixed or [])
    for _ in range(n_objects * 40):
        if len(objects) >= want:
            break
        r = float(rng.uniform(*radii))
        cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
        cid = int(rng.integers(1, min(classes, 2) + 1))
        place(cid, _shape(rng, cid, cx, cy, r))
    raster = write_painted_raster(folder / name, paint, _COLOURS, rng, crs, transform)
    return InstanceScene(raster, objects, transform, crs, size, size)


def scene_project(scene: InstanceScene, project_path: str | Path, classes: int = 1,
                  role: str = "auto"):
    """A labeling project (created, or opened and extended) with the scene's raster and one
    polygon label per object, in map coordinates."""
    import shapely

    return scene_labeling_project(
        project_path, scene.raster, scene.crs, OBJECT_CLASSES[:classes],
        [(cid, shapely.geometry.mapping(scene.map_polygon(p))) for cid, p in scene.objects],
        role)
