"""TensorBoard from QGIS: one local server per log folder, opened in the browser.

:class:`TensorBoardManager` starts servers with the ML Python (never blocking the QGIS window:
the wait for the first answer runs in a thread), reuses the one already serving a folder, and
stops them all when the plugin unloads (:func:`stop_all`). The menu entry "TensorBoard…"
(:func:`open_tensorboard`) opens any earlier run's folder.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsSettings
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QFileDialog

from ..core.errors import UserError
from ..core.pythonenv import ml_python
from ..core.tensorboard_process import TensorBoardProcess, free_port, same_folder
from . import messages, settings

WINDOW_KEY = "tensorboard"
_LAST_FOLDER_KEY = "deep_learning_trainer/tensorboard/last_folder"
_shared: TensorBoardManager | None = None


def open_in_browser(url: str) -> bool:
    """Ask the desktop to open ``url``; False when it could not (no browser, no desktop)."""
    return bool(QDesktopServices.openUrl(QUrl(url)))


def url_message(logdir: str, url: str, opened: bool | None) -> str:
    """What the message bar says once TensorBoard answers: the address as a link (clickable,
    and selectable to copy), and a note when no browser could be opened for it."""
    text = (f"TensorBoard for {html.escape(Path(logdir).name)} runs at "
            f"<a href=\"{html.escape(url)}\">{html.escape(url)}</a>")
    if opened is False:
        text += (" — no web browser could be opened: copy this address into a browser on this "
                 "computer.")
    return text


class TensorBoardManager(QObject):
    """The TensorBoard servers of this QGIS session, one per log folder.

    Signals (main thread): ``ready(logdir, url)`` once a server answers, ``failed(logdir,
    message, fix)`` when it cannot start.
    """

    ready = pyqtSignal(str, str)
    failed = pyqtSignal(str, str, str)
    #: ``shown(logdir, url, browser_opened)``: the address was handed to the browser (or not)
    shown = pyqtSignal(str, str, bool)

    def __init__(self, parent: QObject | None = None, iface=None,
                 open_url: Callable[[str], None] | None = None,
                 python: Callable[[], str] = ml_python, port: Callable[[], int] | None = None,
                 timeout_s: float = 60.0) -> None:
        super().__init__(parent)
        self.iface = iface
        self.open_url = open_url or (lambda url: open_in_browser(url))
        self.python = python
        self.port = port or settings.tensorboard_port
        self.timeout_s = timeout_s
        self.servers: dict[str, TensorBoardProcess] = {}
        self.urls: dict[str, str] = {}  # log folder → address, once shown
        self._ready: set[str] = set()
        self._browse_when_ready: set[str] = set()
        self.ready.connect(self._on_ready)
        self.failed.connect(self._on_failed)

    # -- public --------------------------------------------------------------------------------
    def server_for(self, logdir: str | Path) -> TensorBoardProcess | None:
        """The running server for ``logdir`` (or a folder that contains it), if any."""
        for key, server in list(self.servers.items()):
            if not server.running:
                self._drop(key)
                continue
            if same_folder(key, logdir) or _inside(logdir, key):
                return server
        return None

    def open(self, logdir: str | Path, browse: bool = True) -> TensorBoardProcess:
        """Serve ``logdir`` (reusing a running server) and open it in the browser when ready."""
        server = self.server_for(logdir)
        if server is not None:
            key = self._key_of(server)
            if browse:
                if key in self._ready:
                    self._browse(key, server.url)
                else:
                    self._browse_when_ready.add(key)
            return server
        folder = Path(logdir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        key = str(folder.resolve())
        used = {s.port for s in self.servers.values()}
        server = TensorBoardProcess(key, self.python(), free_port(self.port(), exclude=used))
        server.start()
        self.servers[key] = server
        if browse:
            self._browse_when_ready.add(key)
        messages.log(f"TensorBoard starting for {key} on {server.url}")
        threading.Thread(target=self._wait, args=(key, server), daemon=True).start()
        return server

    def is_ready(self, logdir: str | Path) -> bool:
        server = self.server_for(logdir)
        return server is not None and self._key_of(server) in self._ready

    def stop(self, logdir: str | Path) -> None:
        server = self.server_for(logdir)
        if server is not None:
            self._drop(self._key_of(server))

    def stop_all(self) -> None:
        """End every server this manager started."""
        for key in list(self.servers):
            self._drop(key)

    def close(self) -> bool:
        """Called for the windows the plugin keeps when it unloads: stop the servers."""
        self.stop_all()
        return True

    # -- internals -----------------------------------------------------------------------------
    def _key_of(self, server: TensorBoardProcess) -> str:
        return next((k for k, s in self.servers.items() if s is server), server.logdir)

    def _drop(self, key: str) -> None:
        server = self.servers.pop(key, None)
        self._ready.discard(key)
        self._browse_when_ready.discard(key)
        if server is not None:
            server.stop()

    def _wait(self, key: str, server: TensorBoardProcess) -> None:  # thread
        try:
            url = server.wait_ready(self.timeout_s)
        except UserError as exc:
            self.failed.emit(key, exc.message, exc.fix)
            return
        self.ready.emit(key, url)

    def _on_ready(self, key: str, url: str) -> None:
        if key not in self.servers:
            return
        self._ready.add(key)
        messages.log(f"TensorBoard serves {key} on {url}")
        if key in self._browse_when_ready:
            self._browse_when_ready.discard(key)
            self._browse(key, url)

    def _browse(self, key: str, url: str) -> None:
        """Open ``url`` in the browser and show it (clickable, copyable) in the message bar,
        saying so when the browser could not be opened."""
        opened = self.open_url(url)
        self.urls[key] = url
        if self.iface is not None:
            from qgis.core import Qgis

            level = Qgis.Warning if opened is False else Qgis.Info
            self.iface.messageBar().pushMessage(messages.TAG, url_message(key, url, opened),
                                                level, 0 if opened is False else 20)
        messages.log(f"TensorBoard for {key}: {url}"
                     + (" (no browser could be opened)" if opened is False else ""))
        self.shown.emit(key, url, opened is not False)

    def _on_failed(self, key: str, message: str, fix: str) -> None:
        self.servers.pop(key, None)
        self._browse_when_ready.discard(key)
        if self.iface is not None:
            messages.show_error(self.iface, message, fix)
        else:
            messages.log(f"{message} {fix}", "warning")


def _inside(path: str | Path, folder: str | Path) -> bool:
    try:
        Path(path).expanduser().resolve().relative_to(Path(folder).expanduser().resolve())
    except ValueError:
        return False
    return True


def manager(plugin=None) -> TensorBoardManager:
    """The session's manager (kept in ``plugin.windows`` so plugin unload stops its servers)."""
    global _shared
    if _shared is None or sip.isdeleted(_shared):
        _shared = TensorBoardManager(iface=getattr(plugin, "iface", None))
    if plugin is not None:
        if _shared.iface is None:
            _shared.iface = getattr(plugin, "iface", None)
        windows = getattr(plugin, "windows", None)
        if isinstance(windows, dict):
            windows.setdefault(WINDOW_KEY, _shared)
    return _shared


def stop_all() -> None:
    """Stop every TensorBoard server this QGIS session started (plugin unload)."""
    if _shared is not None and not sip.isdeleted(_shared):
        _shared.stop_all()


def remember_log_folder(folder: str | Path) -> None:
    """The folder the TensorBoard picker starts at next time (a training's log folder)."""
    QgsSettings().setValue(_LAST_FOLDER_KEY, str(folder))


def open_tensorboard(plugin) -> None:
    """Menu opener: pick a runs/log folder (starting at the last training's logs, else the
    settings' output folder) and open it."""
    start = (QgsSettings().value(_LAST_FOLDER_KEY, "", type=str) or settings.output_folder()
             or str(Path.home()))
    parent = plugin.iface.mainWindow() if getattr(plugin, "iface", None) else None
    folder = QFileDialog.getExistingDirectory(parent, "TensorBoard: folder of training logs",
                                              start)
    if not folder:
        return
    QgsSettings().setValue(_LAST_FOLDER_KEY, folder)
    manager(plugin).open(folder)
    messages.show_info(getattr(plugin, "iface", None),
                       f"TensorBoard is starting for {folder}; the browser opens and its "
                       "address shows here when it is ready.")
