"""Band statistics of the training rasters (the normalisation every family's model card holds).
"""

from __future__ import annotations

import numpy as np

from ..validpixels import read_data, valid_mask
from .plan import SampleSource


def band_statistics(sources: list[SampleSource], window: int = 512,
                    max_windows: int = 48) -> tuple[list[float], list[float], float | None]:
    """Per-band (mean, std) of the images of ``sources``, from at most ``max_windows`` evenly
    spread windows per raster (memory: one window), and the nodata value of the first image.

    Each band's statistics leave out that band's own nodata values and NaN/inf (a band with
    −99999 where the others are valid must not take −99999 into its mean) and the pixels that
    are not valid (``validpixels.valid_mask``)."""
    import rasterio
    from rasterio.windows import Window

    total = sq = count = None
    nodata = None
    for k, src in enumerate(sources):
        with rasterio.open(src.image) as ds:
            if k == 0:
                nodata = ds.nodata
            wins = [Window(c, r, min(window, ds.width - c), min(window, ds.height - r))
                    for r in range(0, ds.height, window) for c in range(0, ds.width, window)]
            if len(wins) > max_windows:
                pick = np.linspace(0, len(wins) - 1, max_windows).round().astype(int)
                wins = [wins[i] for i in sorted(set(pick))]
            for win in wins:
                data = read_data(ds, window=win)
                pixel_ok = valid_mask(ds, data, win)
                if total is None:
                    total, sq, count = (np.zeros(len(data)) for _ in range(3))
                if data.shape[0] != len(total):
                    from ..errors import UserError

                    raise UserError(f"Raster {src.display_name} has {len(data)} data bands, the "
                                    f"others {len(total)}.",
                                    "Train on rasters with the same bands.")
                data = data.astype(np.float64)
                valid = pixel_ok[None] & np.isfinite(data)
                if ds.nodata is not None and not np.isnan(ds.nodata):
                    valid &= data != ds.nodata      # per band: one band's nodata stays out
                vals = np.where(valid, data, 0.0)
                total += vals.sum(axis=(1, 2))
                sq += (vals ** 2).sum(axis=(1, 2))
                count += valid.sum(axis=(1, 2))
    if total is None or not count.all():
        from ..errors import UserError

        raise UserError("The training rasters hold no valid pixels"
                        + ("" if total is None else
                           f" in band(s) {[int(b) + 1 for b in np.flatnonzero(count == 0)]}")
                        + ".", "Check their nodata.")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return mean.tolist(), std.tolist(), nodata
