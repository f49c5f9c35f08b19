"""Detection networks: torchvision's RetinaNet, Faster R-CNN and FCOS, for any band count.

- Backbones (:mod:`..fpn`): ResNet-50 FPN (torchvision's reference configuration: P3–P7 for
  RetinaNet/FCOS, P2–P5 + pool for Faster R-CNN) or a light ResNet-18 FPN with 128 channels
  (FCOS: anchor-free, it learns from random weights in far fewer steps than RetinaNet, so it
  trains on a CPU). Built with random weights and trainable batch norm; START_WEIGHTS coco or
  a file then fills them (:func:`pretrained_state`, :func:`..fpn.start_detector`: the
  backbone's batch norms frozen, the class head random).
- Any band count: the first convolution is rebuilt with ``bands`` input channels (a start's
  RGB kernels adapted: :func:`..training.start_weights.adapt_first_conv_weight`).
- Input: raw pixel values, float32 (N, bands, H, W). The detector's transform normalises with
  the card's per-band mean/std and **never resizes** (:func:`..fpn.no_resize_transform`): the
  pixel size a model sees is the raster's. Output (eval): per image ``{"boxes": (K, 4) float32
  xyxy in pixels, "scores": (K,), "labels": (K,) int64 class ids}``.
- Class ids are the project's (1..N); 0 is background (``num_classes = max id + 1``).
- Ignore regions (RetinaNet, FCOS: :data:`IGNORING`): a training target may carry ``"ignore"``
  boxes (objects a window shows without their label, cut by its edge); the classification loss
  skips the locations matched to no object whose centre lies in one (:class:`IgnoreRegions`),
  as RetinaNet's own matcher skips anchors between its IoU thresholds and COCO's evaluation
  skips ``iscrowd`` regions, so an unlabelled object part is neither object nor background.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..fpn import no_resize_transform, resnet_fpn

LIGHT_CHANNELS = 128   # FPN and head width of the light model (256 in the reference models)
IGNORING = ("retinanet", "fcos", "fcos_resnet18")   # architectures honouring ignore regions
IGNORED_LOGIT = -30.0  # class logit put at ignored locations: focal loss ~1e-40, no gradient


def build_detector(architecture: str, bands: int, num_classes: int, patch_size: int,
                   mean: list[float], std: list[float], *, score_threshold: float = 0.05,
                   nms_iou: float = 0.5, max_detections: int = 300) -> nn.Module:
    """A fresh detector (random weights) for ``bands``-band rasters and class ids
    ``1 … num_classes − 1``; ``mean``/``std`` (one per band, raw pixel units) are applied inside.

    Raises UserError for an unknown architecture."""
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    if architecture not in ("retinanet", "fasterrcnn", "fcos", "fcos_resnet18"):
        # the names of .modelfile.ARCHITECTURES (not imported: the model file loader imports
        # this module)
        raise UserError(f"Unknown detection architecture {architecture!r}.",
                        "Use retinanet, fasterrcnn, fcos or fcos_resnet18.")
    if len(mean) != bands or len(std) != bands:
        raise UserError(f"The normalisation has {len(mean)} values for {bands} bands.",
                        "Train the model again.")
    kw = {"min_size": patch_size, "max_size": patch_size, "image_mean": list(mean),
          "image_std": list(std)}
    if architecture == "fasterrcnn":
        from torchvision.models.detection import FasterRCNN

        net = FasterRCNN(resnet_fpn("resnet50", bands, [1, 2, 3, 4], LastLevelMaxPool()),
                         num_classes=num_classes, box_score_thresh=score_threshold,
                         box_nms_thresh=nms_iou, box_detections_per_img=max_detections, **kw)
    elif architecture in ("fcos", "fcos_resnet18"):
        from torchvision.models.detection import FCOS

        light = architecture == "fcos_resnet18"
        depth, width = ("resnet18", LIGHT_CHANNELS) if light else ("resnet50", 256)
        net = FCOS(resnet_fpn(depth, bands, [2, 3, 4], LastLevelP6P7(width, width), width),
                   num_classes=num_classes, score_thresh=score_threshold, nms_thresh=nms_iou,
                   detections_per_img=max_detections, topk_candidates=1000, **kw)
    else:
        from torchvision.models.detection import RetinaNet

        net = RetinaNet(resnet_fpn("resnet50", bands, [2, 3, 4], LastLevelP6P7(2048, 256)),
                        num_classes=num_classes, score_thresh=score_threshold,
                        nms_thresh=nms_iou, detections_per_img=max_detections, **kw)
    if architecture in IGNORING:
        net.head.compute_loss = IgnoreRegions(net.head.compute_loss)
    return no_resize_transform(net)


def ignored_locations(anchors, ignore, matched):
    """(A,) bool: the locations (``anchors`` (A, 4) xyxy px) matched to no object
    (``matched`` (A,) < 0) whose centre lies inside one of the ``ignore`` (M, 4) xyxy boxes."""
    import torch

    if not len(ignore):
        return torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device)
    cx = ((anchors[:, 0] + anchors[:, 2]) / 2)[:, None]
    cy = ((anchors[:, 1] + anchors[:, 3]) / 2)[:, None]
    ig = ignore.to(anchors.dtype)
    inside = ((cx >= ig[:, 0]) & (cx < ig[:, 2]) & (cy >= ig[:, 1]) & (cy < ig[:, 3])).any(1)
    return inside & (matched < 0)


class IgnoreRegions:
    """The ``compute_loss(targets, head_outputs, anchors, matched_idxs)`` of a torchvision
    RetinaNet or FCOS head, honouring the targets' optional ``"ignore"`` boxes: the class
    logits of :func:`ignored_locations` are replaced by the constant :data:`IGNORED_LOGIT`
    before the head's own loss (sigmoid focal loss against background: ~0, and no gradient),
    so they count neither as object nor as background. Box and centerness losses only use
    matched locations and are unchanged."""

    def __init__(self, compute_loss) -> None:
        self.compute_loss = compute_loss

    def __call__(self, targets, head_outputs, anchors, matched_idxs):
        import torch

        masks = [ignored_locations(a, t["ignore"], m) if "ignore" in t else
                 torch.zeros(len(a), dtype=torch.bool, device=a.device)
                 for t, a, m in zip(targets, anchors, matched_idxs)]
        if any(bool(m.any()) for m in masks):
            logits = head_outputs["cls_logits"]
            head_outputs = {**head_outputs, "cls_logits": logits.masked_fill(
                torch.stack(masks)[..., None], IGNORED_LOGIT)}
        return self.compute_loss(targets, head_outputs, anchors, matched_idxs)


def set_inference(net: nn.Module, score_threshold: float, nms_iou: float,
                  max_detections: int) -> None:
    """Set the detector's post-processing thresholds in place (all three architectures)."""
    if hasattr(net, "roi_heads"):             # Faster R-CNN
        net.roi_heads.score_thresh = score_threshold
        net.roi_heads.nms_thresh = nms_iou
        net.roi_heads.detections_per_img = max_detections
    else:                                     # RetinaNet, FCOS
        net.score_thresh = score_threshold
        net.nms_thresh = nms_iou
        net.detections_per_img = max_detections


# -- start weights ------------------------------------------------------------------------------
def pretrained_state(architecture: str) -> dict:
    """The state dict of START_WEIGHTS coco (:mod:`..training.start_weights`): torchvision's
    COCO detector of the same architecture (``RetinaNet_ResNet50_FPN_Weights.COCO_V1``,
    ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1``, ``FCOS_ResNet50_FPN_Weights.COCO_V1``); the
    light FCOS has none, so its ResNet-18 backbone starts from ``ResNet18_Weights.
    IMAGENET1K_V1``. Downloaded once into torchvision's cache; UserError offline."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import detection as tvd

    from ..training.start_weights import torchvision_state

    return torchvision_state({"retinanet": tvd.RetinaNet_ResNet50_FPN_Weights.COCO_V1,
                              "fasterrcnn": tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
                              "fcos": tvd.FCOS_ResNet50_FPN_Weights.COCO_V1,
                              "fcos_resnet18": ResNet18_Weights.IMAGENET1K_V1}[architecture])
