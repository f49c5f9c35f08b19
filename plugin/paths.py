"""Where the plugin's files are, in the repository and in an installed plugin folder."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """``resources/`` beside the package in the repository, or inside it when installed."""
    for candidate in (PACKAGE_DIR.parent / "resources", PACKAGE_DIR / "resources"):
        if candidate.is_dir():
            return candidate
    return PACKAGE_DIR / "resources"


def icon_path(name: str) -> str:
    """Path of ``resources/icons/<name>`` (name with or without ``.svg``)."""
    if "." not in name:
        name += ".svg"
    return str(resources_dir() / "icons" / name)


def requirements_files() -> tuple[Path, Path]:
    """``requirements.txt`` and ``constraints.txt`` shipped with the plugin."""
    for base in (PACKAGE_DIR.parent, PACKAGE_DIR):
        req, con = base / "requirements.txt", base / "constraints.txt"
        if req.is_file():
            return req, con
    return PACKAGE_DIR / "requirements.txt", PACKAGE_DIR / "constraints.txt"
