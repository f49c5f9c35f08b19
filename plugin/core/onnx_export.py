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

from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .jobs import Job, JobContext, register_job
from .params import spec
from .patchsize import patch_size_problem
from .training.fields import MODEL_FILTER

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
    """Run :class:`ExportOnnxJob`: read the card, check the input scale, and hand over to the
    export of the model's family (the ``exporter`` of its row in the family table)."""
    from .families import export_function
    from .modelfile import read_model_card

    card = read_model_card(job.model)
    export = export_function(card["task"])
    if export is None:
        raise UserError(unexportable(job.model, card["task"]),
                        "Export a model of one of those families.")
    factor = check_input_scale(card, job.input_scale, job.scale)
    ctx.progress("export", 0, 1, "Exporting to ONNX")
    result = export(job, card, factor, ctx)
    ctx.progress("export", 1, 1, "Exported")
    ctx.artifact("onnx", result["OUTPUT"])
    return result


def unexportable(model: str, task: str) -> str:
    """The sentence saying that ``model``'s family has no ONNX export, and which do."""
    from .families import exportable_titles, task_title

    title = task_title(task)
    article = "an" if title[:1].upper() in "AEIOU" else "a"
    return (f"{Path(model).name} is {article} {title} model, which cannot be exported to "
            f"ONNX yet; Export Model to ONNX takes {' and '.join(exportable_titles())} models.")


INPUT_SCALES = ("unit", "raw")


@register_job
@dataclass
class ExportOnnxJob(Job):
    """Export a pixel segmentation or object detection model to ONNX for Deepness, GeoDeep or
    any onnxruntime user: normalisation (and the box decoding of a detector) are inside the
    graph, and the classes, resolution, tile size and the full model card are in its
    metadata."""

    kind = "export_onnx"
    title = "Export Model to ONNX"
    group = "Tools"

    model: str = spec("", "MODEL", "Model", "model_in", file_filter=MODEL_FILTER)
    output: str = spec("", "OUTPUT", "Output ONNX file", "file_out",
                       file_filter="ONNX model (*.onnx)")
    input_scale: str = spec("unit", "INPUT_SCALE", "Input values", "enum",
                            choices=INPUT_SCALES,
                            choice_labels=("Divided by the scale (0–1)", "Raw pixel values"),
                            help="unit: the network takes pixel values divided by SCALE (0–1 "
                                 "for 8-bit imagery, as Deepness and GeoDeep feed it); raw: "
                                 "it takes raw pixel values, like Classify Pixels.")
    scale: float = spec(255.0, "SCALE", "Scale (pixel value of 1.0, for unit)", "float",
                        minimum=1e-6,
                        help="255 for 8-bit imagery; for other data the value that stands for "
                             "1.0 (e.g. 65535, or 10000 for reflectance ×10000).")
    tile_size: int = spec(0, "TILE_SIZE", "Tile size (px, 0 = the model's patch size)", "int",
                          minimum=0, maximum=8192, advanced=True,
                          help="The fixed input size of the exported network (Deepness and "
                               "GeoDeep read the tile size from it); a multiple of 32.")
    tiles_overlap: int = spec(25, "TILES_OVERLAP", "Suggested tile overlap (%)", "int",
                              minimum=0, maximum=75, advanced=True)

    def problems(self) -> list[str]:
        out = super().problems()
        if self.model and not Path(self.model).is_file():
            out.append(f"The model {self.model} does not exist: check MODEL.")
        if not self.output:
            out.append("Output ONNX file (OUTPUT) is required: choose a file name.")
        out += patch_size_problem(self.tile_size, "Tile size", "TILE_SIZE")
        if self.model and Path(self.model).is_file():
            from .families import family
            from .modelfile import read_model_card

            try:   # the card is read from the file header with the standard library only
                card = read_model_card(self.model)
                if not family(card["task"]).exporter:
                    out.append(unexportable(self.model, card["task"]))
                else:
                    check_input_scale(card, self.input_scale, self.scale)
            except UserError as exc:
                out.append(str(exc))
        return out

    def run(self, ctx: JobContext) -> dict:
        return export_onnx_model(self, ctx)
