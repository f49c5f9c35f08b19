"""Seeded synthetic scenes: a georeferenced multiband raster with exact polygon, point, line labels.

Each class has its own spectral signature painted exactly where its labels are, so a model can learn
the scene perfectly and tests know the true answer pixel for pixel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASSES = [(1, "building", "#e31a1c"), (2, "water", "#1f78b4"),
           (3, "tree", "#33a02c"), (4, "road", "#ff7f00")]
# Mean reflectance of the first three bands per class (0 = background), on a 0..1 scale.
_SIGNATURES = {0: (0.35, 0.45, 0.30), 1: (0.85, 0.30, 0.25), 2: (0.10, 0.20, 0.60),
               3: (0.15, 0.55, 0.15), 4: (0.70, 0.70, 0.72)}
_RANGES = {"uint8": 255.0, "uint16": 10000.0, "int16": 10000.0, "float32": 1.0}


@dataclass
class Scene:
    """What :func:`make_scene` wrote and the truth about it."""

    raster: Path
    labels: Path
    classes: list[tuple[int, str, str]]
    features: list[dict]
    transform: object
    crs: str
    width: int
    height: int
    truth: np.ndarray = field(repr=False)
    nodata: float | None = None


def _rect(transform, c0: float, r0: float, c1: float, r1: float) -> dict:
    (x0, y0), (x1, y1) = transform * (c0, r0), transform * (c1, r1)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def _octagon(transform, cc: float, rc: float, radius: float) -> dict:
    angles = np.deg2rad(np.arange(0, 360, 45) + 22.5)
    ring = [list(transform * (cc + radius * np.cos(a), rc + radius * np.sin(a))) for a in angles]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def make_scene(folder: str | Path, size: int = 128, bands: int = 3, seed: int = 0,
               dtype: str = "uint8", crs: str = "EPSG:32631", pixel_size: float = 0.5,
               n_buildings: int | None = None, nodata: float | None = None,
               noise: float = 0.03) -> Scene:
    """Write ``scene.tif`` and ``labels.geojson`` into ``folder`` and return the :class:`Scene`.

    Buildings are axis-aligned rectangles on pixel edges and water bodies octagons (both polygons,
    in ``truth``); trees are points painted as discs of radius 2 px; roads are straight lines
    painted 3 px wide. With ``nodata`` set, the last 6 columns are nodata.
    """
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    if dtype not in _RANGES:
        raise ValueError(f"dtype must be one of {sorted(_RANGES)}")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transform = from_origin(500000.0, 5600000.0 + size * pixel_size, pixel_size, pixel_size)
    features: list[dict] = []

    occupied = np.zeros((size, size), bool)
    n_buildings = n_buildings if n_buildings is not None else max(2, size // 24)
    for _ in range(n_buildings * 20):
        if sum(f["class_id"] == 1 for f in features) >= n_buildings:
            break
        w, h = rng.integers(size // 16 + 3, size // 7 + 5, 2)
        c0, r0 = rng.integers(2, size - w - 2), rng.integers(2, size - h - 2)
        if occupied[r0 - 2:r0 + h + 2, c0 - 2:c0 + w + 2].any():
            continue
        occupied[r0 - 2:r0 + h + 2, c0 - 2:c0 + w + 2] = True
        features.append({"class_id": 1, "geometry": _rect(transform, c0, r0, c0 + w, r0 + h)})
    for _ in range(40):
        radius = rng.uniform(size / 18, size / 9)
        cc, rc = rng.uniform(radius + 2, size - radius - 2, 2)
        r_lo, r_hi = int(rc - radius - 2), int(rc + radius + 3)
        c_lo, c_hi = int(cc - radius - 2), int(cc + radius + 3)
        if not occupied[r_lo:r_hi, c_lo:c_hi].any():
            occupied[r_lo:r_hi, c_lo:c_hi] = True
            features.append({"class_id": 2, "geometry": _octagon(transform, cc, rc, radius)})
            break
    truth = np.zeros((size, size), np.uint8)
    for f in features:  # higher class id wins where polygons overlap (they do not here)
        truth = np.maximum(truth, rasterize([(f["geometry"], f["class_id"])], (size, size),
                                            transform=transform, dtype="uint8"))

    paint = truth.copy()
    rows, cols = np.mgrid[0:size, 0:size]
    road_row = int(rng.integers(size // 4, 3 * size // 4))
    line = {"type": "LineString", "coordinates": [list(transform * (0.5, road_row + 0.5)),
                                                  list(transform * (size - 0.5, road_row + 0.5))]}
    features.append({"class_id": 4, "geometry": line})
    road = (np.abs(rows - road_row) <= 1) & (truth == 0)
    paint[road] = 4
    placed = 0
    for _ in range(200):
        if placed >= max(3, size // 16):
            break
        c, r = rng.integers(4, size - 4, 2)
        disc = (rows - r) ** 2 + (cols - c) ** 2 <= 4
        if (paint[disc] != 0).any():
            continue
        paint[disc] = 3
        features.append({"class_id": 3, "geometry": {
            "type": "Point", "coordinates": list(transform * (c + 0.5, r + 0.5))}})
        placed += 1

    signatures = np.array([list(_SIGNATURES[k]) + list(rng.uniform(0.1, 0.9, max(0, bands - 3)))
                           for k in range(5)])[:, :bands]
    image = signatures[paint].transpose(2, 0, 1) + rng.normal(0, noise, (bands, size, size))
    scale = _RANGES[dtype]
    image = np.clip(image, 0, 1) * scale
    out_nodata = None
    if nodata is not None:
        image[:, :, -6:] = nodata
        out_nodata = nodata
    image = image.astype(dtype)

    raster = folder / "scene.tif"
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": dtype,
               "crs": crs, "transform": transform, "nodata": out_nodata}
    if bands != 3:   # GDAL would take the 4th band of a 4-band byte GeoTIFF as alpha (a mask)
        profile["photometric"] = "MINISBLACK"
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(image)
    names = {cid: name for cid, name, _ in CLASSES}
    labels = folder / "labels.geojson"
    epsg = crs.split(":")[-1]
    labels.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
        "features": [{"type": "Feature", "id": i + 1, "geometry": f["geometry"],
                      "properties": {"class_id": f["class_id"],
                                     "class_name": names[f["class_id"]]}}
                     for i, f in enumerate(features)]}))
    return Scene(raster=raster, labels=labels, classes=list(CLASSES), features=features,
                 transform=transform, crs=crs, width=size, height=size, truth=truth,
                 nodata=out_nodata)


def write_painted_raster(path: str | Path, paint: np.ndarray, colours: dict,
                         rng: np.random.Generator, crs, transform) -> Path:
    """Write ``paint`` (H, W) int class ids as a 3-band uint8 GeoTIFF at ``path``: each class
    its RGB colour from ``colours`` ({id: (r, g, b) in 0–1}) plus Gaussian noise (σ 0.04), the
    object families' synthetic scenes with exact labels. Returns the path."""
    import rasterio

    h, w = paint.shape
    table = np.array([colours[k] for k in range(len(colours))])
    image = table[paint].transpose(2, 0, 1) + rng.normal(0, 0.04, (3, h, w))
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                       crs=crs, transform=transform) as dst:
        dst.write(image)
    return Path(path)


def scene_labeling_project(project_path: str | Path, raster, crs, classes: list,
                           features: list, role: str = "auto"):
    """A labeling project at ``project_path`` (created in ``crs``, or opened and extended) with
    ``raster`` in ``role``, the ``classes`` ((id, name, colour), added when missing) and the
    ``features`` ((class id, GeoJSON geometry in map coordinates)). Returns the project."""
    from .labeling.project import LabelingProject

    path = Path(project_path)
    project = (LabelingProject.open(path) if path.exists()
               else LabelingProject.create(path, crs))
    project.add_raster(str(raster), role=role)
    have = {c.name for c in project.classes()}
    for _cid, name, colour in classes:
        if name not in have:
            project.add_class(name, colour)
    project.add_features(features)
    return project
