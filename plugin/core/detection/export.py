"""ONNX export of a detector: normalisation, network, box decoding and NMS inside the graph.

Graph. Input ``image``: float32 (1, bands, T, T), T the tile size (the model's patch size unless
given), pixel values divided by ``input_scale`` (255 for 8-bit imagery scaled to 0–1, as GeoDeep
feeds it; 1 for raw values, as Detect Objects reads them). Outputs, for that tile:
``boxes`` float32 (K, 4) xyxy in tile pixels, ``scores`` float32 (K,), ``labels`` int64 (K,)
class ids — torchvision's detector output, after its own score threshold (0.05, so a reader can
apply its own) and per-class NMS at the model's NMS IoU.

Readers:

- **GeoDeep** reads it as ``det_type = "retinanet"`` (its reader stacks boxes, scores and labels
  into rows and applies ``det_conf`` and ``det_iou_thresh``): 3-band models exported with
  ``input_scale`` 255, for 8-bit RGB imagery. GeoDeep takes the class of such rows from an
  argmax over the label column, so every box is reported as the first class: single-class models
  are read correctly, multi-class models lose their class names there.
- **Deepness** cannot read it: its detector reader decodes YOLO-style rows (centre, size,
  objectness, class scores) and has no reader for a torchvision (boxes, scores, labels) output.
- Detect Objects (``onnxruntime``) and any onnxruntime user: same boxes as torch.

Metadata (``metadata_props``, values JSON text): ``model_type`` "Detector", ``det_type``
"retinanet", ``det_conf`` (score threshold), ``det_iou_thresh`` (NMS IoU), ``class_names``
``{"0": first class, …}`` (GeoDeep's 0-based order of the model's classes), ``resolution``
(cm/px), ``tiles_size``, ``tiles_overlap`` (%), ``dltrainer_input_scale``,
``input_convention`` and ``dltrainer_card`` (the full model card).
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write
from ..errors import UserError
from ..jobs import JobContext
from ..onnxfile import finish_onnx, metadata_props


def _wrapper(network, scale: float):
    import torch

    class OnnxDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.scale = scale

        def forward(self, image):
            out = self.network([image[0] * self.scale])[0]
            return out["boxes"], out["scores"], out["labels"]

    return OnnxDetector().eval()


def export_detector_onnx(model_path: str | Path, onnx_path: str | Path, *,
                         input_scale: float = 1.0, tile_size: int | None = None,
                         tiles_overlap: int = 25, opset: int = 17,
                         score_threshold: float = 0.05, nms_iou: float | None = None,
                         max_detections: int = 300) -> Path:
    """Write the detector at ``model_path`` as ONNX (see the module docstring); the graph keeps
    boxes scoring at least ``score_threshold``, at most ``max_detections`` per tile after NMS
    at ``nms_iou`` (default: the card's)."""
    import torch

    from .modelfile import load_detector, object_classes
    from .network import set_inference

    if not input_scale > 0:
        raise UserError(f"The input scale {input_scale:g} is not positive.",
                        "Use the value that stands for 1.0 in the data, e.g. 255.")
    network, card = load_detector(model_path)
    size = int(tile_size or card.get("patch_size") or 512)
    network.transform.min_size, network.transform.max_size = (size,), size
    set_inference(network, float(score_threshold),
                  float(card.get("nms_iou", 0.5) if nms_iou is None else nms_iou),
                  int(max_detections))
    wrapper = _wrapper(network, float(input_scale))
    dummy = torch.rand(1, int(card["bands"]), size, size) * (255.0 / input_scale)
    with atomic_write(onnx_path) as tmp:
        with torch.no_grad():
            torch.onnx.export(wrapper, (dummy,), str(tmp), input_names=["image"],
                              output_names=["boxes", "scores", "labels"], opset_version=opset,
                              dynamic_axes={"boxes": {0: "detections"},
                                            "scores": {0: "detections"},
                                            "labels": {0: "detections"}}, dynamo=False)
        finish_onnx(tmp, onnx_detector_metadata(card, object_classes(card), float(input_scale),
                                               size, tiles_overlap))
    return Path(onnx_path)


def onnx_detector_metadata(card: dict, classes: list[dict], input_scale: float, size: int,
                           tiles_overlap: int) -> dict[str, str]:
    """The ``metadata_props`` of an exported detector (values JSON text)."""
    bands = int(card["bands"])
    props = {
        "model_type": "Detector", "det_type": "retinanet",
        "det_conf": float(card.get("score_threshold", 0.3)),
        "det_iou_thresh": float(card.get("nms_iou", 0.5)),
        "class_names": {str(i): c["name"] for i, c in enumerate(classes)},
    }
    return metadata_props(props, card, size=size, tiles_overlap=tiles_overlap,
                          input_scale=input_scale, shape=f"(1, {bands}, {size}, {size})",
                          inside="normalisation, decoding and NMS inside; outputs boxes (K, 4) "
                                 "xyxy tile pixels, scores (K,), labels (K,) class ids")


def export_job(job, card: dict, factor: float, ctx: JobContext) -> dict:
    """Run Export Model to ONNX (:class:`..onnx_export.ExportOnnxJob`) for a detector whose
    ``card`` was read and whose input scale ``factor`` was checked; the result names the
    readers that can use the file."""
    tile = int(job.tile_size or card.get("patch_size") or 512)
    out = export_detector_onnx(job.model, job.output, input_scale=factor,
                               tile_size=job.tile_size or None, tiles_overlap=job.tiles_overlap)
    return {"OUTPUT": str(out), "input_scale": factor, "task": card["task"], "tile_size": tile,
            "bands": int(card["bands"]), "readers": "onnxruntime; GeoDeep (det_type "
            "retinanet, 3-band 8-bit models); not Deepness"}
