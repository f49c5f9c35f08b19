"""The pixel grid of a training raster: rasterio in the worker and on servers, GDAL's bindings
inside QGIS (see :mod:`.gdalbind`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import gdalbind


@dataclass(frozen=True)
class RasterGrid:
    """CRS (WKT), GDAL geotransform and size of a north-up georeferenced raster."""

    path: str
    crs_wkt: str
    geotransform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    bands: int

    @property
    def srs(self):
        """The CRS as a ``pyproj.CRS`` (worker side only)."""
        from .geom import make_srs

        return make_srs(self.crs_wkt)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, dx, _, y0, _, dy = self.geotransform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def footprint(self):
        """The raster's extent as a shapely polygon (worker side only)."""
        from .geom import bbox_polygon

        return bbox_polygon(*self.bounds)


def read_grid(path: str | Path) -> RasterGrid:
    """The grid of ``path``; a clear :class:`UserError` when it is missing, unreadable, rotated or
    not georeferenced (labels could not be placed on it correctly)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"The raster {p} does not exist.",
                        "Fix its path or remove it from the labeling project.")
    info = gdalbind.raster_info(str(p)) if gdalbind.in_qgis() else _raster_info(str(p))
    if info is None:
        raise UserError(f"The raster {p} cannot be read by GDAL.",
                        "Check that it is a raster file (GeoTIFF, JPEG2000, …) and not damaged.")
    wkt, gt, width, height, bands, gcps = info
    if not wkt and gcps:
        raise UserError(f"The raster {p.name} is georeferenced by ground control points only.",
                        "Warp it to a north-up grid first (Raster ▸ Projections ▸ Warp).")
    if not gt or not wkt:
        raise UserError(f"The raster {p.name} is not georeferenced (no "
                        f"{'geotransform' if not gt else 'coordinate reference system'}).",
                        "Georeference it (or assign its CRS) before labeling it.")
    if gt[2] != 0 or gt[4] != 0:
        raise UserError(f"The raster {p.name} is rotated (its pixel grid is not north-up).",
                        "Warp it to a north-up grid first (Raster ▸ Projections ▸ Warp).")
    return RasterGrid(str(p), wkt, gt, width, height, bands)


def _raster_info(path: str) -> tuple | None:
    """:func:`.gdalbind.raster_info` on rasterio."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                gcps = len(ds.gcps[0]) if ds.gcps and ds.gcps[0] else 0
                gt = () if ds.transform.is_identity else tuple(ds.transform.to_gdal())
                return ((ds.crs.to_wkt() if ds.crs else ""), gt, ds.width, ds.height, ds.count,
                        gcps)
    except RasterioIOError:
        return None
