"""Does a raster hold values like the model's training rasters? Checked before Classify Pixels.

The card records the training rasters' data type (``dtype``) and per-band mean/std. A raster of
another data type is sampled (up to 16 windows of valid pixels, :mod:`..validpixels`):

- values inside the training type's range and of the training data's magnitude: used as is
  (e.g. a float32 copy of 8-bit imagery);
- otherwise (uint16 0–65535 or float 0–1 fed to a uint8 model) it is refused with the fix, unless
  ``RESCALE`` is ``dtype``: the input type's range (integers: their full range; floats: 0–1) is
  mapped linearly onto the training type's range, ``x' = a·x + b``.
"""

from __future__ import annotations

import numpy as np

from .errors import UserError

RESCALE_CHOICES = ("none", "dtype")


def dtype_range(dtype: str) -> tuple[float, float] | None:
    """(min, max) of an integer type; (0, 1) for floats (the unit convention)."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    if dt.kind == "f":
        return 0.0, 1.0
    return None


def _sample(src, max_windows: int = 16, size: int = 256) -> np.ndarray:
    from rasterio.windows import Window

    from .validpixels import read_data, valid_mask

    wins = [Window(c, r, min(size, src.width - c), min(size, src.height - r))
            for r in range(0, src.height, size) for c in range(0, src.width, size)]
    if len(wins) > max_windows:
        pick = np.linspace(0, len(wins) - 1, max_windows).round().astype(int)
        wins = [wins[i] for i in sorted(set(pick))]
    parts = []
    for win in wins:
        data = read_data(src, window=win)
        parts.append(data[:, valid_mask(src, data, win)].astype(np.float64))
    return np.concatenate(parts, axis=1) if parts else np.zeros((src.count, 0))


def input_scaling(src, card: dict, rescale: str = "none") -> tuple[float, float, str | None]:
    """(a, b, note): multiply the input by ``a`` and add ``b`` before the network; ``note`` is a
    log line or None. Raises :class:`UserError` (with the fix) when the raster's values do not
    fit the model's training data and ``rescale`` is ``none``."""
    trained = card.get("dtype")
    given = src.dtypes[0]
    if rescale == "dtype":
        if not trained:
            raise UserError("The model card does not record the training data type, so RESCALE "
                            "cannot map the input onto it.", "Set RESCALE to none.")
        src_r, dst_r = dtype_range(given), dtype_range(trained)
        if src_r is None or dst_r is None or np.dtype(trained).kind == "f":
            raise UserError(f"RESCALE cannot map {given} onto {trained}.",
                            "Convert the raster to the training data type and set RESCALE to "
                            "none.")
        a = (dst_r[1] - dst_r[0]) / (src_r[1] - src_r[0])
        b = dst_r[0] - a * src_r[0]
        return a, b, (f"Input values rescaled from {given} ({src_r[0]:g}–{src_r[1]:g}) to "
                      f"{trained} ({dst_r[0]:g}–{dst_r[1]:g}).")
    if not trained or np.dtype(trained) == np.dtype(given):
        return 1.0, 0.0, None
    values = _sample(src)
    if values.size == 0:
        return 1.0, 0.0, None
    hi = float(np.percentile(values, 99.9))
    mean = float(values.mean())
    card_mean = float(np.mean(card["mean"]))
    card_hi = card_mean + 3 * float(np.mean(card["std"]))
    t_range = dtype_range(trained)
    too_big = t_range is not None and np.dtype(trained).kind in "ui" and hi > t_range[1]
    too_small = card_hi > 0 and hi < 0.1 * card_hi and abs(mean - card_mean) > 0.5 * card_mean
    if not (too_big or too_small):
        return 1.0, 0.0, (f"The input is {given}, the model was trained on {trained}; its values "
                          f"(up to {hi:g}) fit the training data, so they are used as is.")
    where = "above" if too_big else "far below"
    raise UserError(
        f"The input raster is {given} with values up to {hi:g} (mean {mean:.4g}), {where} the "
        f"model's {trained} training data (mean {card_mean:.4g}): classifying it as is would "
        "give wrong classes.",
        f"Set RESCALE to 'dtype' to map {given}'s range onto {trained}'s, or convert the raster "
        f"to {trained} with the training rasters' scaling.")


PIXEL_SIZE_TOLERANCE = 1.5     # ratio to the training pixel size that triggers a warning


# -- the one check of a raster given to a model, for every family -------------------------------
def open_raster(path, role: str = "input raster"):
    """The rasterio dataset of ``path`` (the caller closes it); UserError naming the file when
    GDAL cannot read it."""
    import rasterio

    try:
        return rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise UserError(f"Cannot read the {role} {path}: {exc}.",
                        "Choose a raster file GDAL can read.") from None


