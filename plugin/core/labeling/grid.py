"""The pixel grid of a training raster, read with GDAL (usable in the QGIS process, no rasterio)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal, ogr, osr

from ..errors import UserError
from .geom import bbox_polygon, make_srs, quiet_gdal


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
    def srs(self) -> osr.SpatialReference:
        return make_srs(self.crs_wkt)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, dx, _, y0, _, dy = self.geotransform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def footprint(self) -> ogr.Geometry:
        return bbox_polygon(*self.bounds)


def read_grid(path: str | Path) -> RasterGrid:
    """The grid of ``path``; a clear :class:`UserError` when it is missing, unreadable, rotated or
    not georeferenced (labels could not be placed on it correctly)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"The raster {p} does not exist.",
                        "Fix its path or remove it from the labeling project.")
    with quiet_gdal():
        ds = gdal.Open(str(p))
    if ds is None:
        raise UserError(f"The raster {p} cannot be read by GDAL.",
                        "Check that it is a raster file (GeoTIFF, JPEG2000, …) and not damaged.")
    gt = tuple(ds.GetGeoTransform(can_return_null=True) or ())
    wkt = ds.GetProjection() or ""
    if not wkt and ds.GetGCPCount():
        raise UserError(f"The raster {p.name} is georeferenced by ground control points only.",
                        "Warp it to a north-up grid first (Raster ▸ Projections ▸ Warp).")
    if not gt or not wkt:
        raise UserError(f"The raster {p.name} is not georeferenced (no "
                        f"{'geotransform' if not gt else 'coordinate reference system'}).",
                        "Georeference it (or assign its CRS) before labeling it.")
    if gt[2] != 0 or gt[4] != 0:
        raise UserError(f"The raster {p.name} is rotated (its pixel grid is not north-up).",
                        "Warp it to a north-up grid first (Raster ▸ Projections ▸ Warp).")
    return RasterGrid(str(p), wkt, gt, ds.RasterXSize, ds.RasterYSize, ds.RasterCount)
