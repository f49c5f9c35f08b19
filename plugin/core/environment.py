"""What the machine-learning environment has: Python, torch, CUDA devices, key libraries."""

from __future__ import annotations

import importlib
import os
import platform
import sys

LIBRARIES = ("numpy", "rasterio", "torch", "torchvision", "segmentation_models_pytorch",
             "torchmetrics", "safetensors", "tensorboard", "onnxruntime")


def library_versions() -> dict[str, str | None]:
    """Version of each library the engines use, or None when it cannot be imported."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except Exception:  # noqa: BLE001 - a broken install is reported, not raised
            out[name] = None
    return out


def cuda_devices() -> list[dict]:
    """CUDA devices torch sees: index, name, memory in GiB (empty without torch or CUDA)."""
    try:
        import torch
    except Exception:  # noqa: BLE001
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": p.name,
                        "memory_gib": round(p.total_memory / 2**30, 1),
                        "capability": f"{p.major}.{p.minor}"})
    return devices


def report() -> dict:
    """A JSON-serialisable description of this environment."""
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "libraries": library_versions(),
        "cuda_devices": cuda_devices(),
    }


def gpu_driver_present() -> bool:
    """False when this is Linux and neither an NVIDIA nor an AMD (ROCm) GPU driver is loaded, so
    torch could not see a GPU; True otherwise (then torch decides)."""
    if not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/kfd")


def resolve_device(requested: str = "auto") -> str:
    """A torch device string for the user's choice: 'auto', 'cpu', 'cuda' or 'cuda:N'."""
    from .errors import UserError

    requested = (requested or "auto").strip().lower()
    if requested == "cpu" or (requested == "auto" and not gpu_driver_present()):
        return "cpu"   # decided without importing torch (seconds and memory on CPU runs)
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"Device {requested} was asked for but no CUDA GPU is available.",
                            "Choose 'auto' or 'cpu' as the device.")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"Device {requested} does not exist "
                            f"({torch.cuda.device_count()} CUDA device(s) found).",
                            "Choose another device in Settings.")
        return f"cuda:{index}"
    raise UserError(f"Unknown device {requested!r}.", "Use auto, cpu or cuda:N.")
