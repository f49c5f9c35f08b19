"""Inference engines shared by every family: torch (CPU or CUDA, bf16 autocast and channels-last
on CUDA) and onnxruntime (CPU), the cache of ONNX exports, and test-time augmentation.

An engine is a callable ``batch (N, bands, H, W) float32 → outputs`` (NumPy). The torch engine
also has ``tensor(batch, tta)`` that keeps the result on its device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import UserError
from .jobs import JobContext


class TorchEngine:
    """Probabilities of a batch (N, bands, H, W float32) with the torch predictor."""

    name = "torch"

    def __init__(self, predictor, device: str) -> None:
        import torch

        self.device = device
        self.cuda = device.startswith("cuda")
        self.predictor = predictor.to(device).eval()
        if self.cuda:
            self.predictor = self.predictor.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """NumPy probabilities (N, C, H, W float32) of ``batch`` (copied back to the host)."""
        return self.tensor(batch).cpu().numpy()

    def tensor(self, batch: np.ndarray, tta: bool | tuple = False):
        """Probabilities (N, C, H, W) float32 of ``batch`` as a tensor on the device; ``tta``:
        the mean over the views :func:`tta_views` gives for it (True: the 8 turns/flips), done
        on the device."""
        import torch

        views = tta_views(tta)
        try:
            with torch.inference_mode():
                x = torch.from_numpy(batch)
                if self.cuda:
                    x = x.pin_memory().to(self.device, non_blocking=True)
                return dihedral_mean(self._forward, x, spatial=True, views=views)
        except torch.OutOfMemoryError:
            raise UserError("The GPU ran out of memory while classifying.",
                            "Use fewer tiles per batch (BATCH_SIZE) or a smaller "
                            "TILE_SIZE.") from None

    def _forward(self, x):
        import torch

        if not self.cuda:
            return self.predictor(x.contiguous()).float()
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=self.dtype):
            return self.predictor(x).float()


class OrtEngine:
    """Probabilities of a batch with onnxruntime on the CPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None,
                 cache: bool = False) -> None:
        """``threads``: intra-op threads (default: the cores this process may use);
        ``cache``: ``onnx_path`` is a cached export (:func:`.ort_cache.session`)."""
        from .ort_cache import session
        from .training.runtime import available_cpus

        self.session = session(onnx_path, threads or available_cpus(), cache)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": np.ascontiguousarray(batch, np.float32)})[0]


def onnx_cache_path(model_path: str | Path) -> Path:
    """Where the ONNX export of ``model_path`` is cached (keyed by the file's content hash)."""
    from .ort_cache import content_hash

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dltrainer"
    return base / "onnx" / f"{content_hash(model_path, base / 'hashes')[:24]}.onnx"


def prune_cache(folder: Path, keep: int = 6) -> None:
    """Keep the ``keep`` most recently used ONNX exports (and their optimised graphs)."""
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        for opt in folder.glob(f"{old.stem}.*.opt"):
            opt.unlink(missing_ok=True)
    for old in files[keep:]:
        try:
            old.unlink()
        except OSError:
            pass


def make_engine(model_path: str | Path, predictor, device: str, choice: str = "auto",
                ctx: JobContext | None = None, *,
                export: Callable[[str | Path, Path], object] | None = None):
    """``choice`` 'auto': onnxruntime on the CPU when installed (faster there), torch
    otherwise; 'torch' or 'onnxruntime' (CPU only) force one. ``predictor`` is the torch
    network or a function returning it: it is only called for the torch engine, so that a CPU
    run on onnxruntime with a cached export never imports torch (about 4 s and 1 GB less).
    ``export(model_path, onnx_path)`` writes the family's ONNX graph (input ``image``, first
    output what the engine returns); without it the torch engine is used."""
    if choice == "onnxruntime" and device != "cpu":
        raise UserError("The onnxruntime engine runs on the CPU only.",
                        "Set DEVICE to cpu or ENGINE to auto/torch.")
    if choice == "onnxruntime" and export is None:
        raise UserError("This model has no onnxruntime engine.", "Set ENGINE to auto or torch.")
    if device == "cpu" and choice in ("auto", "onnxruntime") and export is not None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if choice == "onnxruntime":
                raise UserError("onnxruntime is not installed.",
                                "Install it in the ML environment or set ENGINE to auto."
                                ) from None
        else:
            path = onnx_cache_path(model_path)
            if not path.is_file():
                if ctx:
                    ctx.log("Preparing the model for fast CPU inference (once per model).")
                export(model_path, path)
                prune_cache(path.parent)
            else:
                path.touch()
            return OrtEngine(path, cache=True)
    return TorchEngine(predictor() if callable(predictor) and not hasattr(predictor, "forward")
                       else predictor, device)


