"""Geometry and CRS helpers on shapely and pyproj (no GDAL bindings, no QGIS): GeoJSON in and out.

These run in the worker, the CLI and on servers installed with pip only. Inside QGIS's own process
the labeling project uses :mod:`.gdalbind` instead (QGIS ships GDAL's bindings, not these wheels).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UserError

# shapely geometry type → label layer key
_FAMILY = {"Point": "points", "MultiPoint": "points",
           "LineString": "lines", "MultiLineString": "lines", "LinearRing": "lines",
           "Polygon": "polygons", "MultiPolygon": "polygons"}


def make_srs(crs: Any):
    """A ``pyproj.CRS`` from CRS text (EPSG:code, PROJ string, WKT) or a CRS object. Coordinates
    are always handled in x/y order (easting/northing, lon/lat): see :func:`transformer`.

    Raises UserError when the text is not a CRS."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if isinstance(crs, CRS):
        return crs
    try:
        if not crs:
            raise CRSError("empty")
        return CRS.from_user_input(crs if not hasattr(crs, "to_wkt") else crs.to_wkt())
    except CRSError:
        raise bad_crs(crs) from None


def bad_crs(crs: Any) -> UserError:
    """The error for CRS text that is not a CRS."""
    return UserError(f"The coordinate reference system {str(crs)[:80]!r} is not understood.",
                     "Give it as EPSG:code, a PROJ string or WKT.")


def crs_text(srs: Any) -> str:
    """'EPSG:code' when the CRS is a plain EPSG one (its own identifier is EPSG), else its WKT."""
    srs = make_srs(srs)
    ident = srs.to_json_dict().get("id") or {}
    if ident.get("authority") == "EPSG" and ident.get("code"):
        return f"EPSG:{ident['code']}"
    return srs.to_wkt()


def to_shape(geometry: Any):
    """A shapely geometry from a GeoJSON dict (or its JSON text), a WKT string or a shapely
    geometry. Raises UserError for anything else."""
    import shapely
    from shapely.geometry import shape

    if isinstance(geometry, shapely.Geometry):
        return geometry
    try:
        if isinstance(geometry, str) and geometry.lstrip().startswith("{"):
            geometry = json.loads(geometry)
        if isinstance(geometry, dict):
            geom = shape(geometry)
        elif isinstance(geometry, str):
            geom = shapely.from_wkt(geometry)
        else:
            geom = None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError,
            shapely.errors.ShapelyError):
        geom = None
    if geom is None:
        raise UserError(f"This is not a geometry: {str(geometry)[:80]!r}.",
                        "Give a GeoJSON geometry dict or WKT.")
    return geom


def to_geojson(geom) -> dict:
    """The GeoJSON dict of a shapely geometry (coordinates as lists)."""
    import shapely

    return json.loads(shapely.to_geojson(geom))


def family(geom) -> str | None:
    """'points', 'lines' or 'polygons' for a (multi) geometry, None otherwise."""
    return _FAMILY.get(geom.geom_type)


def split_by_family(geom) -> list[tuple[str, Any]]:
    """Flatten to 2D and split geometry collections into (family, multi-geometry) parts."""
    import shapely

    geom = shapely.force_2d(geom)
    if geom.geom_type == "GeometryCollection":
        out: list[tuple[str, Any]] = []
        for part in geom.geoms:
            out.extend(split_by_family(part))
        return out
    fam = family(geom)
    if fam is None or geom.is_empty:
        return []
    return [(fam, to_multi(geom, fam))]


def to_multi(geom, fam: str):
    """``geom`` as a MultiPoint, MultiLineString or MultiPolygon (``fam`` names which)."""
    from shapely.geometry import LineString, MultiLineString, MultiPoint, MultiPolygon

    if geom.geom_type.startswith("Multi"):
        return geom
    if geom.geom_type == "LinearRing":
        geom = LineString(geom.coords)
    return {"points": MultiPoint, "lines": MultiLineString, "polygons": MultiPolygon}[fam]([geom])


def transformer(src: Any, dst: Any):
    """A ``pyproj.Transformer`` (x/y order) from ``src`` to ``dst``, or None when they are the
    same CRS."""
    from pyproj import Transformer

    src, dst = make_srs(src), make_srs(dst)
    if src == dst or src.equals(dst, ignore_axis_order=True):
        return None
    return Transformer.from_crs(src, dst, always_xy=True)


def reproject(geom, ct):
    """A reprojected copy, or None when the transformation fails (e.g. far outside the CRS)."""
    import numpy as np
    import shapely

    if ct is None:
        return geom

    def move(xy):
        x, y = ct.transform(xy[:, 0], xy[:, 1], errcheck=False)
        return np.column_stack([x, y])

    try:
        out = shapely.transform(geom, move)
    except Exception:  # noqa: BLE001 - PROJ errors of every kind mean 'cannot be reprojected'
        return None
    coords = shapely.get_coordinates(out)
    return out if np.isfinite(coords).all() else None


def repair(geom) -> tuple[Any, bool]:
    """(valid geometry or None, whether it was repaired); GEOS's MakeValid, as OGR's."""
    import shapely

    if shapely.is_valid(geom):
        return geom, False
    fixed = shapely.make_valid(geom)
    if fixed is None or fixed.is_empty or not shapely.is_valid(fixed):
        fixed = geom.buffer(0)
    if fixed is None or fixed.is_empty or not shapely.is_valid(fixed):
        return None, True
    return fixed, True


def bbox_polygon(x0: float, y0: float, x1: float, y1: float):
    """The rectangle (x0, y0)–(x1, y1) as a shapely polygon."""
    from shapely.geometry import box

    return box(x0, y0, x1, y1)


def envelope(geom) -> tuple[float, float, float, float]:
    """(minx, maxx, miny, maxy), OGR's envelope order."""
    x0, y0, x1, y1 = geom.bounds
    return x0, x1, y0, y1
