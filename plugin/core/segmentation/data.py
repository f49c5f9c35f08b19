"""Training data: band statistics, the patch dataset, augmentation, rare-class sampling, soft
targets for blurred point/line labels.

Blur (soft targets). For a class with blur distance ``b`` (pixels) the current blur at training
progress ``t`` (0 at the first epoch, 1 at the last) is ``b × (1 − t)``. Background pixels
within that distance ``d`` of the class's labelled pixels get the soft target
``p = 1 − d / (blur + 1)`` for the class and ``1 − p`` for background (several classes: the
strongest wins). Labelled pixels keep their hard class, ignored pixels stay ignored. The label
rasters burn points and lines with their solid distance, so the blur margins grow outward from
those burned shapes; a class's polygons get the same soft margin (set blur only for point/line
classes). When every blur is zero, training uses hard targets.

Rare-class sampling. Each training patch gets a rarity score ``s = Σ_c share_c / freq_c`` (its
class pixel shares over the classes' frequencies in the training patches), normalised to mean 1.
At class weight ``w`` the patch is drawn with probability ∝ ``s ** w``: ``w = 0`` draws
uniformly, ``w = 1`` by inverse class frequency, larger values favour rare classes more. ``w``
decays linearly from the class weight max (first epoch) to the min (last epoch).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..batch_augment import AugmentSettings
from ..sampling import Patch, PatchReader, SampleSource
from ..sampling.windows import CENTRED_MAX, centred_share, hidden_in_window

IGNORE = 255


# -- normalisation ------------------------------------------------------------------------------


# -- rare-class sampling ------------------------------------------------------------------------
def rarity_scores(patches: list[Patch]) -> np.ndarray:
    """Per-patch rarity score (mean 1), from the patches' class pixel counts."""
    if not patches:
        return np.zeros(0)
    totals: dict[int, int] = {}
    for p in patches:
        for c, n in p.class_pixels.items():
            totals[c] = totals.get(c, 0) + n
    all_px = float(sum(totals.values())) or 1.0
    freq = {c: max(n / all_px, 1e-6) for c, n in totals.items()}
    scores = np.empty(len(patches))
    for i, p in enumerate(patches):
        n = float(sum(p.class_pixels.values())) or 1.0
        scores[i] = sum((v / n) / freq[c] for c, v in p.class_pixels.items() if v)
    scores = np.maximum(scores, 1e-6)
    return scores / scores.mean()


def class_weight_at(epoch: int, epochs: int, w_max: float, w_min: float) -> float:
    """Linear decay from ``w_max`` (epoch 0) to ``w_min`` (last epoch)."""
    t = epoch / max(epochs - 1, 1)
    return float(w_max + (w_min - w_max) * min(max(t, 0.0), 1.0))


def sampling_probabilities(scores: np.ndarray, weight: float) -> np.ndarray:
    p = scores ** weight
    return p / p.sum()


# -- augmentation -------------------------------------------------------------------------------
@dataclasses.dataclass
class Augment(AugmentSettings):
    """Per-patch augmentation in the data loader (the batch path is
    :class:`..batch_augment.BatchAugment`)."""

    def __call__(self, image, mask, rng: np.random.Generator):
        """Same random geometric transform of ``image`` (C,H,W float tensor, normalised) and
        ``mask`` (H,W uint8 tensor); new pixels: 0 (the mean) and 255 (ignored)."""
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        if self.flip:
            if rng.random() < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
            if rng.random() < 0.5:
                image, mask = image.flip(-2), mask.flip(-2)
        if self.rotation:
            k = int(rng.integers(4))
            if k:
                image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
        angle = float(rng.uniform(-self.max_angle, self.max_angle)) if self.rotation else 0.0
        scale = float(math.exp(rng.uniform(*np.log(self.scale_range)))) if self.scale else 1.0
        if abs(angle) > 0.5 or abs(scale - 1) > 0.02:
            image = tvf.affine(image, angle=angle, translate=[0, 0], scale=scale, shear=[0.0],
                             interpolation=InterpolationMode.BILINEAR, fill=0.0)
            mask = tvf.affine(mask[None], angle=angle, translate=[0, 0], scale=scale,
                            shear=[0.0], interpolation=InterpolationMode.NEAREST,
                            fill=IGNORE)[0]
        return image.contiguous(), mask.contiguous()


