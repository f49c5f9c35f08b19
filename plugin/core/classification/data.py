"""Classification samples: grid cells of labelled rasters and chips, read as normalised tensors
with their targets, and flip / 90° rotation augmentation (Planet), plus the grid model's small
rotations and scale (ENVI's augmentation rotation and scale).

A sample is ``(image float32 (bands, S, S), target)``: target int64 class index (single-label)
or float32 multi-hot (C,) (multi-label). Images are ``(pixel − mean) / std`` per band; nodata
and padding become 0 after normalisation (the band mean) for cells, and raw 0 for chips (GBDX
zero-padding, normalised like every pixel).
"""

from __future__ import annotations

import numpy as np

from .chips import Chip, pad_resize, read_chip

CACHE_BYTES = 1 << 30     # prepared chips kept in memory per dataset (1 GiB)


def _augment(image, rng: np.random.Generator, flips: bool, rotation: bool, scale: bool):
    """Random flips / 90° turns (labels unchanged), small rotation and zoom for cells."""
    import torch

    if flips:
        if rng.random() < 0.5:
            image = image.flip(-1)
        if rng.random() < 0.5:
            image = image.flip(-2)
        k = int(rng.integers(4))
        if k:
            image = torch.rot90(image, k, (-2, -1))
    if rotation or scale:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        angle = float(rng.uniform(-15, 15)) if rotation else 0.0
        zoom = float(np.exp(rng.uniform(np.log(0.9), np.log(1.1)))) if scale else 1.0
        image = tvf.affine(image, angle=angle, translate=[0, 0], scale=zoom, shear=[0.0],
                           interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return image.contiguous()


class CellDataset:
    """Grid cells (planned patches of ``grid_size`` px) with multi-hot targets (C,).

    ``targets`` (N, C) go with fixed ``patches``; with ``windows`` (a
    :class:`.gridwindows.CellWindows`) the patches are set per epoch (random windows), the
    pixels of validation cells they overlap are masked and each target is computed from the
    window's own labels by ``rule`` = (class ids, min cover, pad small features)."""

    def __init__(self, sources, patches, targets: np.ndarray | None, mean, std,
                 augment: tuple[bool, bool, bool] | None = None, seed: int = 0,
                 windows=None, rule: tuple | None = None) -> None:
        from ..sampling import PatchReader

        self.reader = PatchReader(sources)
        self.patches = list(patches)
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.windows = windows
        self.rule = rule

    def __len__(self) -> int:
        return len(self.patches)

    def target(self, index: int, labels: np.ndarray) -> np.ndarray:
        """(C,) float32 target of patch ``index`` whose (masked) labels are ``labels``."""
        if self.targets is not None:
            return self.targets[index]
        from .gridcells import cell_targets

        values, counts = np.unique(labels[labels != 255], return_counts=True)
        ids, min_cover, pad = self.rule
        return cell_targets(dict(zip(values.tolist(), counts.tolist())), ids, min_cover, pad)

    def __getitem__(self, index: int):
        import torch

        patch = self.patches[index]
        image, labels = self.reader.read(patch)
        if self.windows is not None:
            for r0, c0, r1, c1 in self.windows.hidden_boxes(patch.source, patch.row,
                                                            patch.col):
                labels[r0:r1, c0:c1] = 255
        target = self.target(index, labels)
        image = (image - self.mean) / self.std
        image[:, labels == 255] = 0.0
        img = torch.from_numpy(np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0))
        if self.augment and any(self.augment):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            flip, rot, scale = self.augment
            img = _augment(img, rng, flip, rot, scale)
        return img, torch.from_numpy(np.asarray(target, np.float32))


class ChipDataset:
    """Chips padded/resized as GBDX does (:func:`.chips.pad_resize`), normalised. Prepared
    chips are kept in memory up to :data:`CACHE_BYTES` (later epochs read no file)."""

    def __init__(self, chips: list[Chip], targets, side: int, resize: int, mean, std,
                 multi_label: bool, augment: bool = False, seed: int = 0) -> None:
        self.chips = list(chips)
        self.targets = np.asarray(targets, np.float32 if multi_label else np.int64)
        self.side, self.resize = int(side), int(resize)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache: dict[int, np.ndarray] = {}
        self.cached_bytes = 0

    def __len__(self) -> int:
        return len(self.chips)

    def prepared(self, index: int) -> np.ndarray:
        """(bands, S, S) float32 chip, padded and resized (from the cache when there)."""
        image = self.cache.get(index)
        if image is None:
            image = pad_resize(read_chip(self.chips[index].path), self.side, self.resize)
            if self.cached_bytes + image.nbytes <= CACHE_BYTES:
                self.cache[index] = image
                self.cached_bytes += image.nbytes
        return image

    def __getitem__(self, index: int):
        import torch

        img = torch.from_numpy((self.prepared(index) - self.mean) / self.std)
        if self.augment:
            img = _augment(img, np.random.default_rng([self.seed, self.epoch, index]), True,
                           False, False)
        return img, torch.as_tensor(self.targets[index])


def chip_statistics(chips: list[Chip], max_chips: int = 256,
                    seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-band (mean, std) over the pixels of at most ``max_chips`` chips drawn evenly."""
    if len(chips) > max_chips:
        pick = np.linspace(0, len(chips) - 1, max_chips).round().astype(int)
        chips = [chips[i] for i in sorted(set(pick))]
    total = sq = None
    n = 0
    for c in chips:
        image = read_chip(c.path)
        data = image.astype(np.float64).reshape(image.shape[0], -1)
        if total is None:
            total, sq = np.zeros(data.shape[0]), np.zeros(data.shape[0])
        total += data.sum(1)
        sq += (data ** 2).sum(1)
        n += data.shape[1]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean ** 2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return mean.tolist(), std.tolist()
