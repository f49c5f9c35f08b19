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

    text = message
    if paths:
        folder = Path(paths[0]).parent
        here = [Path(p).name for p in paths if Path(p).parent == folder]
        more = len(paths) - len(here)
        text = (f"{message} Wrote {', '.join(here)} in {folder}"
                + (f" (and {more} more: see View ▸ Panels ▸ Log Messages)" if more else "") + ".")
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


#: Artifacts named first in a finished message (the folder it names and "Open folder" opens
#: is theirs): the models a training wrote, the main output of a classification.
PRIMARY_ARTIFACTS = ("best_model", "last_model", "output", "class_raster", "detections")
#: Artifacts written on the way (label rasters burnt into the log folder, the log folder):
#: logged when announced, left out of the finished message.
INTERMEDIATE_ARTIFACTS = ("label_raster", "log_folder")


def output_paths(result: dict | None, artifacts: list[tuple[str, str]] = ()) -> list[str]:
    """The files a job wrote, the main ones first: its artifact events (models and main outputs
    first, intermediate files left out), else the result's existing output paths."""
    from pathlib import Path

    kept = [(n, p) for n, p in artifacts if p and n not in INTERMEDIATE_ARTIFACTS]
    paths = [p for n, p in sorted(kept, key=lambda item: item[0] not in PRIMARY_ARTIFACTS)]
    if not paths and isinstance(result, dict):
        paths = [v for k, v in result.items() if isinstance(v, str) and v
                 and (k.startswith("output") or k in ("report", "model")) and Path(v).exists()]
    return list(dict.fromkeys(paths))


def show_info(iface, message: str, duration_s: int = 8) -> None:
    log(message, "info")
    if iface is not None:
        iface.messageBar().pushMessage(TAG, message, Qgis.Info, duration_s)
