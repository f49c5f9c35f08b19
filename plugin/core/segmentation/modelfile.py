"""Pixel segmentation model files: the shared format of :mod:`..modelfile` with task
``pixel_segmentation`` and the card fields ``architecture``, ``encoder`` and ``patch_size``.
"""

from __future__ import annotations

from pathlib import Path

from ..modelfile import MAX_PATCH, choice_problem, field_problem, read_model_card

TASK = "pixel_segmentation"
NETWORKS = ("unetplusplus", "unet", "deeplabv3plus")   # the architectures a card can name


def load_network(path: str | Path, card: dict | None = None):
    """(smp network with the file's weights, card): :func:`..smp_networks.load_smp_network`."""
    from ..smp_networks import load_smp_network

    card = card or read_card(path)
    return load_smp_network(path, card), card


def read_card(path: str | Path) -> dict:
    """The card of a pixel segmentation model file; UserError naming both tasks for another
    model (see :func:`..modelfile.read_model_card`)."""
    return read_model_card(path, TASK)


def load_model(path: str | Path, card: dict | None = None):
    """(:class:`.network.Predictor` in eval mode on the CPU, card) for inference: raw pixels
    (N, bands, H, W) float32 → class probabilities (N, classes, H, W). The loader of this
    family's row in the family table."""
    from .network import Predictor

    network, card = load_network(path, card)
    predictor = Predictor(network, card["mean"], card["std"]).eval()
    return predictor, card


def card_problem(card: dict) -> str | None:
    """What is wrong with a pixel segmentation card's own fields (a phrase) or None: an
    ``architecture`` of :data:`NETWORKS`, an ``encoder`` name and a ``patch_size``. The
    ``card_check`` of this family's row (read in QGIS: no torch)."""
    return (choice_problem(card, "architecture", NETWORKS)
            or (None if isinstance(card.get("encoder"), str) and card["encoder"]
                else f"encoder {card.get('encoder')!r} is not an encoder name")
            or field_problem(card, "patch_size", 32, MAX_PATCH, whole=True))
