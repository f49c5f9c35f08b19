"""Detection networks: torchvision's RetinaNet, Faster R-CNN and FCOS, for any band count.

- Backbones (:mod:`..fpn`): ResNet-50 FPN (torchvision's reference configuration: P3–P7 for
  RetinaNet/FCOS, P2–P5 + pool for Faster R-CNN) or a light ResNet-18 FPN with 128 channels
  (FCOS: anchor-free, it learns from random weights in far fewer steps than RetinaNet, so it
  trains on a CPU). Weights start random (``weights=None``); batch norm is trainable
  (``nn.BatchNorm2d``), not torchvision's frozen default, because frozen statistics only make
  sense for pretrained weights.
- Any band count: the first convolution is rebuilt with ``bands`` input channels.
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
START_RANDOM, START_COCO = "random", "coco"


def _coco_weights(architecture: str):
    """(torchvision weights enum, key prefix in the detector) for START_WEIGHTS coco: the COCO
    detector of the same architecture; the light FCOS has none, so its ResNet-18 backbone starts
    from torchvision's ImageNet weights."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import detection as tvd

    return {"retinanet": (tvd.RetinaNet_ResNet50_FPN_Weights.COCO_V1, ""),
            "fasterrcnn": (tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1, ""),
            "fcos": (tvd.FCOS_ResNet50_FPN_Weights.COCO_V1, ""),
            "fcos_resnet18": (ResNet18_Weights.IMAGENET1K_V1, "backbone.body.")}[architecture]


def start_state(architecture: str, start: str) -> tuple[dict, str]:
    """(state dict, key prefix) of START_WEIGHTS ``start``: "coco" (torchvision's download,
    cached in its folder, ``TORCH_HOME``) or the path of a local ``.pth``/``.pt`` (a state
    dict, optionally under "state_dict" or "model") or ``.safetensors`` file.

    Raises UserError when the download fails (offline) or the file cannot be read."""
    import torch

    if start == START_COCO:
        weights, prefix = _coco_weights(architecture)
        try:
            return weights.get_state_dict(progress=False, check_hash=False), prefix
        except (OSError, RuntimeError) as exc:      # URLError is an OSError
            raise UserError(f"Could not download torchvision's {weights} weights: {exc}.",
                            "Connect to the internet once (torchvision keeps them in its "
                            "cache), or use START_WEIGHTS random or a local weights file.") from exc
    from pathlib import Path

    path = Path(start)
    if not path.is_file():
        raise UserError(f"START_WEIGHTS {start!r} is neither random, coco nor a file.",
                        "Use random, coco or the path of a .pth or .safetensors file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:   # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"Could not read the start weights {path}: {exc}.",
                        "Give a state dict saved with torch.save or safetensors.") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict.",
                        "Give a state dict saved with torch.save or safetensors.")
    return state, ""


def apply_start_state(net: nn.Module, state: dict, prefix: str = "") -> tuple[int, int]:
    """Load the tensors of ``state`` that fit ``net`` (same name after a ``module.`` prefix is
    dropped, or under ``backbone.body.`` for a plain ResNet, and same shape: the class head and,
    for other band counts, the first convolution stay random). Returns (tensors loaded,
    backbone tensors of ``net``). UserError when less than half the backbone fits."""
    own = net.state_dict()
    taken = {}
    for key, value in state.items():
        key = prefix + (key[len("module."):] if key.startswith("module.") else key)
        for name in (key, "backbone.body." + key):
            if name in own and tuple(own[name].shape) == tuple(value.shape):
                taken[name] = value
                break
    net.load_state_dict(taken, strict=False)
    backbone = [k for k in own if k.startswith("backbone.body.")
                and not k.endswith("num_batches_tracked")]
    fitted = sum(k in taken for k in backbone)
    if fitted < len(backbone) / 2:
        raise UserError(f"The start weights fit only {fitted} of the {len(backbone)} backbone "
                        "tensors of this architecture.",
                        "Give weights of the same architecture (or of its ResNet backbone).")
    return len(taken), len(backbone)