def _crs(value):
    """A pyproj CRS of a rasterio CRS or a card's CRS text; None when absent or unreadable."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if not value:
        return None
    try:
        return CRS.from_user_input(value.to_wkt() if hasattr(value, "to_wkt") else value)
    except CRSError:
        return None


def _kind(crs) -> str:
    return "geographic, degrees" if crs.is_geographic else "projected"


def ground_pixel_size(size: float, crs, lonlat: tuple[float, float]) -> float:
    """Metres covered by ``size`` map units of ``crs`` along x at ``lonlat`` (the raster's
    centre in degrees): on the ellipsoid (``pyproj.Geod.inv``) for a geographic CRS, ``size ×
    metres per unit`` for a projected one."""
    if crs.is_geographic:
        lon, lat = lonlat
        return float(crs.get_geod().inv(lon, lat, lon + size, lat)[2])
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return size * (factor or 1.0)


def _centre_lonlat(src, crs) -> tuple[float, float]:
    from pyproj import Transformer

    x, y = src.transform * (src.width / 2, src.height / 2)
    if crs.is_geographic:
        return x, y
    tr = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    return tr.transform(x, y)


def is_georeferenced(src) -> bool:
    """Whether the open rasterio dataset ``src`` has a CRS or a transform other than the
    identity (GDAL's default for a raster without georeferencing)."""
    return src.crs is not None or not src.transform.is_identity


def georeferenced_or_warn(src, log, things: str) -> bool:
    """:func:`is_georeferenced`; when not, ``log(message, "warning")`` says that ``things``
    (e.g. "the boxes") come out in pixel coordinates."""
    if is_georeferenced(src):
        return True
    from pathlib import Path

    log(f"{Path(src.name).name} is not georeferenced: {things} are in pixel coordinates (x "
        "right, y down).", "warning")
    return False


def check_input(src, card: dict, log, rescale: str = "none") -> tuple[float, float]:
    """Check the open rasterio dataset ``src`` against the model ``card`` before any work; the
    one rule of every tool that applies a model to a raster (Classify Pixels, Detect Objects,
    Classify Grid, Classify Chips on a raster, the grid filter). Returns the input scaling
    ``(a, b)`` of :func:`input_scaling` (``(1, 0)`` unless ``rescale`` is ``dtype``); ``log(
    message, level)`` receives notes and warnings (a :class:`..jobs.JobContext`'s ``log``).

    - bands: the DATA bands (:mod:`.validpixels`: an alpha band is a mask, not data) must equal
      the card's ``bands``, else UserError;
    - data type and value range: :func:`input_scaling` (UserError for values far outside the
      training data's, e.g. uint16 0–65535 for a uint8 model);
    - CRS: a geographic raster for a model trained in a projected CRS, or the reverse, gets a
      warning naming both CRSs and the fix (reproject). Not a refusal: the network sees pixels,
      not coordinates, so a raster in degrees at the training ground resolution classifies
      about as well (pixels slightly stretched); the pixel size below is then compared in
      metres, where it means something;
    - pixel size: the ground pixel size (metres, :func:`ground_pixel_size` at the raster's
      centre, when both CRSs are known; else map units) beyond :data:`PIXEL_SIZE_TOLERANCE`
      times the training pixel size either way gets a warning (objects look larger or smaller
      than in training). Skipped for an ungeoreferenced raster (no CRS, identity transform).
    """
    from .validpixels import data_band_count

    bands = data_band_count(src)
    if bands != int(card["bands"]):
        alpha = " (an alpha band is a mask, not data)" if bands != src.count else ""
        raise UserError(f"The input raster has {bands} band(s) of data{alpha} but the model was "
                        f"trained on {card['bands']}.",
                        "Use a raster with the same bands as the training rasters.")
    scale_a, scale_b, note = input_scaling(src, card, rescale)
    if note:
        log(note, "info")
    georeferenced = is_georeferenced(src)
    px = card.get("pixel_size")
    if not georeferenced:
        return scale_a, scale_b
    given, trained = _crs(src.crs), _crs(card.get("crs"))
    if given is not None and trained is not None and given.is_geographic != trained.is_geographic:
        log(f"The input raster's CRS is {given.name} ({_kind(given)}) but the model was trained "
            f"on rasters in {trained.name} ({_kind(trained)}). Reproject the raster to "
            f"{card['crs']} (Raster ▸ Projections ▸ Warp) before applying the model.", "warning")
    if not px or not px[0]:
        return scale_a, scale_b
    size, size_trained, unit = abs(src.res[0]), float(px[0]), ""
    if given is not None and trained is not None:
        lonlat = _centre_lonlat(src, given)
        size = ground_pixel_size(size, given, lonlat)
        size_trained = ground_pixel_size(size_trained, trained, lonlat)
        unit = " m"
    ratio = size / size_trained
    if ratio > PIXEL_SIZE_TOLERANCE or ratio < 1 / PIXEL_SIZE_TOLERANCE:
        log(f"The input pixel size ({size:.4g}{unit}) is far from the training pixel size "
            f"({size_trained:.4g}{unit}): objects look larger or smaller than in training and "
            "results may be poor. Resample the raster to the training pixel size.", "warning")
    return scale_a, scale_b
