"""ResNet + FPN backbones for any band count and a transform that never resizes: the parts of
torchvision's detectors that the object detection and instance segmentation families share.

- Backbones start from random weights (``weights=None``) with trainable batch norm
  (``nn.BatchNorm2d``, not torchvision's frozen default: frozen statistics only make sense for
  pretrained weights); the first convolution is rebuilt for ``bands`` input channels.
- :func:`no_resize_transform` replaces a detector's ``GeneralizedRCNNTransform`` by one that
  normalises with the card's per-band mean/std and pads to a multiple of 32 but never resizes:
  the pixel size a model sees is the raster's.
"""

from __future__ import annotations

from torch import nn


def _transform_class():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class FixedSizeTransform(GeneralizedRCNNTransform):
        """Normalises and batches (padded to a multiple of 32) without resizing."""

        def resize(self, image, target=None):
            return image, target

    return FixedSizeTransform


def no_resize_transform(net: nn.Module) -> nn.Module:
    """Give the torchvision detector ``net`` (RetinaNet, FCOS, Faster/Mask R-CNN) a transform
    with the same sizes, mean and std that never resizes (see the module); returns ``net``."""
    old = net.transform
    net.transform = _transform_class()(old.min_size, old.max_size, old.image_mean,
                                       old.image_std, size_divisible=32)
    return net


def adapt_first_conv(body: nn.Module, bands: int) -> None:
    """Rebuild the ResNet ``body``'s first convolution for ``bands`` input channels (in place;
    3 bands keep it)."""
    if bands != 3:
        old = body.conv1
        body.conv1 = nn.Conv2d(bands, old.out_channels, kernel_size=old.kernel_size,
                               stride=old.stride, padding=old.padding, bias=False)


def resnet_fpn(depth: str, bands: int, returned_layers: list[int], extra_blocks,
               out_channels: int = 256):
    """ResNet-18 or -50 (``depth`` "resnet18" / "resnet50") + FPN (torchvision's
    ``BackboneWithFPN``) on ``bands``-band input, every layer trainable; ``returned_layers``:
    the ResNet stages (1–4) the FPN reads; ``extra_blocks``: torchvision's
    ``LastLevelMaxPool`` / ``LastLevelP6P7``; ``out_channels``: the FPN width."""
    from torchvision.models import resnet18, resnet50
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    net = (resnet50 if depth == "resnet50" else resnet18)(weights=None,
                                                          norm_layer=nn.BatchNorm2d)
    adapt_first_conv(net, bands)
    c2 = net.inplanes // 8            # channels of layer1 (64 for ResNet-18, 256 for -50)
    return BackboneWithFPN(net, {f"layer{k}": str(i) for i, k in enumerate(returned_layers)},
                           [c2 * 2 ** (k - 1) for k in returned_layers], out_channels,
                           extra_blocks=extra_blocks)
