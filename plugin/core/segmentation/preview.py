"""The pixel segmentation model on the map while it trains (:mod:`..training.preview`): the
window cut into patch-size tiles (the windows the network was trained on), each tile's classes
by argmax of the in-training network with the task's normalisation."""

from __future__ import annotations

import numpy as np

from ..training.preview import NODATA, ClassRaster, tiles

BATCH = 16


def render_preview(network, task, image: np.ndarray, valid: np.ndarray, window,
                   device: str) -> ClassRaster:
    """Classes (h, w) uint8 of ``image`` (bands, h, w) float32 raw pixels, :data:`NODATA`
    where ``valid`` (h, w) is False. ``network``: the averaged network (eval mode) on
    ``device``; ``window`` (:class:`~..training.preview.Window`) is not used: a zoomed-out
    preview is classified as read."""
    import torch

    from .network import Predictor

    predictor = Predictor(network, task.mean, task.std).to(device)
    size = int(task.card_fields()["patch_size"])
    _, h, w = image.shape
    out = np.zeros((max(h, size), max(w, size)), np.uint8)
    parts = tiles(image, size)
    for k in range(0, len(parts), BATCH):
        group = parts[k:k + BATCH]
        x = torch.from_numpy(np.stack([t for _, _, t in group])).to(device)
        classes = predictor(x).argmax(1).to(torch.uint8).cpu().numpy()
        for (r, c, _), cls in zip(group, classes):
            out[r:r + size, c:c + size] = cls
    out = out[:h, :w]
    out[~valid] = NODATA
    return ClassRaster(out)
