"""Seeded synthetic data with exact answers for grid models and chip classifiers (tests, bench,
demo).

- :func:`make_grid_scene`: a georeferenced uint8 raster cut into cells; a chosen share of the
  cells holds one square object of a class (its own colour), labelled as a polygon in a labeling
  project; ``truth`` is the (rows, cols, C) multi-hot cell answer.
- :func:`make_chip_folder`: chips of distinct classes (each class its own colour and stripe
  pattern) in the ImageFolder, GBDX or multi-label CSV layout; multi-label chips carry each tag
  with probability ``tag_rate``, a tag adding its pattern at ``strength`` (weak signals make
  thresholds matter).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRID_CLASSES = [("building", "#e31a1c", (230, 60, 50)), ("water", "#1f78b4", (20, 60, 200))]
CHIP_CLASSES = ["red", "green", "blue"]
_CRS = "EPSG:32633"


@dataclass
class GridScene:
    raster: Path
    project: Path
    cell: int
    truth: np.ndarray       # (rows, cols, C) float32 multi-hot
    class_names: list[str]


def _write_tif(path: Path, data: np.ndarray, transform, crs: str | None = _CRS,
               nodata=None) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype.name, crs=crs,
                       transform=transform, nodata=nodata) as dst:
        dst.write(data)


def make_grid_scene(folder: str | Path, cells: int = 12, cell: int = 32,
                    feature_share: float = 0.4, seed: int = 0, rasters: int = 1,
                    object_px: tuple[int, int] = (10, 18), nodata_rows: int = 0,
                    roles: bool = True) -> GridScene:
    """``rasters`` scenes of ``cells × cells`` cells side by side in one labeling project
    (``labels.gpkg``); the first raster trains, the others validate (``roles`` off: every
    raster has the role "auto", so one raster is split by cells). ``nodata_rows``: the last
    cell rows of each raster are nodata (0) with nodata = 0 set."""
    from affine import Affine

    from ..labeling.project import LabelingProject

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    size = cells * cell
    project = LabelingProject.create(folder / "labels.gpkg", _CRS)
    for name, color, _ in GRID_CLASSES:
        project.add_class(name, color)
    truths = []
    first = None
    for k in range(rasters):
        transform = Affine(0.5, 0, 500000 + k * size * 0.5, 0, -0.5, 5000000)
        img = rng.normal(100, 12, (3, size, size)).clip(1, 255)
        truth = np.zeros((cells, cells, len(GRID_CLASSES)), np.float32)
        feats = []
        for r in range(cells - nodata_rows):
            for c in range(cells):
                if rng.random() >= feature_share:
                    continue
                ci = int(rng.integers(len(GRID_CLASSES)))
                s = int(rng.integers(object_px[0], object_px[1] + 1))
                r0 = r * cell + int(rng.integers(0, cell - s + 1))
                c0 = c * cell + int(rng.integers(0, cell - s + 1))
                img[:, r0:r0 + s, c0:c0 + s] = np.asarray(GRID_CLASSES[ci][2])[:, None, None]
                truth[r, c, ci] = 1.0
                (x0, y0), (x1, y1) = transform * (c0, r0), transform * (c0 + s, r0 + s)
                feats.append((ci + 1, {"type": "Polygon", "coordinates": [
                    [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}))
        data = img.astype(np.uint8)
        if nodata_rows:
            data[:, (cells - nodata_rows) * cell:] = 0
        path = folder / f"scene{k}.tif"
        _write_tif(path, data, transform, nodata=0 if nodata_rows else None)
        project.add_raster(path, role=("train" if k == 0 else "validation") if roles
                           else "auto")
        if feats:
            project.add_features(feats)
        truths.append(truth)
        first = first or path
    return GridScene(first, folder / "labels.gpkg", cell, truths[0],
                     [n for n, _, _ in GRID_CLASSES])


def _chip(rng, size: int, bands: int, tags: list[int], strength: float) -> np.ndarray:
    img = rng.normal(90, 20, (bands, size, size))
    for t in tags:
        band = t % bands
        phase = int(rng.integers(0, 4))
        stripes = ((np.arange(size) + phase) // 2 % 2 == 0) if t < 3 else (
            (np.arange(size) + phase) // 3 % 2 == 0)
        img[band, :, stripes] += 80 * strength
        img[band] += 30 * strength
    return img.clip(0, 255).astype(np.uint8)


def make_chip_folder(folder: str | Path, layout: str = "imagefolder", per_class: int = 30,
                     size: int = 16, bands: int = 3, seed: int = 0, multi_label: bool = False,
                     tag_rate: float = 0.4, strength: float = 1.0,
                     sizes: tuple[int, int] | None = None) -> list[list[str]]:
    """Write chips; returns each chip's class names (tags). ``sizes``: random chip sides in
    this range (px) instead of ``size`` (GBDX feature chips)."""
    from affine import Affine

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    n = per_class * len(CHIP_CLASSES)
    labels, rows, feats = [], [], []
    for i in range(n):
        if multi_label:
            tags = [k for k in range(len(CHIP_CLASSES)) if rng.random() < tag_rate]
        else:
            tags = [i % len(CHIP_CLASSES)]
        side = int(rng.integers(sizes[0], sizes[1] + 1)) if sizes else size
        img = _chip(rng, side, bands, tags, strength)
        names = [CHIP_CLASSES[t] for t in tags]
        labels.append(names)
        transform = Affine(1, 0, 1000 * (i + 1), 0, -1, 0)
        name = f"chip_{i:04d}"
        if layout == "imagefolder":
            _write_tif(folder / names[0] / f"{name}.tif", img, transform)
        elif layout == "gbdx":
            _write_tif(folder / "chips" / f"{name}.tif", img, transform)
            feats.append({"type": "Feature", "geometry": None,
                          "properties": {"feature_id": name, "class_name": names[0]}})
        elif layout == "multilabel_csv":
            _write_tif(folder / "images" / f"{name}.tif", img, transform)
            rows.append([name, " ".join(names) or "background"])
        else:
            raise ValueError(layout)
    if layout == "gbdx":
        (folder / "ref.geojson").write_text(json.dumps(
            {"type": "FeatureCollection", "features": feats}), encoding="utf-8")
    if layout == "multilabel_csv":
        with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["image_name", "tags"])
            w.writerows(rows)
    return labels


def make_imbalanced_chips(folder: str | Path, n: int = 300, minority: float = 0.15,
                          size: int = 16, separation: float = 1.5,
                          seed: int = 0) -> list[str]:
    """ImageFolder chips of two classes, "rare" (a share ``minority`` of them) and "common",
    told apart only by the mean of band 0: every band of a chip is shifted by its own
    N(0, 20) offset, and a rare chip's band 0 by ``separation`` × 20 more (the two classes'
    chip means overlap, so a model that learns the priors alone answers "common" always).
    Returns each chip's class name."""
    from affine import Affine

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rare = rng.permutation(n) < round(n * minority)
    names = []
    for i in range(n):
        img = rng.normal(100, 8, (3, size, size)) + rng.normal(0, 20, (3, 1, 1))
        if rare[i]:
            img[0] += 20 * separation
        name = "rare" if rare[i] else "common"
        _write_tif(folder / name / f"chip_{i:04d}.tif", img.clip(0, 255).astype(np.uint8),
                   Affine(1, 0, 1000 * (i + 1), 0, -1, 0))
        names.append(name)
    return names
