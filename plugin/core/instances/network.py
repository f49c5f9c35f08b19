"""Instance segmentation networks: torchvision's Mask R-CNN (He et al. 2017) for any band count.

- ``maskrcnn``: torchvision's reference ``maskrcnn_resnet50_fpn`` layout (ResNet-50, FPN on
  stages 1–4 + max pool, 256 channels), random weights or, with START_WEIGHTS coco,
  torchvision's COCO weights (:func:`pretrained_state`);
- ``maskrcnn_resnet18``: the light variant that learns on a CPU: ResNet-18 FPN with
  :data:`LIGHT_CHANNELS` channels, fewer region proposals and sampled RoIs, and light box and
  mask heads (:func:`_light_heads`).
- Backbones and the no-resize transform come from :mod:`..fpn` (any band count; normalised with
  the card's per-band mean/std inside the network; the pixel size stays the raster's).
- Anchors of 16 to 256 px (one size per FPN level, ratios 0.5/1/2): remote-sensing objects
  (crowns, roofs) are smaller than COCO's, whose anchors start at 32 px.
- Input: a list of raw-pixel float32 (bands, H, W) tensors. Output (eval), per image:
  ``{"boxes": (K, 4) xyxy px, "scores": (K,), "labels": (K,) int64 class ids, "masks":
  (K, 1, H, W) float32 probabilities}``. Class ids are the project's (1..N); 0 is background.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..fpn import no_resize_transform, resnet_fpn

LIGHT_CHANNELS = 128      # FPN width of the light model (256 in the reference one)
LIGHT_REPRESENTATION = 256  # box head features of the light model (1024 in the reference one)
LIGHT_MASK_CHANNELS = 64    # mask head width of the light model (4 × 256 in the reference one)
ANCHOR_SIZES = ((16,), (32,), (64,), (128,), (256,))


def build_mask_rcnn(architecture: str, bands: int, num_classes: int, patch_size: int,
                    mean: list[float], std: list[float], *, score_threshold: float = 0.05,
                    nms_iou: float = 0.5, max_detections: int = 300) -> nn.Module:
    """A fresh Mask R-CNN (random weights) for ``bands``-band rasters and class ids
    ``1 … num_classes − 1``; ``mean``/``std`` (one per band, raw pixel units) are applied
    inside. Raises UserError for an unknown architecture or a normalisation of the wrong
    length."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if architecture not in ("maskrcnn", "maskrcnn_resnet18"):   # .modelfile.ARCHITECTURES
        raise UserError(f"Unknown instance segmentation architecture {architecture!r}.",
                        "Use maskrcnn or maskrcnn_resnet18.")
    if len(mean) != bands or len(std) != bands:
        raise UserError(f"The normalisation has {len(mean)} values for {bands} bands.",
                        "Train the model again.")
    light = architecture == "maskrcnn_resnet18"
    depth, width = ("resnet18", LIGHT_CHANNELS) if light else ("resnet50", 256)
    backbone = resnet_fpn(depth, bands, [1, 2, 3, 4], LastLevelMaxPool(), width)
    anchors = AnchorGenerator(ANCHOR_SIZES, ((0.5, 1.0, 2.0),) * len(ANCHOR_SIZES))
    light_kw = _light_heads(width, num_classes) if light else {}
    net = MaskRCNN(backbone, num_classes=None if light else num_classes,
                   rpn_anchor_generator=anchors,
                   min_size=patch_size, max_size=patch_size, image_mean=list(mean),
                   image_std=list(std), box_score_thresh=score_threshold,
                   box_nms_thresh=nms_iou, box_detections_per_img=max_detections, **light_kw)
    return no_resize_transform(net)


def _light_heads(width: int, num_classes: int) -> dict:
    """Mask R-CNN arguments of the light variant: fewer proposals and sampled RoIs, a box head
    of :data:`LIGHT_REPRESENTATION` features and a mask head of two convolutions of
    :data:`LIGHT_MASK_CHANNELS` (the reference head's four of 256 channels on every RoI cost
    ~0.5 GFLOP each: most of a CPU step)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    return {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
            "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150,
            "box_batch_size_per_image": 64,
            "box_head": TwoMLPHead(width * 7 * 7, LIGHT_REPRESENTATION),
            "box_predictor": FastRCNNPredictor(LIGHT_REPRESENTATION, num_classes),
            "mask_head": MaskRCNNHeads(width, (LIGHT_MASK_CHANNELS,) * 2, 1),
            "mask_predictor": MaskRCNNPredictor(LIGHT_MASK_CHANNELS, LIGHT_MASK_CHANNELS,
                                                num_classes)}


def set_inference(net: nn.Module, score_threshold: float, nms_iou: float,
                  max_detections: int) -> None:
    """Set the Mask R-CNN's post-processing thresholds in place."""
    net.roi_heads.score_thresh = score_threshold
    net.roi_heads.nms_thresh = nms_iou
    net.roi_heads.detections_per_img = max_detections


def pretrained_state(architecture: str) -> dict:
    """The state dict of START_WEIGHTS coco (:mod:`..training.start_weights`): torchvision's
    COCO Mask R-CNN (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, the layout of ``maskrcnn``;
    its box and mask predictors for COCO's 91 classes do not fit ours and start random, its
    RPN fits our smaller anchors: three per location alike); the light variant has none, so its
    ResNet-18 backbone starts from ``ResNet18_Weights.IMAGENET1K_V1``. Downloaded once into
    torchvision's cache; UserError offline."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    from ..training.start_weights import torchvision_state

    return torchvision_state(MaskRCNN_ResNet50_FPN_Weights.COCO_V1 if architecture == "maskrcnn"
                             else ResNet18_Weights.IMAGENET1K_V1)

