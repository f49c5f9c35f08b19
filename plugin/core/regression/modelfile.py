"""Pixel regression model files: the shared format of :mod:`..modelfile` with task
``pixel_regression`` and the card fields ``architecture``, ``encoder``, ``patch_size``, ``loss``
and ``target``: ``{"name", "unit", "mean", "std"}``, the target's normalisation (the network
learns ``(value − mean) / std``; the predictor gives values in the target's unit). The card's one
class (id 0) is named after the target.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..modelfile import MAX_PATCH, choice_problem, field_problem, read_model_card
from ..smp_networks import SMP_NAMES

TASK = "pixel_regression"
NETWORKS = tuple(SMP_NAMES)   # the architectures a card can name


def read_card(path: str | Path) -> dict:
    """The card of a pixel regression model file; UserError naming both tasks for another model
    (see :func:`..modelfile.read_model_card`)."""
    return read_model_card(path, TASK)


def load_model(path: str | Path, card: dict | None = None):
    """(:class:`.network.ValuePredictor` in eval mode on the CPU, card) for inference: raw pixels
    (N, bands, H, W) float32 → values (N, 1, H, W) float32 in the target's unit. The loader of
    this family's row in the family table."""
    from ..smp_networks import load_smp_network
    from .network import ValuePredictor

    card = card or read_card(path)
    network = load_smp_network(path, card, outputs=1)
    target = card["target"]
    return ValuePredictor(network, card["mean"], card["std"], target["mean"],
                          target["std"]).eval(), card


def target_problem(card: dict) -> str | None:
    """What is wrong with the card's ``target`` (a phrase) or None: an object with a text
    ``name`` and finite numbers ``mean`` and ``std`` > 0."""
    target = card.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("name"), str):
        return f"target {target!r} is not {{name, unit, mean, std}}"
    for key in ("mean", "std"):
        value = target.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or (key == "std" and value <= 0):
            return f"target {key} {value!r} is not a " + (
                "positive number" if key == "std" else "number")
    return None


def card_problem(card: dict) -> str | None:
    """What is wrong with a pixel regression card's own fields (a phrase) or None: an
    ``architecture`` of :data:`NETWORKS`, an ``encoder`` name, a ``patch_size`` and the
    ``target`` normalisation. The ``card_check`` of this family's row (read in QGIS: no
    torch)."""
    return (choice_problem(card, "architecture", NETWORKS)
            or (None if isinstance(card.get("encoder"), str) and card["encoder"]
                else f"encoder {card.get('encoder')!r} is not an encoder name")
            or field_problem(card, "patch_size", 32, MAX_PATCH, whole=True)
            or target_problem(card))
