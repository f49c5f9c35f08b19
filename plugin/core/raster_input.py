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
