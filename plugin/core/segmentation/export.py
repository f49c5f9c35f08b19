"""ONNX export of a pixel segmentation model (normalisation + network + softmax in the graph),
with the metadata Deepness and GeoDeep read; the conventions are in :mod:`..modelfile`'s
docstring and docs/model_file.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jobs import JobContext
from ..onnxfile import ONNX_TILES_OVERLAP, dense_export_job, export_dense_onnx, metadata_props
from .modelfile import load_network


def export_onnx(model_path: str | Path, onnx_path: str | Path, opset: int = 17, *,
                input_scale: float = 1.0, tile_size: int | None = None,
                tiles_overlap: int = ONNX_TILES_OVERLAP) -> Path:
    """Export the model (normalisation + network + softmax) to ONNX with the card and the
    Deepness/GeoDeep keys in its metadata (see the module docstring for the conventions).

    ``input_scale``: the graph takes ``pixel / input_scale``; ``tile_size``: fixed square
    input size (None: dynamic height and width)."""

    from .network import Predictor

    if not input_scale > 0:
        raise UserError(f"The input scale {input_scale:g} is not positive.",
                        "Use the value that stands for 1.0 in the data, e.g. 255.")
    network, card = load_network(model_path)
    scale = float(input_scale)
    predictor = Predictor(network, [m / scale for m in card["mean"]],
                          [s / scale for s in card["std"]]).eval()
    return export_dense_onnx(predictor, card, onnx_path,
                             onnx_metadata(card, input_scale=scale, tile_size=tile_size,
                                           tiles_overlap=tiles_overlap),
                             output="probabilities", opset=opset, tile_size=tile_size)


def onnx_class_names(card: dict) -> dict[str, str]:
    """``{"0": name, …}`` for every output channel (consecutive ids; gaps named ``unused_k``)."""
    names = {int(c["id"]): str(c["name"]) for c in card["classes"]}
    n = int(card.get("num_outputs") or max(names) + 1)
    return {str(k): names.get(k, f"unused_{k}") for k in range(n)}


def onnx_metadata(card: dict, *, input_scale: float = 1.0, tile_size: int | None = None,
                  tiles_overlap: int = ONNX_TILES_OVERLAP) -> dict[str, str]:
    """The ONNX ``metadata_props`` for ``card`` (every value JSON text)."""
    bands = int(card["bands"])
    size = int(tile_size or card.get("patch_size") or 256)
    # Deepness computes (x / 255 - mean) / std; our graph normalises itself
    deepness_std = 1.0 if input_scale != 1.0 else 1.0 / 255.0
    props: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": onnx_class_names(card),
        "tile_size": size,      # Deepness reads both spellings (tiles_size is added below)
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
        "standardization_mean": [0.0] * bands,
        "standardization_std": [deepness_std] * bands,
    }
    return metadata_props(props, card, size=size, tiles_overlap=tiles_overlap,
                          input_scale=input_scale, shape=f"(N, {bands}, H, W)",
                          inside="normalisation and softmax inside; output (N, classes, H, W) "
                                 "probabilities, channel k = class id k")


def export_job(job, card: dict, factor: float, ctx: JobContext) -> dict:
    """Run Export Model to ONNX (:class:`..onnx_export.ExportOnnxJob`) for a pixel
    segmentation model whose ``card`` was read and whose input scale ``factor`` was checked
    (the shared steps of :func:`..onnxfile.dense_export_job`); the result holds the metadata
    written."""
    return dense_export_job(job, card, factor, ctx, export_onnx, onnx_metadata)
