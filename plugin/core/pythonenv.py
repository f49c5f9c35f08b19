"""Where the machine-learning Python lives (the worker runs there, never inside QGIS)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: A dedicated environment the Settings page can create and fill with one click.
DEDICATED_ENV = Path.home() / ".local" / "share" / "deep_learning_trainer" / "venv"
_configured: str = ""


def set_configured_python(path: str) -> None:
    """The interpreter chosen in the plugin's settings ('' for automatic)."""
    global _configured
    _configured = path or ""


def candidates() -> list[Path]:
    """Interpreters tried in order when none is configured."""
    repo_venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    out = [repo_venv, DEDICATED_ENV / "bin" / "python"]
    if Path(sys.executable).name.lower().startswith("python"):
        out.append(Path(sys.executable))
    system = shutil.which("python3")
    if system:
        out.append(Path(system))
    return out


def ml_python() -> str:
    """The interpreter that runs jobs: the setting, ``DLTRAINER_PYTHON``, or the first found."""
    for explicit in (_configured, os.environ.get("DLTRAINER_PYTHON", "")):
        if explicit:
            return explicit
    for path in candidates():
        if path.is_file():
            return str(path)
    return "python3"
