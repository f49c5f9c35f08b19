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


def show_outputs(iface, message: str, paths: list[str], duration_s: int = 20) -> None:
    """``message`` naming the files written, with an "Open folder" button (the folder of the
    first file) in the message bar."""
    from pathlib import Path

    names = ", ".join(Path(p).name for p in paths)
    text = f"{message} Wrote {names} in {Path(paths[0]).parent}." if paths else message
    log(text + ("\n" + "\n".join(paths) if paths else ""), "success")
    if iface is None:
        return
    bar = iface.messageBar()
    if not paths or not hasattr(bar, "pushWidget"):  # (test stand-ins have pushMessage only)
        bar.pushMessage(TAG, text, Qgis.Success, duration_s)
        return
    from qgis.PyQt.QtCore import QUrl
    from qgis.PyQt.QtGui import QDesktopServices
    from qgis.PyQt.QtWidgets import QPushButton

    item = bar.createMessage(TAG, text)
    button = QPushButton("Open folder", item)
    button.setObjectName("open_folder_button")
    folder = str(Path(paths[0]).parent)
    button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(folder)))
    item.layout().addWidget(button)
    bar.pushWidget(item, Qgis.Success, duration_s)


def output_paths(result: dict | None, artifacts: list[tuple[str, str]] = ()) -> list[str]:
    """The files a job wrote: its artifact events, else the result's existing output paths."""
    from pathlib import Path

    paths = [p for _n, p in artifacts if p]
    if not paths and isinstance(result, dict):
        paths = [v for k, v in result.items() if isinstance(v, str) and v
                 and (k.startswith("output") or k in ("report", "model")) and Path(v).exists()]
    return list(dict.fromkeys(paths))


def show_info(iface, message: str, duration_s: int = 8) -> None:
    log(message, "info")
    if iface is not None:
        iface.messageBar().pushMessage(TAG, message, Qgis.Info, duration_s)