# -- soft targets -------------------------------------------------------------------------------
def soft_targets(mask: np.ndarray, blur: dict[int, float], classes: int) -> np.ndarray:
    """(classes, H, W) float32 target distribution for ``mask`` with the current ``blur``
    (class → px); ignored pixels are all zero (see the module docstring)."""
    from scipy.ndimage import distance_transform_edt

    h, w = mask.shape
    out = np.zeros((classes, h, w), np.float32)
    valid = mask != IGNORE
    hard = np.where(valid, mask, 0).astype(np.int64)
    out[hard, np.arange(h)[:, None], np.arange(w)[None, :]] = 1.0
    out[:, ~valid] = 0.0
    best = np.zeros((h, w), np.float32)
    best_cls = np.zeros((h, w), np.int64)
    background = valid & (mask == 0)
    for c, b in blur.items():
        if b <= 0 or c >= classes or not (mask == c).any():
            continue
        d = distance_transform_edt(mask != c)
        p = np.clip(1.0 - d / (b + 1.0), 0.0, 1.0).astype(np.float32)
        take = background & (p > best)
        best[take], best_cls[take] = p[take], c
    rows, cols = np.nonzero(best > 0)
    if len(rows):
        out[0, rows, cols] = 1.0 - best[rows, cols]
        out[best_cls[rows, cols], rows, cols] = best[rows, cols]
    return out


# -- dataset ------------------------------------------------------------------------------------
class PatchDataset:
    """Torch map-style dataset over planned patches or drawn windows: normalised image, mask,
    soft targets.

    ``blur`` (class → current px) can change between epochs (workers are not persistent);
    ``jitter`` shifts patches randomly by up to that share of their size. The random generator
    of item ``i`` is seeded by (seed, epoch, i): every draw of an epoch gets its own
    augmentation. ``nodata``: the images' nodata value; a band's nodata (and NaN/inf) is filled
    with that band's mean (0 after normalisation) even where other bands are valid.
    ``hidden``: source → [(row0, col0, row1, col1)] pixel boxes whose labels are ignored (the
    validation areas, when training on the same raster). ``unknown_background``: label 0 means
    "not labelled" and is ignored, not learnt as background. ``label_areas``: per patch (in
    the order of ``patches``) the pixel box whose labels count, the labels elsewhere in the
    patch ignored: a validation patch moved flush with its raster's edge scores only the pixels
    of its planned patch (:func:`..sampling.windows.planned_area`), the others being training
    pixels.
    """

    def __init__(self, sources: list[SampleSource], patches: list[Patch], mean: list[float],
                 std: list[float], classes: int, augment: Augment | None = None,
                 jitter: float = 0.0, seed: int = 0, nodata: float | None = None,
                 hidden: dict[int, list[tuple[int, int, int, int]]] | None = None,
                 unknown_background: bool = False,
                 label_areas: list[tuple[int, int, int, int]] | None = None) -> None:
        self.reader = PatchReader(sources)
        self.patches = list(patches)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.classes = classes
        self.augment = augment
        self.jitter = jitter
        self.seed = seed
        self.nodata = None if nodata is None or np.isnan(nodata) else float(nodata)
        self.hidden = hidden or {}
        self.unknown_background = unknown_background
        self.label_areas = label_areas
        self.epoch = 0
        self.blur: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.patches)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int):
        import torch

        patch = self.patches[index]
        rng = self._rng(index)
        if self.jitter > 0:
            j = int(patch.size * self.jitter)
            dr, dc = (int(v) for v in rng.integers(-j, j + 1, 2))
            patch = dataclasses.replace(patch, row=patch.row + dr, col=patch.col + dc)
        image, mask = self.reader.read(patch)
        bad = ~np.isfinite(image)
        if self.nodata is not None:
            bad |= image == self.nodata
        image = (image - self.mean) / self.std
        image[:, mask == IGNORE] = 0.0
        image[bad] = 0.0          # the band's mean
        for rs, cs in hidden_in_window(patch.row, patch.col, patch.size,
                                       self.hidden.get(patch.source, ())):
            mask[rs, cs] = IGNORE
        if self.label_areas is not None:
            counted = np.zeros(mask.shape, bool)
            for rs, cs in hidden_in_window(patch.row, patch.col, patch.size,
                                           [self.label_areas[index]]):
                counted[rs, cs] = True
            mask[~counted] = IGNORE
        if self.unknown_background:
            mask[mask == 0] = IGNORE
        img_t, mask_t = torch.from_numpy(image), torch.from_numpy(mask)
        if self.augment is not None and self.augment.active:
            img_t, mask_t = self.augment(img_t, mask_t, rng)
        if any(b > 0 for b in self.blur.values()):
            soft = torch.from_numpy(soft_targets(mask_t.numpy(), self.blur, self.classes))
        else:
            soft = torch.zeros(0)
        return img_t, mask_t, soft


# -- random windows -----------------------------------------------------------------------------
MAX_CENTRES = 200_000     # labelled pixels kept per class as window centres (a random subset)


