"""A TensorBoard server as a child process bound to 127.0.0.1 (QGIS-free).

:func:`free_port` finds a port, :func:`tensorboard_command` builds the command line for the ML
Python, :func:`wait_until_answering` polls the server over HTTP, and :class:`TensorBoardProcess`
ties them together. The QGIS side (``gui/tensorboard.py``) adds the browser and the menu.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def free_port(preferred: int = 6006, host: str = HOST, tries: int = 100,
              exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """``preferred`` when it is free, else the next free port above it (else any free port)."""
    preferred = int(preferred) if 1024 <= int(preferred) <= 65535 else 6006
    for port in range(preferred, min(preferred + tries, 65536)):
        if port not in exclude and port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tensorboard_command(python: str, logdir: str | Path, port: int,
                        host: str = HOST) -> list[str]:
    """The command starting TensorBoard on ``logdir`` with ``python``, bound to ``host:port``."""
    return [str(python), "-m", "tensorboard.main", "--logdir", str(logdir),
            "--host", host, "--port", str(int(port)), "--reload_interval", "5"]


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether an HTTP server answers at ``url`` (any HTTP status counts as an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - local
            return 100 <= response.status < 600
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_answering(url: str, timeout_s: float = START_TIMEOUT_S,
                         alive: Callable[[], bool] = lambda: True,
                         poll_s: float = 0.25) -> bool:
    """Poll ``url`` until it answers (True), ``alive()`` turns False or time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(url, timeout_s=min(1.0, max(0.1, deadline - time.monotonic()))):
            return True
        if not alive():
            return False
        time.sleep(poll_s)
    return False


class TensorBoardProcess:
    """One TensorBoard server for one log folder.

    ``start()`` launches it (non-blocking); ``wait_ready()`` waits until it answers, raising a
    :class:`UserError` with the reason when it dies or stays silent; ``stop()`` ends it.
    """

    def __init__(self, logdir: str | Path, python: str, port: int = 6006,
                 host: str = HOST) -> None:
        self.logdir = str(Path(logdir))
        self.python = python
        self.host = host
        self.port = int(port)
        self.proc: subprocess.Popen | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=40)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def command(self) -> list[str]:
        return tensorboard_command(self.python, self.logdir, self.port, self.host)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def output_tail(self) -> str:
        return "".join(self._output)

    def start(self) -> TensorBoardProcess:
        if self.running:
            return self
        try:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        except OSError as exc:
            raise UserError(f"Cannot start TensorBoard with {self.python}: {exc}.",
                            "Set the Python environment in Deep Learning ▸ Settings.") from None
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Block until the server answers; returns its URL."""
        if self.proc is None:
            self.start()
        if wait_until_answering(self.url, timeout_s, alive=lambda: self.running):
            return self.url
        died = not self.running
        self.stop()
        tail = self.output_tail.strip().splitlines()[-3:]
        detail = f" Its last output: {' '.join(tail)}" if tail else ""
        if died and "No module named" in self.output_tail:
            raise UserError("TensorBoard is not installed in the machine-learning Python "
                            f"({self.python}).", "Install it there: pip install tensorboard.")
        what = "stopped" if died else f"did not answer within {timeout_s:g} s"
        raise UserError(f"TensorBoard {what} on {self.url}.{detail}",
                        "Check the log folder and the Python environment in Settings, or "
                        "choose another TensorBoard port in Settings.")

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the server (its whole process group)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            self._close(proc)
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (OSError, AttributeError):
            proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (OSError, AttributeError):
                proc.kill()
            proc.wait(timeout_s)
        self._close(proc)

    @staticmethod
    def _close(proc: subprocess.Popen) -> None:
        if proc.stdout is not None:
            try:
                proc.stdout.close()
            except (OSError, ValueError):
                pass

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        try:
            for line in proc.stdout:
                self._output.append(line)
        except (OSError, ValueError):
            pass


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder (resolved, without needing it to exist)."""
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
