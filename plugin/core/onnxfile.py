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
