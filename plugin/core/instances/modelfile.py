"""Instance segmentation model files: the shared pickle-free safetensors + JSON card format
(:mod:`..modelfile`, docs/model_file.md) with task ``instance_segmentation``.

Card fields of the family (besides the common ones: classes, bands, mean, std, nodata, patch and
pixel size, CRS, training parameters, metrics, state): ``architecture`` (one of
:data:`ARCHITECTURES`), ``score_threshold`` and ``nms_iou`` (defaults of Segment Objects),
``mask_threshold`` (mask probability above which a pixel belongs to the object, 0.5 as
torchvision's ``paste_masks_in_image`` users do), ``max_box_px`` (longest training object
side in pixels: Segment Objects overlaps its tiles by at least that) and ``num_outputs``
(max class id + 1; 0 is background).
"""

from __future__ import annotations

from pathlib import Path

from .. import modelfile as common

TASK = "instance_segmentation"
ARCHITECTURES = ("maskrcnn", "maskrcnn_resnet18")


def make_card(*, architecture: str, classes: list[dict], bands: int, mean: list[float],
              std: list[float], nodata, patch_size: int, pixel_size, crs, score_threshold: float,
              nms_iou: float, max_box_px: float, mask_threshold: float = 0.5,
              training: dict | None = None, metrics: dict | None = None,
              state: dict | None = None, dtype: str | None = None) -> dict:
    """An instance segmentation model card. ``classes``: [{id, name, color}] without
    background (added as id 0)."""
    with_bg = [{"id": 0, "name": "background", "color": "#000000"}] + [
        c for c in classes if int(c["id"]) != 0]
    return common.make_card(task=TASK, architecture=architecture, encoder="", classes=with_bg,
                            bands=bands, mean=mean, std=std, nodata=nodata,
                            patch_size=patch_size, pixel_size=pixel_size, crs=crs,
                            training=training, metrics=metrics, state=state, dtype=dtype,
                            score_threshold=float(score_threshold), nms_iou=float(nms_iou),
                            mask_threshold=float(mask_threshold),
                            max_box_px=float(max_box_px))


def read_card(path: str | Path) -> dict:
    """The card of an instance segmentation model file; UserError naming both tasks for a model
    of another family."""
    return common.read_model_card(path, TASK)


object_classes = common.feature_classes   # the classes without background


def network_from_card(card: dict):
    """A Mask R-CNN shaped as ``card`` describes (random weights)."""
    from .network import build_mask_rcnn

    return build_mask_rcnn(card["architecture"], int(card["bands"]), int(card["num_outputs"]),
                           int(card["patch_size"]), card["mean"], card["std"],
                           score_threshold=float(card.get("score_threshold", 0.05)),
                           nms_iou=float(card.get("nms_iou", 0.5)))


def card_problem(card: dict) -> str | None:
    """What is wrong with the family's own card fields (a phrase) or None: an ``architecture``
    of :data:`ARCHITECTURES`, a whole ``patch_size``, ``score_threshold``, ``nms_iou`` and
    ``mask_threshold`` from 0 to 1, ``max_box_px`` ≥ 0 and class 0 the background. The
    ``card_check`` of this family's row (read in QGIS: no torch)."""
    if 0 not in [int(c["id"]) for c in card["classes"]]:
        return "class 0 (background) is missing"
    return (common.choice_problem(card, "architecture", ARCHITECTURES)
            or common.field_problem(card, "patch_size", 32, common.MAX_PATCH, whole=True)
            or common.field_problem(card, "score_threshold", 0.0, 1.0, optional=True)
            or common.field_problem(card, "nms_iou", 0.0, 1.0, optional=True)
            or common.field_problem(card, "mask_threshold", 0.0, 1.0, optional=True)
            or common.field_problem(card, "max_box_px", 0.0, float(common.MAX_PATCH),
                                    optional=True))


def load_model(path: str | Path, card: dict | None = None):
    """The loader of this family's row: (Mask R-CNN in eval mode on the CPU with the file's
    weights — raw pixels, a list of (bands, H, W) float32 → torchvision's boxes, scores, labels
    and masks (K, 1, H, W) probabilities — and the card). Only tensors and JSON are read
    (safetensors). UserError for a card naming a network this plugin cannot build or weights
    that do not fit it."""
    card = card or read_card(path)
    network = common.load_built(path, card, network_from_card, "a Mask R-CNN",
                                f"a {card['architecture']} instance segmentation model")
    return network, card
