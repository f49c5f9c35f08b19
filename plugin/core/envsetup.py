"""Creating the dedicated machine-learning environment (a venv next to the system's QGIS Python).

The Settings dialog shows :func:`setup_commands` to the user and runs them with
:func:`run_commands` in a background task. QGIS-free.
"""

from __future__ import annotations

import queue
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from ..paths import requirements_files
from .errors import JobCancelled, UserError
from .pythonenv import DEDICATED_ENV

#: Installed when no requirements.txt ships with the plugin (numpy stays 1.x for QGIS's GDAL).
PINNED_PACKAGES = (
    "numpy==1.26.4", "affine==2.4.0", "rasterio==1.4.4", "scipy==1.17.1", "torch==2.15.0",
    "torchvision==0.29.2", "segmentation_models_pytorch==0.6.0", "timm==1.0.31",
    "torchmetrics==1.9.0", "safetensors==0.8.0", "tensorboard==2.21.0", "onnx==1.23.2",
    "onnxruntime==1.31.1", "matplotlib==3.11.2", "pycocotools==2.0.11",
)


def base_python() -> str:
    """The system Python QGIS runs on (the new venv sees its packages, e.g. GDAL)."""
    if Path("/usr/bin/python3").is_file():
        return "/usr/bin/python3"
    return shutil.which("python3") or "python3"


def env_python(env_dir: Path = DEDICATED_ENV) -> Path:
    return Path(env_dir) / "bin" / "python"


def find_requirements(plugin_dir: Path | None = None) -> tuple[Path | None, Path | None]:
    """requirements.txt and constraints.txt shipped with the plugin (None when absent)."""
    if plugin_dir is None:
        req, con = requirements_files()
    else:
        req, con = Path(plugin_dir) / "requirements.txt", Path(plugin_dir) / "constraints.txt"
    if not req.is_file():
        return None, None
    return req, (con if con.is_file() else None)


def setup_commands(env_dir: Path = DEDICATED_ENV, plugin_dir: Path | None = None,
                   python: str | None = None) -> list[list[str]]:
    """The commands that create ``env_dir`` and install the machine-learning libraries."""
    py = str(env_python(env_dir))
    commands = [[python or base_python(), "-m", "venv", "--system-site-packages", str(env_dir)],
                [py, "-m", "pip", "install", "--upgrade", "pip"]]
    req, con = find_requirements(plugin_dir)
    install = [py, "-m", "pip", "install", "--progress-bar", "off"]
    if req is not None:
        install += ["-r", str(req)] + (["-c", str(con)] if con is not None else [])
    else:
        install += list(PINNED_PACKAGES)
    commands.append(install)
    return commands


def format_commands(commands: list[list[str]]) -> str:
    """The commands as a user would type them in a terminal, one per line."""
    return "\n".join(shlex.join(c) for c in commands)


def run_commands(commands: list[list[str]], on_output: Callable[[str], None] = lambda s: None,
                 on_progress: Callable[[int, int], None] = lambda done, total: None,
                 is_cancelled: Callable[[], bool] = lambda: False) -> None:
    """Run ``commands`` in order, streaming their output lines.

    Raises :class:`UserError` naming the command that failed, :class:`JobCancelled` when
    ``is_cancelled()`` became true (the running command is terminated).
    """
    total = len(commands)
    for i, command in enumerate(commands):
        on_progress(i, total)
        on_output(f"$ {shlex.join(command)}")
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            raise UserError(f"Cannot run {command[0]}: {exc}.",
                            "Install Python 3 with its venv module (apt install python3-venv)."
                            ) from None
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_pipe_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        tail: list[str] = []
        while True:
            if is_cancelled():
                proc.terminate()
                break
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            tail = (tail + [line])[-5:]
            on_output(line)
        code = proc.wait()
        reader.join(timeout=5)
        if is_cancelled():
            raise JobCancelled()
        if code != 0:
            last = " ".join(t for t in tail if t)[-300:]
            raise UserError(f"This command failed (exit code {code}): {shlex.join(command)}"
                            + (f" — {last}" if last else ""),
                            "Check your internet connection and disk space, or run the commands "
                            "in a terminal to see the full output.")
    on_progress(total, total)


def _pipe_lines(stream, lines: queue.Queue) -> None:
    with stream:
        for line in stream:
            lines.put(line.rstrip())
    lines.put(None)
