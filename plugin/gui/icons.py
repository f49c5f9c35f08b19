"""Icons of the plugin as QIcons (files found by :func:`plugin.paths.icon_path`)."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon

from ..paths import icon_path


def icon(name: str) -> QIcon:
    path = icon_path(name)
    return QIcon(path) if Path(path).is_file() else QIcon()
