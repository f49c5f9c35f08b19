"""Runs a job in a child Python process of the ML environment and streams its events.

QGIS-free: the QgsTask wrapper and the Processing algorithms use it from QGIS, tests use it as is.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import JobCancelled, UserError, WorkerError
from .jobs import Job
from .pythonenv import ml_python

# The plugin package folder as imported (not resolved: a linked deploy names it differently).
PACKAGE_DIR = Path(os.path.abspath(__file__)).parent.parent
PACKAGE_NAME = __name__.rsplit(".", 2)[0]              # 'plugin' or 'deep_learning_trainer'

EventHandler = Callable[[dict], None]


class WorkerRun:
    """One job in one worker process.

    ``start()`` launches it; ``wait()`` pumps its events to ``on_event`` on the calling thread
    until it ends, and returns the job's result (raising :class:`UserError`,
    :class:`JobCancelled` or :class:`WorkerError` otherwise).
    """

    def __init__(self, job: Job, python: str | None = None,
                 on_event: EventHandler | None = None, cancel_grace_s: float = 15.0) -> None:
        self.job = job.with_absolute_paths()   # the worker runs in a temporary folder
        self.python = python or ml_python()
        self.on_event = on_event or (lambda event: None)
        self.cancel_grace_s = cancel_grace_s
        self._events: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=60)
        self._proc: subprocess.Popen | None = None
        self._cancel_requested_at: float | None = None
        self._tmpdir = tempfile.TemporaryDirectory(prefix="dltrainer-job-")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> WorkerRun:
        job_file = Path(self._tmpdir.name) / "job.json"
        self.job.save(job_file)
        env = dict(os.environ)
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent), *extra])
        env["PYTHONUNBUFFERED"] = "1"
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", f"{PACKAGE_NAME}.core.worker", str(job_file)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=self._tmpdir.name, text=True, encoding="utf-8", bufsize=1,
                start_new_session=True)
        except OSError as exc:
            self._tmpdir.cleanup()
            raise UserError(f"Cannot start the machine-learning Python ({self.python}): {exc}.",
                            "Set the Python environment in Deep Learning ▸ Settings.") from None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop at its next safe point (terminated after the grace period)."""
        if self._cancel_requested_at is None:
            self._cancel_requested_at = time.monotonic()
            try:
                assert self._proc is not None and self._proc.stdin is not None
                self._proc.stdin.write("cancel\n")
                self._proc.stdin.flush()
            except (OSError, ValueError, AssertionError):
                pass

    def kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.kill()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, is_cancelled: Callable[[], bool] = lambda: False, poll_s: float = 0.1) -> dict:
        """Pump events until the worker ends; return its result."""
        if self._proc is None:
            self.start()
        final: dict | None = None
        try:
            while True:
                if is_cancelled():
                    self.cancel()
                if (self._cancel_requested_at is not None and self.running
                        and time.monotonic() - self._cancel_requested_at > self.cancel_grace_s):
                    self._proc.terminate()
                    try:
                        self._proc.wait(3)
                    except subprocess.TimeoutExpired:
                        self._proc.kill()
                try:
                    event = self._events.get(timeout=poll_s)
                except queue.Empty:
                    continue
                if event is None:  # stdout closed: the process is ending
                    break
                if event.get("event") in ("result", "error", "cancelled"):
                    final = event
                else:
                    self.on_event(event)
            returncode = self._proc.wait()
        finally:
            if self._proc is not None:
                for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                    try:
                        if pipe:
                            pipe.close()
                    except OSError:
                        pass
            self._tmpdir.cleanup()
        return self._finish(final, returncode)

    # -- internals -----------------------------------------------------------------------------
    def _finish(self, final: dict | None, returncode: int) -> dict:
        if final is None:
            if self._cancel_requested_at is not None:
                raise JobCancelled()
            tail = "".join(self._stderr_tail)
            how = (f"was killed by signal {-returncode}" if returncode < 0
                   else f"exited with code {returncode}")
            raise WorkerError(f"The worker process {how} before finishing the job.", tail)
        if final["event"] == "result":
            return final.get("result") or {}
        if final["event"] == "cancelled":
            err = JobCancelled()
            err.result = final.get("result")  # type: ignore[attr-defined]
            raise err
        error = final.get("error", {})
        if error.get("type") == "UserError":
            raise UserError(error.get("message", "The job failed."), error.get("fix", ""))
        details = error.get("traceback", "") + "".join(self._stderr_tail)
        raise WorkerError(error.get("message", "The job failed."), details)

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "log", "level": "info", "message": line}
            self._events.put(event)
        self._events.put(None)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        try:
            for line in self._proc.stderr:
                self._stderr_tail.append(line)
        except (OSError, ValueError):  # closed once the worker has ended
            pass


def run_in_worker(job: Job, on_event: EventHandler | None = None,
                  is_cancelled: Callable[[], bool] = lambda: False,
                  python: str | None = None) -> dict:
    """Run ``job`` in a worker process and return its result (see :class:`WorkerRun`)."""
    return WorkerRun(job, python=python, on_event=on_event).start().wait(is_cancelled)


def current_python() -> str:
    """The interpreter running this code, when it is a Python (not the QGIS binary)."""
    name = Path(sys.executable).name.lower()
    return sys.executable if name.startswith("python") else ""
