"""The blending band of Classify Pixels (see :mod:`.classify`): weighted class probabilities of
the tiles summed over a band of ``T`` rows × the raster width, then, for the rows no later tile
touches, divided by the summed weights, turned into classes (argmax) and, when asked, into
probabilities quantised to uint8 (``rint(p · 255)``, 0 outside valid pixels).

Two implementations of the same arithmetic (float32, the same order of operations, so on the CPU
they give identical bytes): :class:`NumpyBand` for NumPy probabilities (onnxruntime, any
callable) and :class:`TorchBand`, which keeps the band on the model's device (a GPU) so that only
uint8 classes (and uint8 probabilities when asked) are copied back to the host. Finished rows come
out as :class:`Rows`, whose arrays are the caller's own (the band moves on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

CLASS_NODATA = 255

# Windows per forward pass chosen from free GPU memory (BATCH_SIZE 0 on CUDA): a U-Net / ResNet-34
# in bf16 inference holds about 0.4 KB of activations per pixel at its peak (decoder at full
# resolution plus the encoder's skip features); 2 KB/px per pixel leaves room for the band,
# cuDNN workspaces and larger encoders.
INFERENCE_BYTES_PER_PIXEL = 2048
FREE_MEMORY_SHARE = 0.5      # of the free memory, for the batch
MAX_AUTO_WINDOWS = 256       # beyond this the pass no longer gets faster, the first one slower
DEFAULT_WINDOWS = 4          # BATCH_SIZE 0 without CUDA


def windows_for_memory(free_bytes: int, window: int, bands: int, classes: int,
                       bytes_per_pixel: int = INFERENCE_BYTES_PER_PIXEL,
                       share: float = FREE_MEMORY_SHARE, cap: int = MAX_AUTO_WINDOWS) -> int:
    """Windows of ``window`` × ``window`` px per forward pass that fit in ``share`` of
    ``free_bytes`` (e.g. ``torch.cuda.mem_get_info()[0]``): each costs ``bytes_per_pixel`` of
    activations plus its float32 input (``bands``) and output (``classes``) and their pinned
    host copies; at least 1, at most ``cap``."""
    per_pixel = bytes_per_pixel + 4 * (bands + classes) * 2
    n = int(free_bytes * share) // (window * window * per_pixel)
    return max(1, min(cap, n))


def auto_windows(device: str, window: int, bands: int, classes: int) -> int:
    """:func:`windows_for_memory` of ``device``'s free memory on CUDA; DEFAULT_WINDOWS
    otherwise."""
    if not device.startswith("cuda"):
        return DEFAULT_WINDOWS
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return windows_for_memory(free, window, bands, classes)


@dataclasses.dataclass
class Rows:
    """Finished raster rows ``r0 … r0 + n``: ``classes`` (n, W) uint8 (CLASS_NODATA where not
    valid), ``valid`` (n, W) bool, ``probs``: (C, n, W) float32 (``probs="float"``), uint8
    (``"uint8"``) or None."""
    r0: int
    classes: np.ndarray
    probs: np.ndarray | None
    valid: np.ndarray


class NumpyBand:
    """The band in NumPy; ``add`` takes (C, th, tw) float32 arrays."""

    def __init__(self, classes: int, height: int, width: int, win2d: np.ndarray,
                 probs: str | None = "float") -> None:
        self.acc = np.zeros((classes, height, width), np.float32)
        self.wsum = np.zeros((height, width), np.float32)
        self.valid = np.zeros((height, width), bool)
        self.win2d, self.probs = win2d, probs

    def background(self, th: int, tw: int) -> np.ndarray:
        """The probabilities of a tile that is not run: class 0 with probability 1."""
        p = np.zeros((self.acc.shape[0], th, tw), np.float32)
        p[0] = 1.0
        return p

    def add(self, p, c0: int, h: int, w: int, valid: np.ndarray) -> None:
        """Add tile probabilities ``p`` (C, th, tw) at band column ``c0`` (its top-left ``h`` ×
        ``w`` px lie in the raster) and its ``valid`` (th, tw) mask."""
        wv = self.win2d[:h, :w]
        self.acc[:, :h, c0:c0 + w] += p[:, :h, :w] * wv
        self.wsum[:h, c0:c0 + w] += wv
        self.valid[:h, c0:c0 + w] |= valid[:h, :w]

    def take(self, r0: int, n: int, off: np.ndarray | None = None) -> Callable[[], Rows]:
        """Finish the first ``n`` rows of the band (``off``: (n, W) bool pixels forced to
        background) and move the band down by ``n`` rows. Returns a function giving their
        :class:`Rows` (for TorchBand it waits for the copy to the host: call it in the writer
        thread)."""
        probs = self.acc[:, :n]
        probs /= np.maximum(self.wsum[:n], 1e-12)
        if off is not None:
            probs[:, off] = 0.0
            probs[0, off] = 1.0
        classes = probs.argmax(0).astype(np.uint8)
        valid = self.valid[:n].copy()
        classes[~valid] = CLASS_NODATA
        out = None
        if self.probs == "uint8":
            out = np.rint(probs * 255).astype(np.uint8)
            out[:, ~valid] = 0
        elif self.probs == "float":
            out = probs.copy()
        self._shift(n)
        rows = Rows(r0, classes, out, valid)
        return lambda: rows

    def _shift(self, n: int) -> None:
        keep = self.acc.shape[1] - n
        if keep > 0:
            self.acc[:, :keep] = self.acc[:, n:n + keep]
            self.wsum[:keep] = self.wsum[n:n + keep]
            self.valid[:keep] = self.valid[n:n + keep]
        self.acc[:, keep:] = 0
        self.wsum[keep:] = 0
        self.valid[keep:] = False


class TorchBand(NumpyBand):
    """The band as torch tensors on ``device``; ``add`` takes (C, th, tw) float32 tensors on
    that device. The valid mask stays on the host (it comes from the reader and is only needed
    there). Finished rows are copied back as uint8 (into pinned memory, asynchronously on CUDA:
    :meth:`take` returns a function that waits for the copy and gives the :class:`Rows`)."""

    def __init__(self, classes: int, height: int, width: int, win2d: np.ndarray,
                 probs: str | None, device: str) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.acc = torch.zeros((classes, height, width), dtype=torch.float32, device=device)
        self.wsum = torch.zeros((height, width), dtype=torch.float32, device=device)
        self.valid = np.zeros((height, width), bool)
        self.win2d = torch.from_numpy(np.ascontiguousarray(win2d)).to(device)
        self.probs = probs

    def background(self, th: int, tw: int):
        import torch

        p = torch.zeros((self.acc.shape[0], th, tw), dtype=torch.float32, device=self.device)
        p[0] = 1.0
        return p

    def add(self, p, c0: int, h: int, w: int, valid: np.ndarray) -> None:
        wv = self.win2d[:h, :w]
        self.acc[:, :h, c0:c0 + w] += p[:, :h, :w] * wv
        self.wsum[:h, c0:c0 + w] += wv
        self.valid[:h, c0:c0 + w] |= valid[:h, :w]

    def take(self, r0: int, n: int, off: np.ndarray | None = None) -> Callable[[], Rows]:
        import torch

        probs = self.acc[:, :n] / self.wsum[:n].clamp_min(1e-12)
        if off is not None:   # torch.where: boolean indexing would wait for the GPU
            off_t = torch.from_numpy(off)
            if self.cuda:   # from pageable memory the copy would wait for the GPU's queue
                off_t = off_t.pin_memory()
            off_t = off_t.to(self.device, non_blocking=True)
            probs = torch.where(off_t[None], self._class0(), probs)
        classes = self._to_host(probs.argmax(0).to(torch.uint8))
        out = None
        if self.probs == "uint8":
            out = self._to_host(torch.round(probs * 255).to(torch.uint8))
        elif self.probs == "float":
            out = self._to_host(probs)
        valid = self.valid[:n].copy()
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        self._shift(n)

        def rows() -> Rows:
            if event is not None:
                event.synchronize()
            cls = classes.numpy()
            cls[~valid] = CLASS_NODATA
            p = out.numpy() if out is not None else None
            if p is not None and self.probs == "uint8":
                p[:, ~valid] = 0
            return Rows(r0, cls, p, valid)

        return rows

    def _class0(self):
        """(C, 1, 1): probability 1 for class 0."""
        p = self.acc.new_zeros((self.acc.shape[0], 1, 1))
        p[0] = 1.0
        return p

    def _to_host(self, t):
        """A host copy of ``t`` (pinned, non-blocking on CUDA: valid once the event is done)."""
        if not self.cuda:
            return t.clone() if t.device.type == "cpu" else t.cpu()
        host = t.new_empty(t.shape, device="cpu", pin_memory=True)
        host.copy_(t, non_blocking=True)
        return host

    def _shift(self, n: int) -> None:
        keep = self.acc.shape[1] - n
        if keep > 0:   # the source and target rows overlap: copy through a clone
            self.acc[:, :keep] = self.acc[:, n:n + keep].clone()
            self.wsum[:keep] = self.wsum[n:n + keep].clone()
            self.valid[:keep] = self.valid[n:n + keep]
        self.acc[:, keep:] = 0
        self.wsum[keep:] = 0
        self.valid[keep:] = False


def window_1d(n: int, smooth: bool) -> np.ndarray:
    if not smooth:
        return np.ones(n, np.float32)
    i = np.arange(n, dtype=np.float64)
    return (np.sin(np.pi * (i + 0.5) / n) ** 2).astype(np.float32)
