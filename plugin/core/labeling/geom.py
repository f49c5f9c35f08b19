"""Geometry and CRS helpers on GDAL/OGR (no QGIS, no rasterio): GeoJSON in, GeoJSON out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from osgeo import gdal, ogr, osr

from ..errors import UserError

# OGR geometry family → label layer key
_FAMILY = {
    ogr.wkbPoint: "points", ogr.wkbMultiPoint: "points",
    ogr.wkbLineString: "lines", ogr.wkbMultiLineString: "lines",
    ogr.wkbPolygon: "polygons", ogr.wkbMultiPolygon: "polygons",
}


@contextlib.contextmanager
def quiet_gdal() -> Iterator[None]:
    """Silence GDAL's error printing for the block (failures are checked by return values)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()


def make_srs(crs: str) -> osr.SpatialReference:
    """An OSR spatial reference in x/y (easting/northing, lon/lat) axis order, from CRS text."""
    srs = osr.SpatialReference()
    with quiet_gdal():
        ok = srs.SetFromUserInput(str(crs)) == 0 if crs else False
    if not ok:
        raise UserError(f"The coordinate reference system {str(crs)[:80]!r} is not understood.",
                        "Give it as EPSG:code, a PROJ string or WKT.")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def crs_text(srs: osr.SpatialReference) -> str:
    """'EPSG:code' when the CRS is a plain EPSG one, else its WKT."""
    code = srs.GetAuthorityCode(None)
    name = srs.GetAuthorityName(None)
    if name == "EPSG" and code:
        return f"EPSG:{code}"
    return srs.ExportToWkt()


def to_ogr(geometry: Any) -> ogr.Geometry:
    """An OGR geometry from a GeoJSON dict (or its JSON text), a WKT string or an OGR geometry."""
    if isinstance(geometry, ogr.Geometry):
        return geometry.Clone()
    with quiet_gdal():
        if isinstance(geometry, dict):
            geom = ogr.CreateGeometryFromJson(json.dumps(geometry))
        elif isinstance(geometry, str) and geometry.lstrip().startswith("{"):
            geom = ogr.CreateGeometryFromJson(geometry)
        elif isinstance(geometry, str):
            geom = ogr.CreateGeometryFromWkt(geometry)
        else:
            geom = None
    if geom is None:
        raise UserError(f"This is not a geometry: {str(geometry)[:80]!r}.",
                        "Give a GeoJSON geometry dict or WKT.")
    return geom


def to_geojson(geom: ogr.Geometry) -> dict:
    return json.loads(geom.ExportToJson())


def family(geom: ogr.Geometry) -> str | None:
    """'points', 'lines' or 'polygons' for a (multi) geometry, None otherwise."""
    return _FAMILY.get(ogr.GT_Flatten(geom.GetGeometryType()))


def split_by_family(geom: ogr.Geometry) -> list[tuple[str, ogr.Geometry]]:
    """Flatten to 2D and split geometry collections into (family, multi-geometry) parts."""
    geom = geom.Clone()
    geom.FlattenTo2D()
    if ogr.GT_Flatten(geom.GetGeometryType()) == ogr.wkbGeometryCollection:
        out: list[tuple[str, ogr.Geometry]] = []
        for i in range(geom.GetGeometryCount()):
            out.extend(split_by_family(geom.GetGeometryRef(i)))
        return out
    if geom.GetGeometryType() in (ogr.wkbCurvePolygon, ogr.wkbCompoundCurve, ogr.wkbCircularString,
                                  ogr.wkbMultiCurve, ogr.wkbMultiSurface):
        geom = geom.GetLinearGeometry()
    fam = family(geom)
    if fam is None or geom.IsEmpty():
        return []
    return [(fam, to_multi(geom, fam))]


def to_multi(geom: ogr.Geometry, fam: str) -> ogr.Geometry:
    force = {"points": ogr.ForceToMultiPoint, "lines": ogr.ForceToMultiLineString,
             "polygons": ogr.ForceToMultiPolygon}[fam]
    return force(geom)


def transformer(src: osr.SpatialReference,
                dst: osr.SpatialReference) -> osr.CoordinateTransformation | None:
    """A transformation from ``src`` to ``dst``, or None when they are the same CRS."""
    if src.IsSame(dst):
        return None
    return osr.CoordinateTransformation(src, dst)


def reproject(geom: ogr.Geometry, ct: osr.CoordinateTransformation | None) -> ogr.Geometry | None:
    """A reprojected copy, or None when the transformation fails (e.g. far outside the CRS)."""
    out = geom.Clone()
    if ct is None:
        return out
    with quiet_gdal():
        err = out.Transform(ct)
    return out if err == 0 else None


def repair(geom: ogr.Geometry) -> tuple[ogr.Geometry | None, bool]:
    """(valid geometry or None, whether it was repaired)."""
    with quiet_gdal():
        if geom.IsValid():
            return geom, False
        fixed = geom.MakeValid() if hasattr(geom, "MakeValid") else None
        if fixed is None or not fixed.IsValid():
            fixed = geom.Buffer(0)
    if fixed is None or fixed.IsEmpty() or not fixed.IsValid():
        return None, True
    return fixed, True


def bbox_polygon(x0: float, y0: float, x1: float, y1: float) -> ogr.Geometry:
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return poly
