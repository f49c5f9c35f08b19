"""What a valid pixel is, defined once for label rasters, sampling, statistics, training and
classification.

A raster's *data bands* are its bands except alpha bands: an alpha band is a mask, never data. A
band counts as alpha when its colour interpretation says so (``ColorInterp.alpha``) AND its values
are those of a mask: only 0 and the data type's maximum in a sample of the band (256 × 256 px at
most, nearest neighbour, read once per file). GDAL writes a 4-band 8-bit GeoTIFF as RGBA by
default, so an RGB + near-infrared image saved that way declares its infrared band alpha; its
varied values keep it a data band. A pixel is **valid** unless

- every data band equals the declared nodata value (GDAL's per-dataset nodata rule), or
- a data band is NaN or ±inf (floating-point rasters; a NaN cannot be fed to a network), or
- the alpha band is 0 there (fully transparent), or
- the GDAL mask band (an internal or ``.msk`` mask, when there is no nodata and no alpha) is 0.

Needs numpy and rasterio (worker side only).
"""

from __future__ import annotations

import os

import numpy as np

ALPHA_SAMPLE_PX = 256   # edge of the sample read to tell a mask from a data band


def alpha_bands(ds) -> list[int]:
    """1-based indexes of the alpha bands of the open rasterio dataset ``ds``."""
    from rasterio._err import CPLE_BaseError
    from rasterio.enums import ColorInterp

    try:
        interp = ds.colorinterp
    except CPLE_BaseError:
        # rasterio reports an error GDAL left from an earlier, unrelated call (e.g. a colour
        # table written to another file); reading it cleared that state
        interp = ds.colorinterp
    declared = [i + 1 for i, ci in enumerate(interp) if ci == ColorInterp.alpha]
    return [b for b in declared if _holds_a_mask(ds, b)]


_MASK_BANDS: dict[tuple, bool] = {}


def _holds_a_mask(ds, band: int) -> bool:
    """True when band ``band`` of ``ds`` holds only 0 and its data type's maximum (a sample,
    remembered per file, band and modification time)."""
    try:
        key = (ds.name, os.stat(ds.name).st_mtime_ns, band)
    except (OSError, TypeError, ValueError):
        key = None     # not a file (in memory): sampled every time
    if key is not None and key in _MASK_BANDS:
        return _MASK_BANDS[key]
    dtype = np.dtype(ds.dtypes[band - 1])
    top = np.iinfo(dtype).max if dtype.kind in "iu" else 1.0
    shape = (min(ds.height, ALPHA_SAMPLE_PX), min(ds.width, ALPHA_SAMPLE_PX))
    mask = bool(np.isin(np.unique(ds.read(band, out_shape=shape)), [0, top]).all())
    if key is not None:
        if len(_MASK_BANDS) > 1024:
            _MASK_BANDS.clear()
        _MASK_BANDS[key] = mask
    return mask


def data_bands(ds) -> list[int]:
    """1-based indexes of the data bands of ``ds`` (every band but alpha bands)."""
    alpha = set(alpha_bands(ds))
    bands = [i for i in range(1, ds.count + 1) if i not in alpha]
    return bands or list(range(1, ds.count + 1))


def data_band_count(ds) -> int:
    """How many data bands ``ds`` has (what a model's ``bands`` counts)."""
    return len(data_bands(ds))


def read_data(ds, window=None, **kwargs) -> np.ndarray:
    """The data bands of ``ds`` in ``window``: (bands, h, w) in the raster's dtype."""
    return ds.read(data_bands(ds), window=window, **kwargs)


def valid_mask(ds, data: np.ndarray | None = None, window=None,
               out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """bool (h, w): True where the pixel is valid (see the module docstring).

    ``data``: the data bands of ``window`` as read by :func:`read_data` (read when None);
    ``out_shape`` (h, w): the window read decimated to that shape, as ``data`` was."""
    from rasterio.enums import MaskFlags

    shape = {} if out_shape is None else {"out_shape": tuple(out_shape)}
    if data is None:
        data = read_data(ds, window=window,
                         **({} if out_shape is None else
                            {"out_shape": (data_band_count(ds), *out_shape)}))
    valid = np.ones(data.shape[1:], bool)
    if ds.nodata is not None:
        nd = ds.nodata
        same = np.isnan(data) if np.isnan(nd) else data == nd
        valid &= ~same.all(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    alpha = alpha_bands(ds)
    if alpha:
        valid &= ds.read(alpha[0], window=window, **shape) > 0
    elif ds.nodata is None:
        first = data_bands(ds)[0]
        flags = ds.mask_flag_enums[first - 1]
        if not {MaskFlags.all_valid, MaskFlags.nodata, MaskFlags.alpha} & set(flags):
            valid &= ds.read_masks(first, window=window, **shape) > 0   # alpha: a data band here
    return valid


def describe(ds) -> str:
    """How ``ds`` marks invalid pixels, for messages ("nodata 0", "alpha band 4" …)."""
    from rasterio.enums import MaskFlags

    parts = []
    if ds.nodata is not None:
        parts.append(f"nodata value {ds.nodata:g}")
    alpha = alpha_bands(ds)
    if alpha:
        parts.append(f"alpha band {alpha[0]}")
    elif ds.nodata is None and MaskFlags.per_dataset in ds.mask_flag_enums[0] \
            and MaskFlags.alpha not in ds.mask_flag_enums[0]:
        parts.append("mask band")
    if ds.dtypes[0].startswith("float"):
        parts.append("NaN")
    return ", ".join(parts) or "no nodata declared"


def valid_share(ds, window_size: int = 512, max_windows: int = 16) -> float:
    """Share (0–1) of valid pixels, estimated from up to ``max_windows`` evenly spread windows."""
    from rasterio.windows import Window

    wins = [Window(c, r, min(window_size, ds.width - c), min(window_size, ds.height - r))
            for r in range(0, ds.height, window_size) for c in range(0, ds.width, window_size)]
    if len(wins) > max_windows:
        pick = np.linspace(0, len(wins) - 1, max_windows).round().astype(int)
        wins = [wins[i] for i in sorted(set(pick))]
    good = total = 0
    for win in wins:
        v = valid_mask(ds, window=win)
        good += int(v.sum())
        total += v.size
    return good / total if total else 0.0
