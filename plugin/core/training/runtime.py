"""Device-side helpers of the training engine: device, CPU threads, data-loader workers, autocast,
learning-rate schedule, weights of a model to start from."""

from __future__ import annotations

import contextlib
import math
import os

WARMUP_SHARE = 0.05      # warm-up: 5 % of the steps, at most 100 (Goyal et al. 2017, gradual)
WARMUP_MAX = 100
FINAL_LR_SHARE = 0.05    # the cosine ends at 5 % of the learning rate


def resolve_device(requested: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' → a torch device string (UserError if unavailable)."""
    from ..environment import resolve_device as _resolve

    return _resolve(requested)


def available_cpus() -> int:
    """CPU cores this process may use (affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def num_workers(requested: int, device: str) -> int:
    """Data-loader worker processes: ``requested`` when ≥ 0, else none on ≤ 2 cores (they would
    compete with the training threads), up to 8 beside a GPU, a quarter of the cores on a CPU."""
    if requested >= 0:
        return requested
    cpus = available_cpus()
    if device.startswith("cuda"):
        return max(0, min(8, cpus - 1))
    return 0 if cpus <= 2 else min(2, cpus // 4)


def limit_threads(workers: int) -> int:
    """Set torch's CPU threads so that training threads + data-loader workers never exceed the
    cores (issue 9: two threads on a loaded 2-core machine ran 4× slower per step than one):
    ``OMP_NUM_THREADS`` when set, else the cores minus the workers, minus one more on ≤ 2
    cores (the main process also reads and augments the data there). Returns the count."""
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    cpus = available_cpus()
    threads = int(env) if env.isdigit() and int(env) > 0 else cpus - workers - (cpus <= 2)
    threads = max(1, min(threads, cpus))
    torch.set_num_threads(threads)
    return threads


def autocast(device: str):
    """bf16 autocast on GPUs that have it, fp16 on older ones, nothing on the CPU."""
    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def lr_factor(total_steps: int):
    """step → learning-rate factor: linear warm-up, then cosine decay to FINAL_LR_SHARE."""
    warmup = max(1, min(WARMUP_MAX, int(total_steps * WARMUP_SHARE)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(total_steps - warmup, 1)
        return FINAL_LR_SHARE + (1 - FINAL_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * min(t, 1)))

    return factor


def load_fitting_weights(network, path: str) -> int:
    """Load the tensors of model file ``path`` whose names and shapes fit ``network``; returns
    how many of the network's tensors start fresh (e.g. a classifier head for other classes)."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    own = network.state_dict()
    fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    network.load_state_dict(fitting, strict=False)
    return len(own) - len(fitting)
