"""Export ONNX: a model file → an ONNX file that Deepness, GeoDeep and onnxruntime can use alone.

The conventions (input scale, fixed tile size, metadata keys) are described in
:mod:`.modelfile` and ``docs/model_file.md``. This module checks that the chosen input scale
fits the training data and runs the export for :class:`.jobs.ExportOnnxJob`.

Whether the training rasters were 8-bit: the card's ``dtype`` when it has one; otherwise the
band statistics must be possible for values in 0…255 (mean in [0, 255] and, by the
Bhatia–Davis inequality, ``std² ≤ mean · (255 − mean)``), and band means all below 1 look like
data already scaled to 0–1.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..jobs import JobContext

EIGHT_BIT_MAX = 255.0
EIGHT_BIT_TYPES = ("uint8", "int8", "byte")


def eight_bit_problem(card: dict) -> str | None:
    """Why the training data of ``card`` cannot be (or do not look like) 8-bit, or None."""
    dtype = str(card.get("dtype") or "").lower()
    if dtype:
        return None if dtype in EIGHT_BIT_TYPES else f"the training rasters were {dtype}"
    mean = [float(v) for v in card.get("mean") or []]
    std = [float(v) for v in card.get("std") or []]
    for band, (m, s) in enumerate(zip(mean, std), start=1):
        if m < 0 or m > EIGHT_BIT_MAX or s * s > m * (EIGHT_BIT_MAX - m) * 1.01 + 1e-6:
            return (f"band {band} of the training data has mean {m:g} and standard deviation "
                    f"{s:g}, impossible for 8-bit values (0–255)")
    if mean and max(mean) < 1.0:
        return ("the training data have band means below 1 (values seem already scaled "
                "to 0–1)")
    return None


def check_input_scale(card: dict, input_scale: str, scale: float) -> float:
    """The factor the graph's input is multiplied by (1 for ``raw``); UserError when ``unit``
    is asked with the 8-bit factor 255 for a model whose training data were not 8-bit."""
    if input_scale == "raw":
        return 1.0
    if not scale > 0:
        raise UserError(f"The scale (SCALE) is {scale:g}.",
                        "Use the pixel value that stands for 1.0, e.g. 255 for 8-bit imagery.")
    if scale == EIGHT_BIT_MAX:
        problem = eight_bit_problem(card)
        if problem:
            raise UserError(
                f"The network cannot take values scaled to 0–1 by 1/255: {problem}.",
                "Set SCALE to the pixel value that stands for 1.0 in your data (e.g. 65535 "
                "for full-range 16-bit, 10000 for reflectance ×10000, 1 for data already in "
                "0–1), or set INPUT_SCALE to raw.")
    return float(scale)


def export_onnx_model(job, ctx: JobContext) -> dict:
    """Run :class:`.jobs.ExportOnnxJob`: check, export, report the metadata written."""
    import json

    from .modelfile import export_onnx, onnx_metadata, read_card, read_model_card

    card = read_model_card(job.model, None)
    factor = check_input_scale(card, job.input_scale, job.scale)
    if card.get("task") == "object_detection":
        from ..detection.onnx_export import export_detector_onnx

        out = export_detector_onnx(job.model, job.output, input_scale=factor,
                                   tile_size=job.tile_size or None,
                                   tiles_overlap=job.tiles_overlap)
        ctx.artifact("onnx", str(out))
        return {"OUTPUT": str(out), "input_scale": factor, "task": "object_detection",
                "tile_size": int(job.tile_size or card.get("patch_size") or 512),
                "bands": int(card["bands"]), "readers": "onnxruntime; GeoDeep (det_type "
                "retinanet, 3-band 8-bit models); not Deepness"}
    if card.get("task") != "pixel_segmentation":
        read_card(job.model)   # the UserError naming both tasks
    tile = int(job.tile_size or card.get("patch_size") or 256)
    if tile % 32:
        raise UserError(f"The tile size {tile} is not a multiple of 32.",
                        "Set TILE_SIZE to a multiple of 32 (0 = the model's patch size).")
    if card.get("dtype") is None and job.input_scale == "unit" and factor == EIGHT_BIT_MAX:
        ctx.log("The model card does not record the training data type; its band statistics "
                "fit 8-bit imagery, so pixel/255 inputs are assumed.", "warning")
    if int(card["bands"]) != 3:
        ctx.log(f"The model takes {card['bands']} bands: Deepness maps them from the layer's "
                "bands; GeoDeep feeds 3-band RGB only.", "warning")
    ctx.progress("export", 0, 1, "Exporting to ONNX")
    out = export_onnx(job.model, job.output, input_scale=factor, tile_size=tile,
                      tiles_overlap=job.tiles_overlap)
    ctx.progress("export", 1, 1, "Exported")
    ctx.artifact("onnx", str(out))
    props = onnx_metadata(card, input_scale=factor, tile_size=tile,
                          tiles_overlap=job.tiles_overlap)
    shown = {k: json.loads(v) for k, v in props.items() if k != "dltrainer_card"}
    ctx.log(f"Wrote {Path(out).name}: input (N, {card['bands']}, {tile}, {tile}) = pixel / "
            f"{factor:g}; metadata {', '.join(sorted(props))}.")
    return {"OUTPUT": str(out), "input_scale": factor, "tile_size": tile,
            "bands": int(card["bands"]), "metadata": shown}
