"""Pixel regression: a number per pixel (canopy height, biomass, soil moisture, imperviousness)
from a target raster or from points with a value; the same engine, rules and tools as the other
families (its row in ``plugin/core/families.py``)."""
