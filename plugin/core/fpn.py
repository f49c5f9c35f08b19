"""ResNet + FPN backbones for any band count and a transform that never resizes: the parts of
torchvision's detectors that the object detection and instance segmentation families share.

- Backbones are built with random weights (``weights=None``) and trainable batch norm
  (``nn.BatchNorm2d``, not torchvision's frozen default: frozen statistics only make sense for
  pretrained weights; :func:`freeze_batch_norm` freezes them after a pretrained start, see
  :mod:`.training.start_weights`); the first convolution is rebuilt for ``bands`` input
  channels.
- :func:`no_resize_transform` replaces a detector's ``GeneralizedRCNNTransform`` by one that
  normalises with the card's per-band mean/std and pads to a multiple of 32 but never resizes:
  the pixel size a model sees is the raster's.
"""

from __future__ import annotations

from functools import cache

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


@cache
def _frozen_class():
    class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
        """Batch norm that always normalises with its stored statistics and scale (never
        trained); the same tensors as ``nn.BatchNorm2d``, so model files load into either."""

        def train(self, mode: bool = True):
            return super().train(False)

    return FrozenStatsBatchNorm2d


def freeze_batch_norm(body: nn.Module) -> int:
    """Keep the batch norms of the pretrained ``body`` as they came (statistics, scale and
    shift), as torchvision's detectors do with pretrained backbones (``FrozenBatchNorm2d``,
    ``torchvision.models.detection.retinanet_resnet50_fpn`` etc.): batches of 2–8 patches give
    too noisy statistics to learn. Unlike torchvision's ``FrozenBatchNorm2d`` the modules keep
    ``nn.BatchNorm2d``'s state-dict keys, so the model file loads into the plain network.
    Returns how many were frozen (in place)."""
    frozen = _frozen_class()
    count = 0
    for module in body.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = frozen
            module.requires_grad_(False)
            module.eval()
            count += 1
    return count


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


def start_detector(net: nn.Module, start: str, task: str, pretrained) -> str:
    """START_WEIGHTS ``start`` of family ``task`` into the torchvision detector ``net``
    (:func:`.training.start_weights.start_network`: a file of the whole detector or of its
    ResNet, whose keys are tried under ``backbone.body.``; ``pretrained()``: the family's
    torchvision download); a start other than random then freezes the backbone's batch norms
    (:func:`freeze_batch_norm`). Returns the line for the training log ("" for random)."""
    from .training.start_weights import START_RANDOM, start_network

    line = start_network(net, start, task, pretrained, prefixes=("backbone.body.",),
                         core="backbone.body.", what="the ResNet backbone")
    if start != START_RANDOM:
        n = freeze_batch_norm(net.backbone.body)
        line += f" The {n} batch norms of the backbone keep their statistics."
    return line

