"""The instance segmentation model on the map while it trains (:mod:`..training.preview`): the
window cut into patch-size tiles, each object's mask (scored at or above the job's score
threshold, mask probability ≥ 0.5) painted with its class id, the best-scored object on top."""

from __future__ import annotations

import numpy as np

from ..training.preview import NODATA, ClassRaster, object_outputs

BATCH = 2
MASK_THRESHOLD = 0.5   # torchvision's Mask R-CNN masks are probabilities: ≥ 0.5 is the object


def render_preview(network, task, image: np.ndarray, valid: np.ndarray, window,
                   device: str) -> ClassRaster:
    """Classes (h, w) uint8 of ``image`` (bands, h, w) float32 raw pixels (the network
    normalises inside): 0 where no object is found, :data:`NODATA` where ``valid`` is False.
    ``network``: the averaged Mask R-CNN in eval mode on ``device``; ``window`` is not used."""
    size = int(task.job.patch_size)
    _, h, w = image.shape
    out = np.zeros((max(h, size), max(w, size)), np.uint8)
    for r, c, o in object_outputs(network, image, size, BATCH, device):
        keep = (o["scores"] >= float(task.job.score_threshold)).cpu().numpy()
        masks = o["masks"][:, 0].float().cpu().numpy()[keep] >= MASK_THRESHOLD
        labels = o["labels"].cpu().numpy()[keep]
        scores = o["scores"].float().cpu().numpy()[keep]
        tile = out[r:r + size, c:c + size]
        for i in np.argsort(scores):          # ascending: the best painted last
            tile[masks[i]] = labels[i]
    out = out[:h, :w]
    out[~valid] = NODATA
    return ClassRaster(out)
