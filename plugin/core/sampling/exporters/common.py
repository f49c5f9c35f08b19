"""What every chip export shares: its inputs, GeoTIFF chip writing, names and the manifest."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_write
from ...jobs import JobContext
from ..plan import IGNORE, SampleSource, SamplingConfig

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class ExportInput:
    """Rasters with their label rasters, the classes, and (for boxes and feature chips) the label
    features of each raster in its CRS: objects with ``fid``, ``layer``, ``class_id``,
    ``geometry`` (GeoJSON dict), like the labeling project's ``LabelFeature``."""

    sources: list[SampleSource]
    classes: list[tuple[int, str, str]]          # (id, name, "#rrggbb")
    features: list[list[Any]] | None = None       # per source

    @property
    def class_names(self) -> dict[int, str]:
        return {cid: name for cid, name, _ in self.classes}


@dataclass
class ExportOptions:
    """Format and format-specific settings."""

    format: str = "segmentation"
    box_size: float = 25.0            # px: box around a point label (detection, feature chips)
    min_side: int = 0                 # px: feature chips with a shorter side are skipped
    max_side: int = 150               # px: feature chips with a longer side are skipped
    resize: int = 0                   # px: feature chips resized to this side (0: no resize)
    min_class_fraction: float = 0.01  # share of a chip's valid pixels a tag needs (multi-label)
    compress: str = ""                # GeoTIFF compression of the chips ("" none, "deflate", …)


@dataclass
class ExportState:
    """Shared by a running export: where, what, and what has been written so far."""

    folder: Path
    data: ExportInput
    config: SamplingConfig
    options: ExportOptions
    ctx: JobContext
    items: list[dict] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)   # source index → safe unique name

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for i, src in enumerate(self.data.sources):
            base = safe_name(src.display_name)
            seen[base] = seen.get(base, 0) + 1
            self.names[i] = base if seen[base] == 1 else f"{base}_{seen[base]}"

    def chip_name(self, source: int, row: int, col: int) -> str:
        return f"{self.names[source]}_r{row}_c{col}"


def safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("_") or "chip"


def write_geotiff(path: Path, array: np.ndarray, crs: Any, transform: Any,
                  nodata: float | None = None, compress: str = "",
                  colormap: dict | None = None) -> None:
    """Write a (bands, h, w) or (h, w) array as a georeferenced GeoTIFF, in its data type."""

    if array.ndim == 2:
        array = array[None]
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": array.shape[2], "height": array.shape[1],
               "count": array.shape[0], "dtype": array.dtype.name, "crs": crs,
               "transform": transform, "nodata": nodata}
    if compress:
        profile["compress"] = compress
    from rasterio.io import MemoryFile

    # encoded in memory, then written by Python: a full disk raises OSError here (GDAL would only
    # print it when the file is closed), and no partial chip is left behind
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            if colormap:  # before the pixels: GDAL ≥ 3.10 cannot change the photometric tag after
                dst.write_colormap(1, colormap)
            dst.write(array)
        encoded = mem.read()
    try:
        path.write_bytes(encoded)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def class_colormap(classes: list[tuple[int, str, str]]) -> dict[int, tuple[int, int, int, int]]:
    cmap = {0: (0, 0, 0, 0), IGNORE: (128, 128, 128, 0)}
    for cid, _, color in classes:
        h = color.lstrip("#")
        if len(h) == 6:
            cmap[cid] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)
    return cmap


def raster_info(path: str) -> dict:
    """Bands, data type, nodata, pixel size and CRS of a raster, for the manifest."""
    import rasterio

    from ...validpixels import data_bands

    with rasterio.open(path) as ds:
        bands = data_bands(ds)
        return {"bands": len(bands), "band_names": [ds.descriptions[i - 1] or f"band {i}"
                                                    for i in bands],
                "dtype": ds.dtypes[0], "nodata": ds.nodata,
                "pixel_size": [abs(ds.transform.a), abs(ds.transform.e)],
                "crs": ds.crs.to_string() if ds.crs else None,
                "width": ds.width, "height": ds.height}


def write_manifest(state: ExportState, layout: dict, summary: dict, parameters: dict,
                   complete: bool, extra: dict | None = None) -> Path:
    """``manifest.json``: enough for a trainer to read the folder back."""
    infos = [raster_info(s.image) for s in state.data.sources]
    first = infos[0] if infos else {}
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for item in state.items:
        splits.setdefault(item.get("split", "train"), []).append(item["name"])
    data = {
        "format": state.options.format,
        "version": MANIFEST_VERSION,
        "complete": complete,
        "layout": layout,
        "classes": [{"id": cid, "name": name, "color": color}
                    for cid, name, color in state.data.classes],
        "background_value": 0,
        "ignore_value": IGNORE,
        "bands": first.get("bands"),
        "band_names": first.get("band_names"),
        "dtype": first.get("dtype"),
        "nodata": first.get("nodata"),
        "pixel_size": first.get("pixel_size"),
        "crs": first.get("crs"),
        "sources": [{"name": state.names[i], "image": s.image, "role": s.role, **info}
                    for i, (s, info) in enumerate(zip(state.data.sources, infos))],
        "parameters": parameters,
        "summary": summary,
        "splits": splits,
        "count": len(state.items),
        "items": state.items,
    }
    if extra:
        data.update(extra)
    path = state.folder / MANIFEST
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=_json_default) + "\n",
                       encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
