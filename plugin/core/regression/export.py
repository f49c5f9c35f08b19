"""ONNX export of a pixel regression model: the pixel families' export (:mod:`..onnxfile`)
with normalisation + network + the target's denormalisation in the graph, one output channel
``values`` (N, 1, H, W) in the target's unit, and the metadata Deepness reads for a
"Regressor" model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jobs import JobContext
from ..onnxfile import ONNX_TILES_OVERLAP, dense_export_job, export_dense_onnx, metadata_props


def export_onnx(model_path: str | Path, onnx_path: str | Path, opset: int = 17, *,
                input_scale: float = 1.0, tile_size: int | None = None,
                tiles_overlap: int = ONNX_TILES_OVERLAP) -> Path:
    """Export the model to ONNX (input ``image`` = pixel / ``input_scale``, output ``values``);
    ``tile_size``: fixed square input size (None: dynamic height and width)."""
    from .modelfile import load_model

    if not input_scale > 0:
        raise UserError(f"The input scale {input_scale:g} is not positive.",
                        "Use the value that stands for 1.0 in the data, e.g. 255.")
    predictor, card = load_model(model_path)
    scale = float(input_scale)
    predictor.mean /= scale
    predictor.std /= scale
    return export_dense_onnx(predictor, card, onnx_path,
                             onnx_metadata(card, input_scale=scale, tile_size=tile_size,
                                           tiles_overlap=tiles_overlap),
                             output="values", opset=opset, tile_size=tile_size)


def onnx_metadata(card: dict, *, input_scale: float = 1.0, tile_size: int | None = None,
                  tiles_overlap: int = ONNX_TILES_OVERLAP) -> dict[str, str]:
    """The ONNX ``metadata_props`` for ``card`` (every value JSON text)."""
    bands = int(card["bands"])
    size = int(tile_size or card.get("patch_size") or 256)
    target = card["target"]
    props: dict[str, Any] = {
        "model_type": "Regressor",
        "class_names": {"0": target["name"]},
        "tile_size": size,
        "output_scaling": 1.0,   # Deepness multiplies the output by it: values come out as is
        "standardization_mean": [0.0] * bands,
        "standardization_std": [1.0 if input_scale != 1.0 else 1.0 / 255.0] * bands,
    }
    unit = f" ({target['unit']})" if target.get("unit") else ""
    return metadata_props(props, card, size=size, tiles_overlap=tiles_overlap,
                          input_scale=input_scale, shape=f"(N, {bands}, H, W)",
                          inside="normalisation inside; output (N, 1, H, W) float32 values of "
                                 f"{target['name']}{unit}")


def export_job(job, card: dict, factor: float, ctx: JobContext) -> dict:
    """Run Export Model to ONNX for a pixel regression model (the shared steps of
    :func:`..onnxfile.dense_export_job`)."""
    return dense_export_job(job, card, factor, ctx, export_onnx, onnx_metadata)
