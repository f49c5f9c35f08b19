"""Grid model and chip classifier model files: the shared format of :mod:`..modelfile` with task
``grid`` or ``chip_classification``.

Card fields of both (besides the common ones): ``architecture`` (one of
:data:`ARCHITECTURES`), ``multi_label``, ``thresholds`` (one per class, tuned on
validation; optional), ``decision_offsets`` (single-label: one log-probability offset per
class added before the argmax, tuned on validation; optional), ``class_balance`` (the
CLASS_BALANCE trained with; optional), ``tta`` (trained with flips and 90° turns: scored on the
mean over the 8, :mod:`.network`; optional, absent: false). A grid model adds ``grid_size``
(px), a chip classifier ``max_side``, ``resize`` (px, 0 = none) and ``box_size`` (px, for
point features). The network has one output per listed class. Loading:
:func:`.network.load_classifier`.
"""

from __future__ import annotations

from ..modelfile import MAX_PATCH, choice_problem, field_problem
from .architectures import ARCHITECTURES


def card_problem(card: dict) -> str | None:
    """What is wrong with a grid model's or chip classifier's own card fields (a phrase) or
    None (see the module docstring). The ``card_check`` of both families' rows (read in QGIS:
    no torch)."""
    import math

    problem = choice_problem(card, "architecture", ARCHITECTURES)
    if problem:
        return problem
    if not isinstance(card.get("multi_label"), bool):
        return f"multi_label {card.get('multi_label')!r} is not true or false"
    n = len(card["classes"])
    th = card.get("thresholds")
    if th is not None and (not isinstance(th, list) or len(th) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and 0 <= v <= 1 for v in th)):
        return f"thresholds {th!r} is not a list of {n} numbers from 0 to 1 (one per class)"
    if not isinstance(card.get("tta", False), bool):
        return f"tta {card.get('tta')!r} is not true or false"
    off = card.get("decision_offsets")
    if off is not None and (not isinstance(off, list) or len(off) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in off)):
        return f"decision_offsets {off!r} is not a list of {n} numbers (one per class)"
    if card.get("task") == "grid":
        return field_problem(card, "grid_size", 1, MAX_PATCH, whole=True)
    return (field_problem(card, "max_side", 1, MAX_PATCH, whole=True)
            or field_problem(card, "resize", 0, MAX_PATCH, whole=True, optional=True)
            or field_problem(card, "box_size", 0.0, float(MAX_PATCH), optional=True))


def load_model(path, card: dict | None = None):
    """The loader of both families' rows in the family table: :func:`.network.load_classifier`
    (raw pixels (N, bands, H, W) float32 → scores (N, classes)) and the card."""
    from .network import load_classifier

    return load_classifier(path, card)
