"""Several processes on torch's own distributed engine (``torch.distributed``), for the engine and
Classify Pixels; nothing here is hand-written communication beyond torch's collectives.

A run is distributed when torch's launcher (``torchrun``, or ``dltrain run JOB --processes N``
which calls it) started it: it sets ``WORLD_SIZE`` and ``MASTER_ADDR`` in the environment, for one
process too (``--processes 1`` runs the distributed path, NCCL included, on one GPU). Each process
(a *rank*) then joins the process group: NCCL when it trains on CUDA (one GPU per local rank),
gloo on the CPU. Rank 0 is the *main* rank: it alone writes models, logs, TensorBoard and
progress. Outside such a launch every function here is a no-op for a single process, so the
callers need no second code path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import JobCancelled, UserError


def world_size() -> int:
    """Number of processes of this run (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank, 0..world_size−1."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    """This process's rank on its machine (its GPU index on CUDA)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def active() -> bool:
    """True inside a run torch's launcher started (``WORLD_SIZE`` and ``MASTER_ADDR`` set), even
    one of a single process."""
    return world_size() > 1 or ("WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ)


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes outputs."""
    return rank() == 0


def device_for(device: str) -> str:
    """The device this rank uses: 'cuda:<local rank>' for a CUDA run with several processes on a
    machine, else ``device`` unchanged."""
    if active() and device.startswith("cuda"):
        return f"cuda:{local_rank()}"
    return device


def setup(device: str) -> bool:
    """Join the process group (once) when distributed; True if this run is distributed.

    Backend: NCCL on CUDA, gloo on the CPU. Raises UserError when CUDA ranks outnumber GPUs."""
    if not active():
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if device.startswith("cuda"):
        if local_rank() >= torch.cuda.device_count():
            raise UserError(f"{world_size()} processes on CUDA need one GPU each, but this machine "
                            f"has {torch.cuda.device_count()}.",
                            "Use --processes no larger than the number of GPUs.")
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return True


def teardown() -> None:
    """Leave the process group (end of a distributed job)."""
    if active():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here."""
    if active():
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first, the other ranks after it (e.g. filling a shared cache)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@contextlib.contextmanager
def rank_local_metrics() -> Iterator[None]:
    """torchmetrics metrics made inside the block compute from this rank's states alone (by
    default they gather every rank's states, which would wait for ranks that are not validating:
    rank 0 validates alone)."""
    if not active():
        yield
        return
    import torchmetrics.metric as tm

    saved = tm.jit_distributed_available
    tm.jit_distributed_available = lambda: False
    try:
        yield
    finally:
        tm.jit_distributed_available = saved


def wrap(network, device: str):
    """``network`` in DistributedDataParallel (gradients averaged across ranks by torch) when
    distributed, else unchanged."""
    if not active():
        return network
    from torch.nn.parallel import DistributedDataParallel

    if device.startswith("cuda"):
        return DistributedDataParallel(network, device_ids=[local_rank()])
    return DistributedDataParallel(network)


def unwrap(network):
    """The plain module inside a DistributedDataParallel wrapper (for saving, validation)."""
    return getattr(network, "module", network)


def shard(items: Iterable[Any]) -> Iterator[Any]:
    """This rank's share of ``items`` (every world_size-th, from its rank), cut to the same count
    on every rank (DistributedDataParallel needs the same number of steps everywhere)."""
    if not active():
        yield from items
        return
    items = list(items)
    n, w = len(items) // world_size(), world_size()
    yield from items[rank():n * w:w]


def share_count(n: int) -> int:
    """Steps of one rank when ``n`` are shared among the ranks (at least 1)."""
    return max(1, -(-n // world_size()))


def shard_loader(loader):
    """This rank's share of an epoch's batches. A torch DataLoader is rebuilt on its share of
    the sampler's indices (every rank draws the same seeded indices, each loads only its own);
    any other iterable of batches is cut with :func:`shard`."""
    if not active():
        return loader
    from torch.utils.data import DataLoader

    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        return shard(loader)
    indices = list(loader.sampler)
    share = indices[rank():len(indices) // world_size() * world_size():world_size()]
    kw = {}
    if loader.num_workers:
        kw = {"prefetch_factor": loader.prefetch_factor,
              "persistent_workers": loader.persistent_workers}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=share,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn, **kw)


def rank_folder(folder: str | os.PathLike) -> Path:
    """A private folder of this rank inside ``folder`` (for files every rank makes itself, such
    as label rasters), so that ranks never write the same file."""
    path = Path(folder) / f".rank{rank()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def drop_rank_folder(folder: str | os.PathLike) -> None:
    """Remove this rank's private folder (end of the run)."""
    shutil.rmtree(Path(folder) / f".rank{rank()}", ignore_errors=True)


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (on every rank)."""
    if not active():
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def process_limit(device: str) -> tuple[int, str]:
    """(most processes, what limits them) for a run on ``device`` ('auto', 'cpu', 'cuda',
    'cuda:N'): one process per GPU on CUDA (NCCL needs a GPU each), one per CPU core on the CPU
    (more only share the cores and multiply the memory). UserError for an unknown device."""
    from .environment import resolve_device
    from .training.runtime import available_cpus

    if resolve_device(device).startswith("cuda"):
        import torch

        n = torch.cuda.device_count()
        return n, f"this machine has {n} CUDA GPU(s), one per process"
    n = available_cpus()
    return n, f"this machine has {n} CPU core(s) for this run, one per process"


def _at_least_one(processes: int) -> None:
    if processes < 1:
        raise UserError(f"--processes {processes}: a distributed run needs 1 or more (1: one "
                        "process on the distributed path, e.g. NCCL on one GPU).",
                        "Leave --processes out to run in this process.")


def check_processes(processes: int, device: str) -> None:
    """UserError unless ``processes`` (``--processes``) is 1 or more and within
    :func:`process_limit` of ``device``."""
    _at_least_one(processes)
    most, why = process_limit(device)
    if processes > most:
        raise UserError(f"--processes {processes} is more than this machine can run: {why}.",
                        f"Use --processes {most} or fewer" + (" (or leave it out)." if most < 2
                                                              else "."))


def record_failure(exc: BaseException) -> None:
    """In a rank started by :func:`launch`: write the first line of ``exc`` to the error file
    torch's launcher reads (``TORCHELASTIC_ERROR_FILE``), so that :func:`launch` can say why
    this rank failed. Does nothing outside such a run."""
    import json
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not active():
        return
    text = (getattr(exc, "message", "") or str(exc) or type(exc).__name__).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if not isinstance(exc, UserError):
        line = f"{type(exc).__name__}: {line}"
    with contextlib.suppress(OSError):
        Path(path).write_text(json.dumps({"message": line, "timestamp": int(time.time())}))


def launch(args: list[str], processes: int) -> int:
    """Run ``python -m plugin.cli <args>`` in ``processes`` processes on this machine (1: one
    process on the distributed path) through torch's launcher (``torch.distributed.run``, the
    module behind ``torchrun``, here in this process); 0 when every rank succeeded. For
    several machines call torchrun directly (README).

    Raises UserError naming the first rank that failed and the first line of its error (or the
    signal that ended it) instead of torch's per-rank failure table; JobCancelled when the run
    was stopped by a signal (Ctrl+C)."""
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    _at_least_one(processes)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    parsed = torchrun.parse_args(["--standalone", f"--nproc-per-node={processes}", "-m",
                                  __package__.rsplit(".", 1)[0] + ".cli", *args])
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)   # the launcher's own log and failure table: summed up below
    try:
        torchrun.run(parsed)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        why = failure.message
        if failure.exitcode < 0:
            why = (f"it was ended by signal {-failure.exitcode} ({failure.signal_name()}; a "
                   "SIGKILL is often the system running out of memory)")
        elif not Path(failure.error_file).is_file():   # the rank wrote no error (record_failure)
            why = f"exit code {failure.exitcode} (its output above says why)"
        raise UserError(f"Process {rank} of {processes} failed: {why}",
                        "Fix that problem and run again; if the processes were killed, run "
                        "fewer (--processes) or a smaller BATCH_SIZE (memory).") from None
    except SignalException:   # Ctrl+C (or a kill) of this launcher: the ranks were stopped
        raise JobCancelled() from None
    finally:
        logging.disable(disabled)
    return 0
