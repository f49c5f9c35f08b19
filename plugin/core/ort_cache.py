"""The fixed cost of a CPU run on onnxruntime, cut by two caches beside the ONNX export:

- the model file's content hash (which names its export) is remembered per (path, size,
  modification time), so an unchanged model file is not read through again (0.1–0.2 s for a
  U-Net / ResNet-34);
- the graph onnxruntime optimised (``ORT_ENABLE_ALL``) is saved on the first run and loaded
  without optimising again (session creation 0.6 s → 0.2 s). That graph may hold
  processor-specific kernels (onnxruntime warns so), so its name holds the onnxruntime version
  and this processor's identity; another machine sharing the cache makes its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from .atomic import atomic_write


def content_hash(path: str | Path, index_folder: Path) -> str:
    """SHA-256 (hex) of the file ``path``, remembered in ``index_folder`` per (absolute path,
    size, modification time in ns): a changed file is hashed again."""
    st = os.stat(path)
    key = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = index_folder / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.json"
    try:
        data = json.loads(memo.read_text())
        if data.get("key") == key:
            return data["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        index_folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(memo) as tmp:
            tmp.write_text(json.dumps({"key": key, "sha256": digest}))
    except OSError:   # a read-only cache only costs the hash next time
        pass
    return digest


def _processor_id() -> str:
    """A short identity of this processor (model name and flags) for the optimised graph."""
    text = platform.machine() + platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def optimized_path(onnx_path: str | Path) -> Path:
    """Where onnxruntime's optimised graph of the export ``onnx_path`` is kept."""
    import onnxruntime as ort

    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.ort{ort.__version__}-{_processor_id()}.opt")


def session(onnx_path: str | Path, threads: int, cache: bool = False):
    """An onnxruntime CPU session of ``onnx_path`` with ``threads`` intra-op threads. ``cache``
    (``onnx_path`` is an export in the cache folder): from the saved optimised graph when there
    is one, else optimised now and saved beside it for the next run."""
    import onnxruntime as ort

    def options(level, save: Path | None = None):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = level
        # no busy-waiting between operators: the tile readers and the writer need those cores
        # (a 1024² job on 2 loaded cores: 0.86 of bare onnxruntime spinning, 0.95 without)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if save is not None:
            opts.optimized_model_filepath = str(save)
            opts.log_severity_level = 3   # the processor-specific warning: handled by the name
        return opts

    providers = ["CPUExecutionProvider"]
    full = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not cache:
        return ort.InferenceSession(str(onnx_path), options(full), providers=providers)
    opt = optimized_path(onnx_path)
    if opt.is_file():
        try:
            return ort.InferenceSession(str(opt), options(
                ort.GraphOptimizationLevel.ORT_DISABLE_ALL), providers=providers)
        except Exception:  # noqa: BLE001 - a damaged cache entry: optimise again below
            opt.unlink(missing_ok=True)
    try:
        with atomic_write(opt) as tmp:
            s = ort.InferenceSession(str(onnx_path), options(full, tmp), providers=providers)
        return s
    except Exception:  # noqa: BLE001 - the cache is not writable: the plain session
        return ort.InferenceSession(str(onnx_path), options(full), providers=providers)
