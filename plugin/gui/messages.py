"""User-facing messages: the message bar for outcomes, the QGIS log for details."""

from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

TAG = "Deep Learning Trainer"
_LEVELS = {"info": Qgis.Info, "warning": Qgis.Warning, "error": Qgis.Critical,
           "success": Qgis.Success}


def log(message: str, level: str = "info") -> None:
    """Write to View ▸ Panels ▸ Log Messages, tab "Deep Learning Trainer"."""
    QgsMessageLog.logMessage(message, TAG, _LEVELS.get(level, Qgis.Info))


def show_error(iface, message: str, fix: str = "") -> None:
    """A one-line cause and its fix in the message bar (and the log)."""
    text = f"{message} {fix}".strip()
    log(text, "error")
    if iface is not None:
        iface.messageBar().pushMessage(TAG, text, Qgis.Critical, 0)


def show_success(iface, message: str, duration_s: int = 8) -> None:
    log(message, "success")
    if iface is not None:
        iface.messageBar().pushMessage(TAG, message, Qgis.Success, duration_s)


def show_info(iface, message: str, duration_s: int = 8) -> None:
    log(message, "info")
    if iface is not None:
        iface.messageBar().pushMessage(TAG, message, Qgis.Info, duration_s)