#: The views of test-time augmentation: (mirrored left–right first, then quarter turns k
#: counter-clockwise). The 8 symmetries of the square (dihedral group D4) ...
D4_VIEWS = tuple((flip, k) for flip in (False, True) for k in range(4))
#: ... the 4 quarter turns alone ...
TURN_VIEWS = tuple((False, k) for k in range(4))
#: ... and the mirrors alone: as is, left–right, upside down (mirrored and turned twice), both
#: (turned twice).
MIRROR_VIEWS = ((False, 0), (True, 0), (True, 2), (False, 2))


def learnt_views(turns: bool, mirrors: bool) -> tuple:
    """The test-time views a network trained with random quarter turns (``turns``) and/or
    random mirrors (``mirrors``, left–right and upside down) has learnt to answer alike: the
    group those augmentations generate (:data:`D4_VIEWS`, :data:`TURN_VIEWS`,
    :data:`MIRROR_VIEWS`), or the tile as it is alone. Other views would show it images it
    never learnt from (a turned road network, shadows falling the other way)."""
    if turns and mirrors:
        return D4_VIEWS
    if turns:
        return TURN_VIEWS
    if mirrors:
        return MIRROR_VIEWS
    return ((False, 0),)


def tta_views(tta: bool | tuple) -> tuple:
    """``tta`` as views: False → the tile as it is, True → :data:`D4_VIEWS`, views as given."""
    if tta is True:
        return D4_VIEWS
    return tuple(tta) if tta else ((False, 0),)


def dihedral_mean(forward: Callable, x, spatial: bool = False, views: bool | tuple = True):
    """Mean of ``forward`` over the ``views`` (:func:`tta_views`; True: the 8 flips/turns) of
    ``x`` (a torch tensor (N, bands, H, W)): the test-time augmentation of a model trained with
    flips and/or 90° turns. ``spatial``: the outputs (N, C, H, W) move with the image and are
    turned back before the mean (pixel outputs); else they are per sample (N, C), the same
    whatever the view (class scores)."""
    import torch

    views = tta_views(views)
    if len(views) == 1:
        return forward(x)
    total = None
    for flip, k in views:
        xf = x.flip(-1) if flip else x
        y = forward(torch.rot90(xf, k, (-2, -1)) if k else xf)
        if spatial:
            y = torch.rot90(y, -k, (-2, -1)) if k else y
            y = y.flip(-1) if flip else y
        total = y if total is None else total + y
    return total / len(views)


def tta_predict(engine: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                views: bool | tuple = True) -> np.ndarray:
    """Mean outputs (N, C, H, W) of ``engine`` over the ``views`` (:func:`tta_views`; True:
    the 8 rotations/flips) of the (N, bands, H, W) tiles ``batch``."""
    total = None
    views = tta_views(views)
    for flip, k in views:
        x = batch[..., ::-1] if flip else batch
        y = engine(np.ascontiguousarray(np.rot90(x, k, axes=(-2, -1))))
        y = np.rot90(y, -k, axes=(-2, -1))
        if flip:
            y = y[..., ::-1]
        total = y.copy() if total is None else total + y
    return total / len(views)


def inference_context(on_device: bool):
    """torch.inference_mode for the device-side band, nothing otherwise."""
    if not on_device:
        return contextlib.nullcontext()
    import torch

    return torch.inference_mode()
