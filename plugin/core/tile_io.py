"""Reading and writing beside the forward pass: tiles read by several threads (each with its own
dataset handle) and handed over in order, finished rows written by a thread of its own. Every
hand-over goes through a bounded queue, so memory stays bounded however fast one side is; an
error in a thread is raised in the caller (never a hang), and stopping early (cancel, error)
stops the threads."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

POLL_S = 0.05       # how often a blocked hand-over looks whether the other side failed


def reader_threads(cpus: int) -> int:
    """Reader threads for ``cpus`` cores: half of them, 1 to 4 (GDAL decompression scales with
    threads; beyond 4 the forward pass, not reading, is the limit)."""
    return max(1, min(4, cpus // 2))


class OrderedReader:
    """``read(item, handle)`` of every item of ``items`` in ``workers`` threads; iterating yields
    the results in the order of ``items``, holding at most ``depth`` of them read ahead.

    ``open_handle()`` opens one handle per thread (e.g. ``rasterio.open(path)``: a GDAL dataset
    must not be shared by threads); every handle is closed by :meth:`close`. An exception in
    ``read`` is raised by the iteration at that item, with a note naming the item. Use as a
    context manager (closing stops the threads: items not yet read are dropped)."""

    def __init__(self, items: Iterable, read: Callable[[Any, Any], Any],
                 open_handle: Callable[[], Any] | None = None, workers: int = 2,
                 depth: int = 8) -> None:
        self._items = iter(items)
        self._read, self._open = read, open_handle
        self._depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="tile-reader")
        self._local = threading.local()
        self._handles: list = []
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[Any, Future]] = collections.deque()
        self._stopped = False

    def _handle(self):
        if self._open is None:
            return None
        h = getattr(self._local, "handle", None)
        if h is None:
            h = self._local.handle = self._open()
            with self._lock:
                self._handles.append(h)
        return h

    def _work(self, item):
        if self._stopped:
            return None
        return self._read(item, self._handle())

    def _fill(self) -> None:
        while not self._stopped and len(self._pending) < self._depth:
            try:
                item = next(self._items)
            except StopIteration:
                return
            self._pending.append((item, self._pool.submit(self._work, item)))

    def __iter__(self) -> Iterator:
        self._fill()
        while self._pending:
            item, fut = self._pending.popleft()
            try:
                result = fut.result()
            except BaseException as exc:
                self.close()
                exc.add_note(f"(while reading tile {item!r})")
                raise
            self._fill()
            yield result

    def close(self) -> None:
        """Stop: pending reads are cancelled, running ones finish, every handle is closed."""
        self._stopped = True
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        with self._lock:
            handles, self._handles = self._handles, []
        for h in handles:
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing a read handle; nothing to lose
                pass

    def __enter__(self) -> OrderedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWriter:
    """Calls ``fn(*args)`` for each :meth:`put` in one thread of its own, in order; at most
    ``depth`` calls wait (``put`` blocks beyond that, so a slow disk slows the producer instead of
    filling memory). The first exception in the thread is raised by the next :meth:`put` or by
    :meth:`close`; the calls still queued are then dropped. :meth:`abort` drops what is queued and
    stops."""

    _DONE = object()

    def __init__(self, depth: int = 4) -> None:
        self._q: queue.Queue = queue.Queue(max(1, depth))
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tile-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is self._DONE:
                return
            if self._error is not None or self._abort.is_set():
                continue   # drain: the producer learns of the error at its next put/close
            fn, args = job
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            self._abort.set()
            raise exc

    def put(self, fn: Callable, *args) -> None:
        """Queue ``fn(*args)``; raises the writer's error if it failed."""
        while True:
            self._raise()
            if not self._thread.is_alive():
                raise RuntimeError("The writer thread has stopped.")
            try:
                self._q.put((fn, args), timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _finish(self) -> None:
        while self._thread.is_alive():
            try:
                self._q.put(self._DONE, timeout=POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()

    def close(self) -> None:
        """Wait until every queued call has run; raises the writer's error if one failed."""
        self._finish()
        self._raise()

    def abort(self) -> None:
        """Drop the queued calls (the running one finishes) and stop the thread."""
        self._abort.set()
        self._finish()
        self._error = None
