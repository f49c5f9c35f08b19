"""What every family's ONNX export shares: the resolution in cm/px and writing the metadata
(``metadata_props``, every value JSON text) and the declared output shape into the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .modelfile import json_default, plugin_version

ONNX_TILES_OVERLAP = 25      # percent, the default overlap written for ONNX consumers


def resolution_cm(card: dict) -> float | None:
    """The training pixel size in cm/px (CRS units converted to metres; degrees at the
    equator), or None when the card has none."""
    px = card.get("pixel_size") or [None]
    if not px[0]:
        return None
    metres = 1.0
    crs = card.get("crs")
    if crs:
        try:
            from rasterio.crs import CRS

            parsed = CRS.from_user_input(crs)
            if parsed.is_geographic:
                metres = 111_320.0
            else:
                metres = float(parsed.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - an unreadable CRS keeps map units as metres
            metres = 1.0
    return round(float(px[0]) * metres * 100.0, 6)


def finish_onnx(path: Path, props: dict[str, str], out_dims: list | None = None) -> None:
    """Write ``props`` as the ONNX file's ``metadata_props`` and this plugin as its producer;
    with ``out_dims`` (ints for fixed sizes, names for dynamic ones) declare the first output's
    shape too (the exporter loses it through a decoder's upsampling; Deepness checks that height
    equals width)."""
    import onnx

    model = onnx.load(str(path))
    if out_dims is not None:
        dims = model.graph.output[0].type.tensor_type.shape.dim
        del dims[:]
        for value in out_dims:
            dim = dims.add()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "Deep Learning Trainer"
    model.producer_version = plugin_version()
    onnx.save(model, str(path))


def metadata_props(props: dict[str, Any], card: dict, *, size: int, tiles_overlap: int,
                   input_scale: float, shape: str, inside: str) -> dict[str, str]:
    """``props`` (the family's own keys) with the keys every export writes, as ONNX
    ``metadata_props``: every value JSON text (Deepness ``json.loads`` each one).

    Added: ``tiles_size`` (``size`` px), ``tiles_overlap`` (%), ``dltrainer_input_scale``,
    ``input_convention`` (a sentence: the input ``shape``, e.g. "(N, 3, H, W)", is pixel values
    / ``input_scale`` in the training band order, then ``inside``: what the graph does and
    gives), ``resolution`` (cm/px, when known) and ``dltrainer_card`` (the full model card)."""
    props = {**props, "tiles_size": int(size), "tiles_overlap": int(tiles_overlap),
             "dltrainer_input_scale": float(input_scale),
             "input_convention": (f"float32 {shape} = pixel values / {input_scale:g} in the "
                                  f"training band order; {inside}")}
    res = resolution_cm(card)
    if res is not None:
        props["resolution"] = res
    out = {key: json.dumps(value) for key, value in props.items()}
    out["dltrainer_card"] = json.dumps(card, default=json_default)
    return out


# -- the exports of the pixel families (one output map per pixel) ------------------------------
def export_dense_onnx(predictor, card: dict, onnx_path: str | Path, props: dict[str, str], *,
                      output: str, opset: int = 17, tile_size: int | None = None) -> Path:
    """Export ``predictor`` (a torch module: raw pixels (N, bands, H, W) float32 → (N,
    ``card["num_outputs"]``, H, W)) to ``onnx_path`` atomically, input ``image`` and output
    ``output`` ("probabilities", "values"), with ``props`` as its metadata (:func:`finish_onnx`).
    ``tile_size``: fixed square input size (None: dynamic height and width, traced at the
    card's patch size)."""
    import torch

    from .atomic import atomic_write

    size = int(tile_size or card.get("patch_size") or 256)
    dummy = torch.zeros(1, int(card["bands"]), size, size)
    if tile_size:
        axes = {"image": {0: "batch"}, output: {0: "batch"}}
    else:
        axes = {"image": {0: "batch", 2: "height", 3: "width"},
                output: {0: "batch", 2: "height", 3: "width"}}
    with atomic_write(onnx_path) as tmp:
        with torch.no_grad():
            torch.onnx.export(predictor.eval(), (dummy,), str(tmp), input_names=["image"],
                              output_names=[output], opset_version=opset,
                              dynamic_axes=axes, dynamo=False)
        out_dims = ["batch", int(card["num_outputs"])] + (
            [size, size] if tile_size else ["height", "width"])
        finish_onnx(tmp, props, out_dims)
    return Path(onnx_path)


def dense_export_job(job, card: dict, factor: float, ctx, export, metadata) -> dict:
    """Export Model to ONNX (:class:`.onnx_export.ExportOnnxJob` ``job``) for a pixel family's
    model whose ``card`` was read and whose input scale ``factor`` was checked: the tile size
    (TILE_SIZE, 0 = the model's patch size) must be a multiple of 32; warnings for a card
    without its data type and for other than 3 bands. ``export(model, output, input_scale=,
    tile_size=, tiles_overlap=)`` writes the file, ``metadata(card, input_scale=, tile_size=,
    tiles_overlap=)`` gives its ``metadata_props``. The result holds the metadata written."""
    from .errors import UserError
    from .onnx_export import EIGHT_BIT_MAX

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
    out = export(job.model, job.output, input_scale=factor, tile_size=tile,
                 tiles_overlap=job.tiles_overlap)
    props = metadata(card, input_scale=factor, tile_size=tile, tiles_overlap=job.tiles_overlap)
    shown = {k: json.loads(v) for k, v in props.items() if k != "dltrainer_card"}
    ctx.log(f"Wrote {Path(out).name}: input (N, {card['bands']}, {tile}, {tile}) = pixel / "
            f"{factor:g}; metadata {', '.join(sorted(props))}.")
    return {"OUTPUT": str(out), "input_scale": factor, "tile_size": tile,
            "bands": int(card["bands"]), "metadata": shown}
