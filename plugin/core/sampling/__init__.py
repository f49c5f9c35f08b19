"""Sampling: the patches every trainer learns from, and the chip export formats.

QGIS-free; rasterio is imported inside the functions that read rasters.
"""

from .plan import Patch, SamplePlan, SampleSource, SamplingConfig, plan_patches, round_half_up
from .reader import PatchReader
from .sources import read_manifest, sources_from_chips_folder, sources_from_project

__all__ = ["Patch", "PatchReader", "SamplePlan", "SampleSource", "SamplingConfig",
           "plan_patches", "read_manifest", "round_half_up", "sources_from_chips_folder",
           "sources_from_project"]
