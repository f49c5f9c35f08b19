"""The detector on the map while it trains (:mod:`..training.preview`): the window cut into
patch-size tiles (the detector's input size), boxes at or above the job's score threshold,
merged across tiles by per-class NMS at the job's NMS IoU."""

from __future__ import annotations

import numpy as np

from ..training.preview import Boxes, object_outputs

BATCH = 4


def render_preview(network, task, image: np.ndarray, valid: np.ndarray, window,
                   device: str) -> Boxes:
    """Boxes in ``image``'s pixels (xyxy, clipped to it) of ``image`` (bands, h, w) float32
    raw pixels (the detector normalises inside); boxes centred on invalid pixels dropped.
    ``network``: the averaged detector in eval mode on ``device``; ``window`` is not used (a
    zoomed-out window is searched as read)."""
    import torch
    from torchvision.ops import batched_nms

    job = task.job
    size = int(job.patch_size)
    _, h, w = image.shape
    found = []
    for r, c, o in object_outputs(network, image, size, BATCH, device):
        keep = o["scores"] >= float(job.score_threshold)
        b = o["boxes"][keep].float().cpu() + torch.tensor([c, r, c, r], dtype=torch.float32)
        found.append((b, o["scores"][keep].float().cpu(), o["labels"][keep].cpu()))
    if not found:
        return Boxes(np.zeros((0, 4)), np.zeros(0, np.int32), np.zeros(0))
    boxes, scores, labels = (torch.cat(v) for v in zip(*found))
    keep = batched_nms(boxes, scores, labels, float(job.nms_iou))
    boxes, scores, labels = boxes[keep].numpy(), scores[keep].numpy(), labels[keep].numpy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2).astype(int).clip(0, w - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2).astype(int).clip(0, h - 1)
    inside = valid[cy, cx] & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Boxes(boxes[inside], labels[inside].astype(np.int32), scores[inside])
