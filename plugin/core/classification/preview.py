"""The grid model and the chip classifier on the map while they train
(:mod:`..training.preview`): the cells of the raster's grid that the window shows (``GRID_SIZE``
px from its top-left corner, as Classify Grid cuts them; for a chip classifier cells of its
chips' side in px, each resized to the network's input size as its chips are), each scored by
the in-training network (a cell cut by the window's edge from the part shown, the rest filled
with the band means, as the raster's edge cells are). A zoomed-out (decimated) window's cells
are resampled to the cell size, so the network sees the cell's ground at its input size."""

from __future__ import annotations

import math

import numpy as np

from ..training.preview import Boxes

BATCH = 16


def render_preview(network, task, image: np.ndarray, valid: np.ndarray, window,
                   device: str) -> Boxes:
    """The cells of ``window`` (:class:`~..training.preview.Window`) as rectangles in
    ``image``'s pixels (``image``: (bands, h, w) float32 raw pixels), each with its top class
    id (0 when its score is under the class's threshold: the tuned ones, else 0.5) and score.
    Cells without valid pixels are left out."""
    import torch

    from ..gridfilter import thresholds_of
    from .network import ClassifierPredictor

    size = int(getattr(task, "side", 0) or task.input_size)   # cell side on the raster, px
    side_in = int(task.input_size)                             # the network's input, px
    predictor = ClassifierPredictor(network, task.mean, task.std, task.multi_label,
                                    task.tta).to(device)   # as Classify Grid scores
    th = thresholds_of({"classes": task.classes,
                        "thresholds": getattr(task, "thresholds", None)}, 0.0)
    ids = np.asarray([int(c["id"]) for c in task.classes], np.int32)
    oh, ow = image.shape[1:]
    sx, sy = window.width / ow, window.height / oh
    fill = torch.tensor(np.asarray(task.mean, np.float32))[:, None, None]
    cells, rects = [], []
    for ri in range(window.row // size, math.ceil((window.row + window.height) / size)):
        for ci in range(window.col // size, math.ceil((window.col + window.width) / size)):
            c0, c1 = max(ci * size, window.col), min((ci + 1) * size, window.col + window.width)
            r0, r1 = max(ri * size, window.row), min((ri + 1) * size, window.row + window.height)
            x0, x1 = round((c0 - window.col) / sx), round((c1 - window.col) / sx)
            y0, y1 = round((r0 - window.row) / sy), round((r1 - window.row) / sy)
            if x1 <= x0 or y1 <= y0 or not valid[y0:y1, x0:x1].any():
                continue
            part = torch.from_numpy(np.ascontiguousarray(image[:, y0:y1, x0:x1]))[None]
            part = torch.nn.functional.interpolate(part, size=(r1 - r0, c1 - c0),
                                                   mode="bilinear", align_corners=False)[0]
            cell = fill.expand(-1, size, size).clone()
            cell[:, r0 - ri * size:r1 - ri * size, c0 - ci * size:c1 - ci * size] = part
            if side_in != size:
                cell = torch.nn.functional.interpolate(cell[None], size=(side_in, side_in),
                                                       mode="bilinear", align_corners=False)[0]
            cells.append(cell)
            rects.append((x0, y0, x1, y1))
    scores = []
    for k in range(0, len(cells), BATCH):
        x = torch.stack(cells[k:k + BATCH]).to(device)
        scores.append(predictor(x).float().cpu().numpy())
    if not scores:
        return Boxes(np.zeros((0, 4)), np.zeros(0, np.int32), np.zeros(0), cells=True)
    s = np.concatenate(scores)
    top = s.argmax(1)
    best = s[np.arange(len(s)), top]
    labels = np.where(best >= th[top], ids[top], 0).astype(np.int32)
    return Boxes(np.asarray(rects, np.float64), labels, best, cells=True)
