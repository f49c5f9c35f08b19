"""Reading planned patches with rasterio windows, never outside a raster."""

from __future__ import annotations

import os

import numpy as np

from ..errors import UserError
from ..validpixels import data_band_count, read_data, valid_mask
from .plan import IGNORE, Patch, SampleSource


class PatchReader:
    """Reads patches of ``sources``; datasets are opened lazily, one handle per source and
    process (reopened after a fork, so DataLoader workers can share a reader).

    Pixels outside the raster: image 0, label 255. Image nodata (every band nodata, or masked):
    label 255 and image 0 in :meth:`read`.
    """

    def __init__(self, sources: list[SampleSource]) -> None:
        self.sources = list(sources)
        self._pid = os.getpid()
        self._images: dict[int, object] = {}
        self._labels: dict[int, object] = {}

    # -- datasets ------------------------------------------------------------------------------
    def _check_process(self) -> None:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._images, self._labels = {}, {}
            self._pid = os.getpid()

    def _open(self, cache: dict, index: int, path: str):
        self._check_process()
        ds = cache.get(index)
        if ds is None:
            import rasterio

            try:
                ds = rasterio.open(path)
            except rasterio.errors.RasterioIOError as exc:
                raise UserError(f"Cannot read {path}: {exc}.",
                                "Check that the file exists and is a raster.") from None
            cache[index] = ds
        return ds

    def image_dataset(self, index: int):
        return self._open(self._images, index, self.sources[index].image)

    def label_dataset(self, index: int):
        return self._open(self._labels, index, self.sources[index].labels)

    def close(self) -> None:
        if os.getpid() == self._pid:
            for ds in list(self._images.values()) + list(self._labels.values()):
                ds.close()
        self._images, self._labels = {}, {}

    def __enter__(self) -> PatchReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable for spawned DataLoader workers
        return {"sources": self.sources}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["sources"])

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _inside(ds, patch: Patch):
        """(window inside the raster, row slice, col slice in the patch) or None."""
        from rasterio.windows import Window

        r0, c0 = max(patch.row, 0), max(patch.col, 0)
        r1, c1 = min(patch.row + patch.size, ds.height), min(patch.col + patch.size, ds.width)
        if r1 <= r0 or c1 <= c0:
            return None
        return (Window(c0, r0, c1 - c0, r1 - r0),
                slice(r0 - patch.row, r1 - patch.row), slice(c0 - patch.col, c1 - patch.col))

    def _read_native(self, patch: Patch) -> tuple[np.ndarray, np.ndarray]:
        """(image in its dtype with outside pixels at nodata-or-0, valid mask of the patch)."""
        ds = self.image_dataset(patch.source)
        fill = ds.nodata if ds.nodata is not None and not np.isnan(ds.nodata) else 0
        out = np.full((data_band_count(ds), patch.size, patch.size), fill, dtype=ds.dtypes[0])
        valid = np.zeros((patch.size, patch.size), bool)
        inside = self._inside(ds, patch)
        if inside is None:
            return out, valid
        window, rows, cols = inside
        data = read_data(ds, window=window)
        out[:, rows, cols] = data
        valid[rows, cols] = valid_mask(ds, data, window)
        return out, valid

    def read_filled(self, patch: Patch, fill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (bands, size, size) of raw pixel values with invalid, outside and
        non-finite pixels set to ``fill`` ((bands,) float32: the band means, 0 once
        normalised), valid mask (size, size) bool): what the object families train on."""
        image, valid = self._read_native(patch)
        image = image.astype(np.float32)
        np.copyto(image, np.broadcast_to(np.asarray(fill, np.float32)[:, None, None],
                                         image.shape),
                  where=~valid[None] | ~np.isfinite(image))
        return image, valid

    def moved_inside(self, patch: Patch, row: int, col: int) -> Patch:
        """``patch`` moved to ``row``, ``col`` and then flush with the raster's edge where it
        would stick out (the planner's grid ends past the edge: a 128 px patch at row 1024 of
        a 1035-row raster held 11 rows of image and 117 of fill); rasters smaller than the
        patch keep the origin at 0."""
        import dataclasses

        ds = self.image_dataset(patch.source)
        row = min(max(row, 0), max(ds.height - patch.size, 0))
        col = min(max(col, 0), max(ds.width - patch.size, 0))
        if (row, col) == (patch.row, patch.col):
            return patch
        return dataclasses.replace(patch, row=row, col=col)

    def read_image(self, patch: Patch) -> np.ndarray:
        """The image patch in its native data type (for export); outside: nodata or 0."""
        return self._read_native(patch)[0]

    def read_labels(self, patch: Patch) -> np.ndarray:
        """The label patch as stored (uint8), 255 outside the raster."""
        ds = self.label_dataset(patch.source)
        out = np.full((patch.size, patch.size), IGNORE, np.uint8)
        inside = self._inside(ds, patch)
        if inside is not None:
            window, rows, cols = inside
            out[rows, cols] = ds.read(1, window=window)
        return out

    def read(self, patch: Patch) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (bands, size, size), labels uint8 (size, size)) for training."""
        image, valid = self._read_native(patch)
        labels = self.read_labels(patch)
        labels[~valid] = IGNORE
        image = image.astype(np.float32)
        image[:, ~valid] = 0.0
        return image, labels

    def read_pair(self, patch: Patch) -> tuple[np.ndarray, np.ndarray]:
        """(image native dtype, labels uint8 with image nodata → 255) for export."""
        image, valid = self._read_native(patch)
        labels = self.read_labels(patch)
        labels[~valid] = IGNORE
        return image, labels

    def patch_transform(self, patch: Patch):
        """The affine transform of the patch's top-left corner (also for padded edges)."""
        from rasterio.windows import Window

        ds = self.image_dataset(patch.source)
        return ds.window_transform(Window(patch.col, patch.row, patch.size, patch.size))
