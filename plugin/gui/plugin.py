"""The plugin object QGIS loads: the "Deep Learning" menu, the toolbar and the Processing provider.

Menu entries come from :data:`.tools.TOOLS`; a tool's module is imported only when clicked.
"""

from __future__ import annotations

import traceback

from qgis.core import QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QMenu, QToolBar

from ..core.errors import UserError
from . import messages, settings
from .icons import icon
from .task import JobManager
from .tools import TOOLS, Tool, call_opener

MENU_TITLE = "&Deep Learning"
MENU_OBJECT_NAME = "DeepLearningTrainerMenu"
TOOLBAR_TITLE = "Deep Learning Trainer"
TOOLBAR_OBJECT_NAME = "DeepLearningTrainerToolbar"


class DeepLearningTrainerPlugin:
    """What ``classFactory`` returns. ``plugin.jobs`` runs jobs in the background."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.jobs = JobManager(iface)
        self.menu: QMenu | None = None
        self.submenus: dict[str, QMenu] = {}
        self.toolbar: QToolBar | None = None
        self.actions: dict[str, QAction] = {}
        self.provider = None
        #: What tools keep open (dialogs, docks, managers). On unload each gets ``unload()`` or
        #: ``close()`` (whichever it has); docks leave the main window; QObjects are deleted.
        self.windows: dict[str, object] = {}

    # -- QGIS hooks ----------------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name (qgis_process calls only this)
        settings.apply()
        if self.provider is None:
            from ..processing.provider import DeepLearningTrainerProvider

            self.provider = DeepLearningTrainerProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS's name
        self.initProcessing()
        main = self.iface.mainWindow()
        self.menu = QMenu(MENU_TITLE, main)
        self.menu.setObjectName(MENU_OBJECT_NAME)
        tools = sorted(TOOLS, key=lambda t: t.section)  # stable: registry order within a section
        if any(t.toolbar for t in tools):
            self.toolbar = self.iface.addToolBar(TOOLBAR_TITLE)
            self.toolbar.setObjectName(TOOLBAR_OBJECT_NAME)
        section = None
        for tool in tools:
            if section is not None and tool.section != section:
                self.menu.addSeparator()
            section = tool.section
            if not tool.menu:
                self.menu.addAction(self._action(tool))
                continue
            sub = self.submenus.get(tool.menu)
            if sub is None:  # a submenu appears where its first tool is, only when it has one
                sub = self.menu.addMenu(icon(tool.icon), tool.menu)
                sub.setObjectName(f"{MENU_OBJECT_NAME}_{tool.menu}")
                self.submenus[tool.menu] = sub
            sub.addAction(self._action(tool))
        self._insert_menu(main)

    def unload(self) -> None:
        """Remove everything this plugin added; stop its jobs and worker processes."""
        self.jobs.cancel_all()
        for key, window in list(self.windows.items()):
            try:
                self._close_window(window)
            except Exception:  # noqa: BLE001 - one tool must not stop the unload
                messages.log(f"Closing {key} on unload failed:\n{traceback.format_exc()}",
                             "warning")
        self.windows.clear()
        if self.toolbar is not None and not sip.isdeleted(self.toolbar):
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
        self.toolbar = None
        if self.menu is not None and not sip.isdeleted(self.menu):
            self.menu.menuAction().setVisible(False)
            self.iface.mainWindow().menuBar().removeAction(self.menu.menuAction())
            self.menu.deleteLater()
        self.menu = None
        self.submenus.clear()
        for action in self.actions.values():
            if not sip.isdeleted(action):
                action.deleteLater()
        self.actions.clear()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- internals -----------------------------------------------------------------------------
    def _close_window(self, window) -> None:
        if window is None or (isinstance(window, sip.simplewrapper) and sip.isdeleted(window)):
            return
        for name in ("unload", "close"):
            method = getattr(window, name, None)
            if callable(method):
                method()
                break
        remove_dock = getattr(self.iface, "removeDockWidget", None)
        if isinstance(window, QDockWidget) and callable(remove_dock):
            remove_dock(window)
        if isinstance(window, QObject):
            window.deleteLater()

    def _action(self, tool: Tool) -> QAction:
        action = QAction(icon(tool.icon), tool.label, self.iface.mainWindow())
        action.setObjectName(f"dltrainer_{tool.id}")
        action.triggered.connect(lambda _checked=False, t=tool: self.open_tool(t))
        self.actions[tool.id] = action
        if tool.toolbar and self.toolbar is not None:
            self.toolbar.addAction(action)
        return action

    def _insert_menu(self, main) -> None:
        bar = main.menuBar()
        right = getattr(self.iface, "firstRightStandardMenu", None)
        before = right() if callable(right) else None
        if before is not None:
            bar.insertMenu(before.menuAction(), self.menu)
        else:
            bar.addMenu(self.menu)

    def open_tool(self, tool: Tool) -> None:
        """Import the tool's opener and call it with this plugin; errors go to the message bar."""
        try:
            call_opener(tool.opener, self)
        except UserError as exc:
            messages.show_error(self.iface, exc.message, exc.fix)
        except Exception as exc:  # noqa: BLE001 - never a traceback dialog for the user
            messages.log(traceback.format_exc(), "warning")
            messages.show_error(self.iface, f"{tool.label.rstrip('…')} could not open: {exc}",
                                "This is a bug; the log (Deep Learning Trainer tab) has details.")
