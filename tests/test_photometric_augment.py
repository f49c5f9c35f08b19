"""Photometric augmentation of a training batch (BatchAugment.photometric): each patch gets its own
contrast (and brightness when asked), the same for all its bands; masks are left alone."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from plugin.core.batch_augment import BatchAugment  # noqa: E402


def test_brightness_and_contrast_per_patch_same_for_every_band():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(32, 3, 16, 16, generator=g)
    mask = torch.randint(0, 3, (32, 16, 16), generator=g)
    aug = BatchAugment(rotation=False, scale=False, flip=False, photometric=True,
                       brightness=0.2)
    img2, mask2, _ = aug(image, mask, torch.empty(0), torch.Generator().manual_seed(1))
    assert torch.equal(mask2, mask)                       # labels untouched
    m1, m2 = image.mean((2, 3)), img2.mean((2, 3))
    c = (img2 - m2[..., None, None]).std((2, 3)) / (image - m1[..., None, None]).std((2, 3))
    b = m2 - m1
    torch.testing.assert_close(c, c[:, :1].expand_as(c), rtol=1e-4, atol=1e-4)   # all bands
    torch.testing.assert_close(b, b[:, :1].expand_as(b), rtol=0, atol=1e-4)
    assert ((c > 0.8 - 1e-4) & (c < 1.25 + 1e-4)).all() and c.std() > 0.05   # per patch
    assert (b.abs() <= 0.2 + 1e-4).all() and b.std() > 0.05
    off = BatchAugment(rotation=False, scale=False, flip=False)              # off by default
    assert torch.equal(off(image, mask, torch.empty(0), torch.Generator())[0], image)


def test_the_job_turns_it_on_by_default_and_processing_offers_it():
    from plugin.core.params import param_fields
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    job = TrainPixelSegmentationJob(project="p.gpkg", output_model="m.safetensors")
    assert job.augment_photometric is True
    specs = {s.name: s for _f, s in param_fields(TrainPixelSegmentationJob)}
    assert specs["AUGMENT_PHOTOMETRIC"].kind == "bool" and specs["AUGMENT_PHOTOMETRIC"].help
    assert not TrainPixelSegmentationJob(project="p.gpkg", output_model="m.safetensors",
                                         augment_photometric=False).augment_photometric


def test_contrast_only_by_default_keeps_each_patch_mean():
    g = torch.Generator().manual_seed(2)
    image = torch.randn(8, 4, 16, 16, generator=g)
    aug = BatchAugment(rotation=False, scale=False, flip=False, photometric=True)
    img2, _, _ = aug(image, torch.zeros(8, 16, 16, dtype=torch.long), torch.empty(0),
                     torch.Generator().manual_seed(3))
    torch.testing.assert_close(img2.mean((2, 3)), image.mean((2, 3)), rtol=0, atol=1e-5)
    assert not torch.allclose(img2, image)
