"""Detect Objects on onnxruntime (CPU): the detector's ONNX export (normalisation, network, box
decoding and per-class NMS inside the graph, :mod:`.onnx_export`) run tile by tile, without
importing torch once the export is cached.

The export is cached beside Classify Pixels' exports (``$XDG_CACHE_HOME/dltrainer/onnx``), keyed
by the model file's content hash and the settings baked into the graph: tile size, score
threshold kept (``min(score, 0.05)``), NMS IoU and maximum detections per tile; onnxruntime's
optimized graph is kept beside it (per onnxruntime version and CPU), so later sessions skip the
graph optimisation. The boxes equal
torch's within float tolerance (tests/test_detection_onnx.py).

Cross-tile merging needs NMS outside the graph: :func:`nms_numpy` is the per-class greedy NMS of
torchvision's ``batched_nms`` (same order and ties: best score first, suppress IoU > threshold)
in numpy float64, used when torch is not loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext

EXPORT_SCORE = 0.05      # the export keeps boxes from this score (as torch's default)


def onnx_detector_cache(model_path: str | Path, tile: int, score: float, nms_iou: float,
                        max_detections: int) -> Path:
    """The cached export of ``model_path`` for these graph settings."""
    from ..inference import onnx_cache_path

    base = onnx_cache_path(model_path)
    return base.with_name(f"{base.stem}_det{tile}_s{score:g}_n{nms_iou:g}_k{max_detections}"
                          ".onnx")


class OrtTileDetector:
    """Boxes of a batch of tiles with onnxruntime: ``(N, bands, T, T)`` float32 raw pixels →
    per tile ``(boxes (K, 4) float32 xyxy px, scores (K,) float32, labels (K,) int64)``; the
    same interface as :class:`.detect.TileDetector`."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, tta: bool, nms_iou: float,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        optimized = optimized_path(onnx_path, ort.__version__)
        if optimized.is_file():     # optimized once on this machine: 0.34 s to load, not 1.0 s
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            source = optimized
        else:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.optimized_model_filepath = str(optimized)
            source = Path(onnx_path)
        self.session = ort.InferenceSession(str(source), opts,
                                            providers=["CPUExecutionProvider"])
        self.tta = tta
        self.nms_iou = nms_iou
        self.size = int(self.session.get_inputs()[0].shape[-1])   # the graph's tile size

    def _run(self, tile: np.ndarray):
        h, w = tile.shape[-2:]
        if (h, w) != (self.size, self.size):    # a strip of a raster narrower than the tile:
            tile = np.pad(tile, ((0, 0), (0, self.size - h), (0, self.size - w)),
                          mode="symmetric")     # mirrored, boxes centred there are dropped
        boxes, scores, labels = self.session.run(
            None, {"image": np.ascontiguousarray(tile[None], np.float32)})
        return boxes.astype(np.float32), scores.astype(np.float32), labels.astype(np.int64)

    def __call__(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for tile in batch:
            b, s, lab = self._run(tile)
            if self.tta:
                h, w = tile.shape[-2:]
                b1, s1, l1 = self._run(tile[..., ::-1])
                b2, s2, l2 = self._run(tile[..., ::-1, :])
                b1 = np.stack([w - b1[:, 2], b1[:, 1], w - b1[:, 0], b1[:, 3]], 1)
                b2 = np.stack([b2[:, 0], h - b2[:, 3], b2[:, 2], h - b2[:, 1]], 1)
                b, s, lab = (np.concatenate(v) for v in ((b, b1, b2), (s, s1, s2),
                                                         (lab, l1, l2)))
                keep = nms_numpy(b.astype(np.float64), s, lab, self.nms_iou)
                b, s, lab = b[keep], s[keep], lab[keep]
            out.append((b.reshape(-1, 4), s, lab))
        return out


def optimized_path(onnx_path: str | Path, ort_version: str) -> Path:
    """Where onnxruntime's optimized graph of ``onnx_path`` is kept: the graph holds layouts
    for this CPU (onnxruntime's warning), so the name holds the onnxruntime version and a hash
    of the CPU's feature flags."""
    import hashlib
    import platform

    flags = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags += next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    tag = hashlib.sha256(flags.encode()).hexdigest()[:10]
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.ort{ort_version}-{tag}.opt")


def ort_tile_detector(job, card: dict, tile: int, score: float, nms_iou: float, device: str,
                      ctx: JobContext | None = None):
    """An :class:`OrtTileDetector` for ``job`` (a DetectObjectsJob) when its ENGINE and device
    allow it (auto: on the CPU when onnxruntime is installed), else None (use torch).
    UserError when onnxruntime is asked for but cannot run."""
    choice = getattr(job, "engine", "auto")
    if choice == "onnxruntime" and device != "cpu":
        raise UserError("The onnxruntime engine runs on the CPU only.",
                        "Set DEVICE to cpu or ENGINE to auto/torch.")
    if device != "cpu" or choice == "torch":
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if choice == "onnxruntime":
            raise UserError("onnxruntime is not installed.",
                            "Install it in the ML environment or set ENGINE to auto.") from None
        return None
    keep_from = min(float(score), EXPORT_SCORE)
    path = onnx_detector_cache(job.model, tile, keep_from, nms_iou, int(job.max_detections))
    if path.is_file():
        path.touch()
    else:
        from ..inference import prune_cache
        from .export import export_detector_onnx

        if ctx:
            ctx.log("Preparing the detector for fast CPU inference (once per model and "
                    "setting).")
        path.parent.mkdir(parents=True, exist_ok=True)
        export_detector_onnx(job.model, path, tile_size=tile, score_threshold=keep_from,
                             nms_iou=nms_iou, max_detections=int(job.max_detections))
        prune_cache(path.parent)
        for opt in path.parent.glob("*_det*.opt"):     # optimized graphs of pruned exports
            if not opt.with_name(opt.name.split(".ort")[0] + ".onnx").is_file():
                opt.unlink(missing_ok=True)
    from ..training.runtime import available_cpus

    return OrtTileDetector(path, bool(job.tta), nms_iou, available_cpus())


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float
              ) -> np.ndarray:
    """Indices kept by per-class greedy NMS, best score first (torchvision's ``batched_nms``
    rule: a box is suppressed by a better one of its class whose IoU with it exceeds ``iou``).
    ``boxes`` (K, 4) xyxy, any unit."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = np.asarray(boxes, np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(len(b), bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        c = np.flatnonzero(alive & (labels == labels[i]))
        ix = np.clip(np.minimum(b[c, 2], b[i, 2]) - np.maximum(b[c, 0], b[i, 0]), 0, None)
        iy = np.clip(np.minimum(b[c, 3], b[i, 3]) - np.maximum(b[c, 1], b[i, 1]), 0, None)
        inter = ix * iy
        over = inter / np.maximum(area[c] + area[i] - inter, 1e-12) > iou
        alive[c[over]] = False
        alive[i] = False
    return np.asarray(keep, np.int64)
