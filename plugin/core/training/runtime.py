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


LOSS_READ_STEPS = 20     # the training loss is read back from the device every this many steps
MAX_GPU_WORKERS = 16     # loader workers per GPU process at most


def num_workers(requested: int, device: str, cpus: int | None = None,
                processes: int | None = None) -> int:
    """Data-loader worker processes: ``requested`` when ≥ 0; else, beside a GPU, every core of
    this process's share (``cpus`` / ``processes`` on this machine, ``LOCAL_WORLD_SIZE`` under
    torchrun) but one for the training process, at most MAX_GPU_WORKERS (issue 12: 8 workers
    fed 1,567 patches/s, 15 fed 3,186, the GPU wanted 4,185); on a CPU none on ≤ 2 cores (they
    would compete with the training threads), else a quarter of the cores, at most 2."""
    if requested >= 0:
        return requested
    cpus = cpus or available_cpus()
    if device.startswith("cuda"):
        processes = processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        return max(0, min(MAX_GPU_WORKERS, cpus // max(processes, 1) - 1))
    return 0 if cpus <= 2 else min(2, cpus // 4)


def loader_kwargs(requested: int, device: str) -> dict:
    """DataLoader keyword arguments every family's training uses: :func:`num_workers` workers
    (``requested``; -1 automatic), pinned memory beside a GPU, and 4 batches prefetched per
    worker."""
    workers = num_workers(requested, device)
    kw: dict = {"num_workers": workers, "pin_memory": device.startswith("cuda")}
    if workers:
        kw["prefetch_factor"] = 4
    return kw


class DeviceSums:
    """Running sums of 0-d tensors (loss terms) kept on ``device``: adding never waits for the
    GPU; :meth:`read` copies them to the host once (``{name: float}``)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.sums: dict = {}

    def add(self, **values) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = v if k not in self.sums else self.sums[k] + v

    def read(self) -> dict[str, float]:
        if not self.sums:
            return {}
        import torch

        keys = list(self.sums)
        host = torch.stack([self.sums[k] for k in keys]).cpu().tolist()
        return dict(zip(keys, host))


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