@dataclasses.dataclass
class WindowSampler:
    """Random training windows, drawn anew every epoch (issue 9, causes 1–2).

    A share ``centred`` of the windows is centred on a labelled feature pixel of the training
    area (jittered by up to a quarter window), the others lie anywhere in the training rasters.
    :meth:`scan` sets it to ``CENTRED_MAX`` minus the features' share of the training area: half
    the windows for sparse features (buildings covering 6 %), none when features cover half the
    area or more, where centring would only teach the network that features are commoner than
    they are.
    Class ``c`` of the centre is chosen with probability ∝ ``n_c ** (1 − w)`` for the class
    weight ``w`` (0: by pixel count, 1: every class equally often, > 1: rare classes more).
    Windows lie inside their raster, flush with its edges (a raster smaller than the window is
    padded: ignored labels). ``centres``: class → (n, 3) int32 (source, row, col);
    ``shapes``: source → (height, width) for the sources that hold training area;
    ``class_px``: (256,) int64 pixels of each label value in the training area (outside the
    hidden areas; IGNORE counted at 255).
    """

    size: int
    shapes: dict[int, tuple[int, int]]
    centres: dict[int, np.ndarray]
    centred: float = CENTRED_MAX
    class_px: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))

    @classmethod
    def scan(cls, sources: list[SampleSource], source_ids: list[int], size: int,
             hidden: dict[int, list[tuple[int, int, int, int]]], seed: int = 0,
             block_rows: int = 1024) -> WindowSampler:
        """Index the labelled feature pixels (1–254) of ``source_ids`` outside ``hidden``,
        reading each label raster ``block_rows`` rows at a time."""
        import rasterio
        from rasterio.windows import Window

        rng = np.random.default_rng([seed, 17])
        found: dict[int, list[np.ndarray]] = {}
        shapes = {}
        feature_px = area_px = 0
        class_px = np.zeros(256, np.int64)
        for sid in source_ids:
            with rasterio.open(sources[sid].labels) as ds:
                shapes[sid] = (ds.height, ds.width)
                for r0 in range(0, ds.height, block_rows):
                    n = min(block_rows, ds.height - r0)
                    lab = ds.read(1, window=Window(0, r0, ds.width, n))
                    for b0, c0, b1, c1 in hidden.get(sid, ()):
                        lab[max(b0 - r0, 0):max(min(b1 - r0, n), 0), c0:c1] = IGNORE
                    open_ = lab != IGNORE
                    area_px += int(open_.sum())
                    feature_px += int((open_ & (lab > 0)).sum())
                    class_px += np.bincount(lab.ravel(), minlength=256)
                    for c in np.unique(lab):
                        if c == 0 or c == IGNORE:
                            continue
                        rr, cc = np.nonzero(lab == c)
                        if len(rr) > MAX_CENTRES:
                            keep = rng.choice(len(rr), MAX_CENTRES, replace=False)
                            rr, cc = rr[keep], cc[keep]
                        found.setdefault(int(c), []).append(
                            np.stack([np.full(len(rr), sid), rr + r0, cc], 1).astype(np.int32))
        centres = {}
        for c, parts in found.items():
            arr = np.concatenate(parts)
            if len(arr) > MAX_CENTRES:
                arr = arr[rng.choice(len(arr), MAX_CENTRES, replace=False)]
            centres[c] = arr
        centred = centred_share(feature_px, area_px)
        return cls(size, shapes, centres, centred, class_px)

    def draw(self, n: int, class_weight: float, rng: np.random.Generator) -> list[Patch]:
        """``n`` windows (Patch objects of split "train") for one epoch."""
        classes = sorted(self.centres)
        counts = np.array([len(self.centres[c]) for c in classes], np.float64)
        p_class = counts ** (1.0 - class_weight) if classes else counts
        p_class = p_class / p_class.sum() if classes else p_class
        sids = sorted(self.shapes)
        area = np.array([self.shapes[s][0] * self.shapes[s][1] for s in sids], np.float64)
        out = []
        half = self.size // 2
        for _ in range(n):
            if classes and rng.random() < self.centred:
                pts = self.centres[classes[rng.choice(len(classes), p=p_class)]]
                sid, r, c = (int(v) for v in pts[rng.integers(len(pts))])
                j = self.size // 4
                r += int(rng.integers(-j, j + 1)) - half
                c += int(rng.integers(-j, j + 1)) - half
            else:
                sid = sids[rng.choice(len(sids), p=area / area.sum())]
                r = int(rng.integers(0, max(self.shapes[sid][0] - self.size, 0) + 1))
                c = int(rng.integers(0, max(self.shapes[sid][1] - self.size, 0) + 1))
            h, w = self.shapes[sid]
            r = min(max(r, 0), max(h - self.size, 0))      # flush with the raster edges
            c = min(max(c, 0), max(w - self.size, 0))
            out.append(Patch(sid, r, c, self.size, "train", True, {}, 0.0))
        return out
