"""Geometric (and photometric) augmentation of a whole training batch on its device (GPU or CPU),
shared by the pixel families, each patch with its own random transform: horizontal/vertical flips,
a turn by a multiple of 90°, a rotation of up to ±``max_angle`` degrees and a scale in
``scale_range`` (log-uniform), as segmentation's per-patch ``data.Augment`` draws them, composed
into one affine map per patch and applied with ``torch.nn.functional.affine_grid`` /
``grid_sample``: bilinear for the image (new pixels 0, the band mean after normalisation), nearest
for the mask (new pixels IGNORE, so they do not count), bilinear for soft targets (new pixels all
0: ignored; pixel regression passes its targets there). With ``photometric``, each patch's contrast
is jittered first, the same for all its bands (colour ratios such as excess green keep their
meaning): the image, normalised to band mean 0 / std 1, becomes ``(x − m)·c + m + b`` with ``m``
the patch's per-band mean, ``c`` log-uniform in ``contrast_range`` and ``b`` uniform in
±``brightness`` band standard deviations (torchvision's ColorJitter, albumentations'
RandomBrightnessContrast) — lighting and exposure differ across a scene. ``brightness`` is 0 by
default: measured with bench/learn_real_imagery.py (64 px quick runs), contrast ×0.8–1.25 raised
the OSBS_029 tree IoU from 0.565 to 0.598 and kept the Landsat land cover (0.791 → 0.798), while
adding brightness ±0.2 std cost the land cover 0.08 (classes told apart by brightness).

Doing it per batch on the device keeps the data-loader workers to reading (issue 12: 4.4 ms per
patch with augmentation in a worker, 1.85 ms without).

torch's own sampling ops rather than kornia: kornia 0.9 needs Python ≥ 3.11 and a Rust wheel
(kornia-rs) where the core installs on 3.9, and has no separate fill value for masks.
"""

from __future__ import annotations

import dataclasses
import math

IGNORE = 255   # the labels' ignore value (data conventions in docs/ARCHITECTURE.md)


@dataclasses.dataclass
class AugmentSettings:
    """Which geometric augmentations training draws (ENVI's Augment Rotation / Augment Scale,
    plus flips): a rotation of up to ±``max_angle`` degrees, a scale in ``scale_range``."""

    rotation: bool = True
    scale: bool = True
    flip: bool = True
    max_angle: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.25)

    @property
    def active(self) -> bool:
        return self.rotation or self.scale or self.flip


@dataclasses.dataclass
class BatchAugment(AugmentSettings):
    """The augmentation of :class:`AugmentSettings`, drawn per patch, applied per batch,
    plus the photometric jitter (``photometric``) described in the module docstring."""

    photometric: bool = False
    brightness: float = 0.0
    contrast_range: tuple[float, float] = (0.8, 1.25)

    def photometric_jitter(self, image, generator):
        """``image`` (N, C, H, W) float, normalised → each patch's brightness and contrast
        jittered (module docstring); the draws come from the CPU ``generator``."""
        import torch

        n = image.shape[0]
        lo, hi = (math.log(s) for s in self.contrast_range)
        c = torch.exp(lo + (hi - lo) * torch.rand(n, generator=generator))
        b = self.brightness * (2 * torch.rand(n, generator=generator) - 1)
        c = c.to(image.device, torch.float32).view(n, 1, 1, 1)
        b = b.to(image.device, torch.float32).view(n, 1, 1, 1)
        x = image.float()
        m = x.mean(dim=(2, 3), keepdim=True)
        return ((x - m) * c + m + b).to(image.dtype)

    def matrices(self, n: int, generator):
        """(n, 2, 3) float32 affine maps (output → input, normalised coordinates) drawn with
        the CPU ``generator`` (a torch.Generator)."""
        import torch

        def uniform(lo: float, hi: float):
            return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

        sx = torch.ones(n, dtype=torch.float64)
        sy = torch.ones(n, dtype=torch.float64)
        if self.flip:
            sx = torch.where(torch.rand(n, generator=generator) < 0.5, -sx, sx)
            sy = torch.where(torch.rand(n, generator=generator) < 0.5, -sy, sy)
        angle = torch.zeros(n, dtype=torch.float64)
        if self.rotation:
            k = torch.randint(0, 4, (n,), generator=generator).double()
            angle = k * (math.pi / 2) + uniform(-1, 1) * math.radians(self.max_angle)
        zoom = torch.ones(n, dtype=torch.float64)
        if self.scale:
            lo, hi = (math.log(s) for s in self.scale_range)
            zoom = torch.exp(uniform(lo, hi))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # exact quarter turns (cos 90° is 6e-17 in floating point)
        cos = torch.where(cos.abs() < 1e-12, torch.zeros_like(cos), cos)
        sin = torch.where(sin.abs() < 1e-12, torch.zeros_like(sin), sin)
        theta = torch.zeros((n, 2, 3), dtype=torch.float64)
        # input = R(angle) · diag(flip) · output / zoom (zoom > 1 enlarges the content)
        theta[:, 0, 0], theta[:, 0, 1] = cos * sx / zoom, -sin * sy / zoom
        theta[:, 1, 0], theta[:, 1, 1] = sin * sx / zoom, cos * sy / zoom
        return theta.float()

    def __call__(self, image, mask, soft, generator):
        """``image`` (N, C, H, W) float, ``mask`` (N, H, W) long, ``soft`` (N, K, H, W) float or
        empty, all on one device → the same, transformed; ``generator``: a CPU torch.Generator
        (the transforms are drawn there, then moved to the device)."""
        import torch
        from torch.nn import functional as F  # noqa: N812

        if image.shape[0] == 0:
            return image, mask, soft
        if self.photometric:
            image = self.photometric_jitter(image, generator)
        if not self.active:
            return image, mask, soft
        n = image.shape[0]
        theta = self.matrices(n, generator)
        if image.is_cuda:   # from pageable memory the copy would wait for the GPU's queue
            theta = theta.pin_memory()
        theta = theta.to(image.device, non_blocking=True)
        grid = F.affine_grid(theta, [n, 1, *image.shape[-2:]], align_corners=False)
        image = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False).to(image.dtype)
        shifted = (mask + 1).to(torch.float32)[:, None]   # 0 only where nothing was sampled
        m = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].long() - 1
        mask = torch.where(m < 0, torch.full_like(m, IGNORE), m)
        if soft.numel():
            soft = F.grid_sample(soft, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)
        return image.contiguous(), mask.contiguous(), soft
