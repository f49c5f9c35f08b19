"""Detector model files: the same pickle-free safetensors + JSON card format as segmentation
(see :mod:`..segmentation.modelfile` and docs/model_file.md), with task ``object_detection``.

Card fields of a detector (besides the common ones: classes, bands, mean, std, nodata, patch and
pixel size, CRS, training parameters, metrics, state): ``architecture`` (one of
:data:`ARCHITECTURES`), ``score_threshold`` and ``nms_iou`` (defaults of Detect Objects),
``max_box_px`` (longest training box side in pixels: Detect Objects overlaps tiles by at least
that) and ``num_outputs`` (max class id + 1; 0 is background).
"""

from __future__ import annotations

from pathlib import Path

from .. import modelfile as common

TASK = "object_detection"
ARCHITECTURES = ("retinanet", "fasterrcnn", "fcos", "fcos_resnet18")
AUTO = "auto"   # ARCHITECTURE of a training job: resolved when the job runs (the card never has it)
#: What ``auto`` trains: the light anchor-free FCOS/ResNet-18 on a CPU (RetinaNet/ResNet-50 from
#: random weights learnt nothing in 30 CPU steps of an hour's budget: issue 19), the reference
#: RetinaNet ResNet-50 FPN (Lin et al. 2017) on a GPU.
CPU_ARCHITECTURE, GPU_ARCHITECTURE = "fcos_resnet18", "retinanet"


def resolve_architecture(architecture: str, device: str) -> str:
    """``architecture``, or for ``auto`` the one that fits ``device`` (a torch device string:
    'cpu', 'cuda', 'cuda:1' …)."""
    if architecture != AUTO:
        return architecture
    return CPU_ARCHITECTURE if device == "cpu" else GPU_ARCHITECTURE


def detection_card_fields(*, architecture: str, score_threshold: float, nms_iou: float,
                          max_box_px: float) -> dict:
    """The detector-specific card fields."""
    return {"task": TASK, "architecture": architecture, "encoder": "",
            "score_threshold": float(score_threshold), "nms_iou": float(nms_iou),
            "max_box_px": float(max_box_px)}


def make_card(*, architecture: str, classes: list[dict], bands: int, mean: list[float],
              std: list[float], nodata, patch_size: int, pixel_size, crs, score_threshold: float,
              nms_iou: float, max_box_px: float, training: dict | None = None,
              metrics: dict | None = None, state: dict | None = None,
              dtype: str | None = None) -> dict:
    """A detector's model card. ``classes``: [{id, name, color}] without background."""
    with_bg = [{"id": 0, "name": "background", "color": "#000000"}] + [
        c for c in classes if int(c["id"]) != 0]
    card = common.make_card(architecture=architecture, encoder="", classes=with_bg, bands=bands,
                            mean=mean, std=std, nodata=nodata, patch_size=patch_size,
                            pixel_size=pixel_size, crs=crs, training=training, metrics=metrics,
                            state=state, dtype=dtype, task=TASK)
    card.update(detection_card_fields(architecture=architecture, score_threshold=score_threshold,
                                      nms_iou=nms_iou, max_box_px=max_box_px))
    return card


def read_card(path: str | Path) -> dict:
    """The card of a detector model file; UserError naming both tasks for another model."""
    return common.read_model_card(path, TASK)


object_classes = common.feature_classes   # the classes without background


def network_from_card(card: dict):
    """A detector shaped as ``card`` describes (random weights)."""
    from .network import build_detector

    return build_detector(card["architecture"], int(card["bands"]), int(card["num_outputs"]),
                          int(card["patch_size"]), card["mean"], card["std"],
                          score_threshold=float(card.get("score_threshold", 0.05)),
                          nms_iou=float(card.get("nms_iou", 0.5)))


def load_detector(path: str | Path, card: dict | None = None):
    """(detector in eval mode on the CPU with the file's weights, card). Only tensors and JSON
    are read from the file (safetensors)."""
    card = card or read_card(path)
    network = common.load_built(path, card, network_from_card, "a detector",
                                f"a {card['architecture']} detector")
    return network, card


save_model = common.save_model


def card_problem(card: dict) -> str | None:
    """What is wrong with a detector card's own fields (a phrase) or None: an ``architecture``
    of :data:`ARCHITECTURES`, ``patch_size``, ``score_threshold`` and ``nms_iou`` numbers
    from 0 to 1, ``max_box_px`` ≥ 0 and class 0 the background. The ``card_check`` of this
    family's row (read in QGIS: no torch)."""
    if 0 not in [int(c["id"]) for c in card["classes"]]:
        return "class 0 (background) is missing"
    return (common.choice_problem(card, "architecture", ARCHITECTURES)
            or common.field_problem(card, "patch_size", 32, common.MAX_PATCH, whole=True)
            or common.field_problem(card, "score_threshold", 0.0, 1.0, optional=True)
            or common.field_problem(card, "nms_iou", 0.0, 1.0, optional=True)
            or common.field_problem(card, "max_box_px", 0.0, float(common.MAX_PATCH),
                                    optional=True))


def load_model(path: str | Path, card: dict | None = None):
    """The loader of this family's row in the family table: :func:`load_detector` — the detector
    in eval mode on the CPU (raw pixels (1, bands, T, T) float32 → torchvision boxes, scores and
    labels) and its card."""
    return load_detector(path, card)
