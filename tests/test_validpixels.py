"""Which bands are data: an alpha band is a mask, but a band merely declared alpha by GDAL's
default photometric for 4-band 8-bit GeoTIFFs (RGB + near-infrared saved with defaults) is data."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from plugin.core.validpixels import alpha_bands, data_band_count, read_data, valid_mask


def write_rgba(path, fourth: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 255, (3, 40, 50), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=50, height=40, count=4, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(500000, 4000040, 1, 1)) as dst:
        dst.write(np.concatenate([rgb, fourth[None]]))


def test_a_real_alpha_band_is_a_mask(tmp_path):
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[:, :10] = 0
    write_rgba(tmp_path / "rgba.tif", alpha)
    with rasterio.open(tmp_path / "rgba.tif") as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
        assert alpha_bands(ds) == [4] and data_band_count(ds) == 3
        data = read_data(ds)
        assert data.shape == (3, 40, 50)
        valid = valid_mask(ds, data)
        assert not valid[:, :10].any() and valid[:, 10:].all()


def test_an_infrared_band_saved_as_alpha_stays_data(tmp_path):
    nir = np.random.default_rng(1).integers(0, 256, (40, 50), dtype=np.uint8)
    write_rgba(tmp_path / "rgbn.tif", nir)
    with rasterio.open(tmp_path / "rgbn.tif") as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha      # what GDAL declared
        assert alpha_bands(ds) == [] and data_band_count(ds) == 4
        np.testing.assert_array_equal(read_data(ds)[3], nir)
        assert valid_mask(ds).all()
