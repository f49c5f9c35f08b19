"""Areas and perimeters in metres, for every output that reports them (polygons, boxes, cells).
"""

from __future__ import annotations


def area_and_length(crs_wkt: str | None):
    """A function ``shapely geometry → (area m², perimeter m)`` for the CRS ``crs_wkt``: on the
    ellipsoid (``pyproj.Geod``, Karney's algorithm) for a geographic CRS, planar area × (metres
    per map unit)² for a projected one; map units when there is no CRS."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs_wkt) if crs_wkt else None
    if crs is not None and crs.is_geographic:
        geod = crs.get_geod()

        def geodesic(geom):
            area, perimeter = geod.geometry_area_perimeter(geom)
            return abs(area), perimeter
        return geodesic
    metres = 1.0
    if crs is not None and crs.axis_info:
        metres = crs.axis_info[0].unit_conversion_factor or 1.0
    return lambda geom: (geom.area * metres ** 2, geom.length * metres)


def area_field(crs_wkt: str | None, georeferenced: bool = True) -> str:
    """The name of the area field of a vector output: ``area_m2`` in every CRS (areas from
    :func:`area_and_length`), ``area_px`` for an ungeoreferenced image (pixel coordinates), and
    ``area_map_units2`` for a raster with a geotransform but no CRS."""
    if crs_wkt:
        return "area_m2"
    return "area_map_units2" if georeferenced else "area_px"


def areas(geoms, crs_wkt: str | None):
    """float64 (n,): the area of each shapely geometry of ``geoms`` in the field's unit of
    :func:`area_and_length` (m² on the ellipsoid for a geographic CRS)."""
    import numpy as np

    measure = area_and_length(crs_wkt)
    return np.array([measure(g)[0] for g in geoms], np.float64)
