"""The few labeling-project operations QGIS's own process needs, on the GDAL bindings QGIS ships.

Inside QGIS the machine-learning wheels (rasterio, pyproj, pyogrio, shapely) are not importable and
must not be loaded; everywhere else (worker, CLI, pip-only servers) the core uses those wheels and
never imports ``osgeo``. :func:`in_qgis` chooses: the raster grid (:func:`raster_info`), CRS text
(:func:`crs_text`) and the empty label layers of a new project (:func:`create_layers`) have one
implementation here and one on the wheels, with the same results.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


def in_qgis() -> bool:
    """True inside a process that has loaded QGIS (its GDAL bindings are then present)."""
    return "qgis.core" in sys.modules


@contextlib.contextmanager
def quiet_gdal() -> Iterator[None]:
    """Silence GDAL's error printing for the block (failures are checked by return values)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()


def crs_text(crs: str) -> str | None:
    """'EPSG:code' for a plain EPSG CRS, else its WKT; None when GDAL does not understand it."""
    from osgeo import osr

    srs = osr.SpatialReference()
    with quiet_gdal():
        if not crs or srs.SetFromUserInput(str(crs)) != 0:
            return None
    code, name = srs.GetAuthorityCode(None), srs.GetAuthorityName(None)
    return f"EPSG:{code}" if name == "EPSG" and code else srs.ExportToWkt()


def raster_info(path: str) -> tuple | None:
    """(CRS WKT, geotransform, width, height, bands, GCP count) of a raster; None if unreadable."""
    from osgeo import gdal

    with quiet_gdal():
        ds = gdal.Open(path)
    if ds is None:
        return None
    gt = tuple(ds.GetGeoTransform(can_return_null=True) or ())
    return (ds.GetProjection() or "", gt, ds.RasterXSize, ds.RasterYSize, ds.RasterCount,
            ds.GetGCPCount())


def create_layers(path: str, crs: str, layers: dict[str, str]) -> bool:
    """A new GeoPackage at ``path`` with empty multi-geometry layers {family: table name} in
    ``crs``, fields class_id and raster_id (integers), fid 'fid', geometry 'geom', spatial index.
    False when the file cannot be created."""
    from osgeo import ogr, osr

    types = {"polygons": ogr.wkbMultiPolygon, "points": ogr.wkbMultiPoint,
             "lines": ogr.wkbMultiLineString}
    srs = osr.SpatialReference()
    srs.SetFromUserInput(str(crs))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    with quiet_gdal():
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    if ds is None:
        return False
    for key, name in layers.items():
        layer = ds.CreateLayer(name, srs, types[key],
                               ["GEOMETRY_NAME=geom", "FID=fid", "SPATIAL_INDEX=YES"])
        layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
        layer.CreateField(ogr.FieldDefn("raster_id", ogr.OFTInteger))
    ds = None
    return True
