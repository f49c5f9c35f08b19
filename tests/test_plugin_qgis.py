"""The plugin in QGIS (pytest-qgis's iface stub): menu, toolbar, provider, and a clean unload."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QObject, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDialog, QDockWidget, QToolBar

from plugin import classFactory
from plugin.core.basic_jobs import SelfTestJob
from plugin.core.errors import UserError
from plugin.gui import plugin as plugin_module
from plugin.gui import tools
from plugin.gui.task import pump_until
from plugin.gui.tools import TOOLS, Tool
from plugin.processing.algorithms import ALGORITHM_JOB_KINDS

ROOT = Path(__file__).resolve().parent.parent


def dl_menu(iface):
    for action in iface.mainWindow().menuBar().actions():
        menu = action.menu()
        if menu is not None and not sip.isdeleted(menu) and \
                menu.objectName() == plugin_module.MENU_OBJECT_NAME:
            return menu
    return None


def menu_tree(menu) -> list:
    """Top-level texts; a submenu as {title: [texts]}; separators left out."""
    out = []
    for action in menu.actions():
        if action.isSeparator():
            continue
        if action.menu() is not None:
            out.append({action.text(): [a.text() for a in action.menu().actions()]})
        else:
            out.append(action.text())
    return out


def flush_deletes() -> None:
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


@pytest.fixture
def loaded(qgis_iface):
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    yield plugin
    if plugin.menu is not None:
        plugin.unload()


def test_menu_matches_the_tool_registry(loaded, qgis_iface):
    menu = dl_menu(qgis_iface)
    assert menu is not None and menu.title() == "&Deep Learning"
    tree = menu_tree(menu)
    expected_top = [t.label for t in TOOLS if not t.menu]
    assert [e for e in tree if isinstance(e, str)] == expected_top
    submenus = {k: v for e in tree if isinstance(e, dict) for k, v in e.items()}
    assert submenus == {m: [t.label for t in TOOLS if t.menu == m]
                        for m in {t.menu for t in TOOLS if t.menu}}
    assert "Settings…" in expected_top
    for tool in TOOLS:
        action = loaded.actions[tool.id]
        assert not action.icon().isNull(), f"icon {tool.icon} of {tool.id} not found"


def test_provider_and_algorithms_are_registered(loaded):
    provider = QgsApplication.processingRegistry().providerById("dltrainer")
    assert provider is not None and provider.name() == "Deep Learning Trainer"
    ids = {alg.id() for alg in provider.algorithms()}
    assert {"dltrainer:selftest", "dltrainer:environmentreport"} <= ids
    assert {f"dltrainer:{kind.replace('_', '')}" for kind in ALGORITHM_JOB_KINDS} == ids


def test_submenus_and_toolbar_only_for_registered_tools(qgis_iface, monkeypatch):
    calls = []
    opener = types.ModuleType("plugin.gui._fake_tool")
    opener.open_fake = lambda plugin: calls.append(plugin)

    def broken(plugin):
        raise UserError("The fake tool cannot open.", "Fix the fake.")

    opener.open_broken = broken
    monkeypatch.setitem(sys.modules, "plugin.gui._fake_tool", opener)
    fake = [Tool("fake", "Train", "Fake Trainer", "train.svg", "_fake_tool:open_fake",
                 toolbar=True),
            Tool("broken", "", "Broken", "labeling.svg", "_fake_tool:open_broken")]
    settings_tool = next(t for t in tools.TOOLS if t.id == "settings")
    monkeypatch.setattr(plugin_module, "TOOLS", [*fake, settings_tool])
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        tree = menu_tree(dl_menu(qgis_iface))
        assert tree == [{"Train": ["Fake Trainer"]}, "Broken", "Settings…"]
        assert not any(isinstance(e, dict) and "Classify" in e for e in tree)  # no dead submenu
        assert plugin.toolbar is not None
        assert [a.text() for a in plugin.toolbar.actions()] == ["Fake Trainer"]
        plugin.actions["fake"].trigger()
        assert calls == [plugin]
        plugin.actions["broken"].trigger()  # a UserError goes to the message bar, not a dialog
        errors = qgis_iface.messageBar().get_messages(Qgis.Critical)
        assert any("The fake tool cannot open. Fix the fake." in m for m in errors)
        toolbar = plugin.toolbar
    finally:
        plugin.unload()
    flush_deletes()
    assert sip.isdeleted(toolbar)
    assert dl_menu(qgis_iface) is None


def test_unload_leaves_nothing_behind(qgis_iface):
    before_toolbars = len(qgis_iface.mainWindow().findChildren(QToolBar))
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    actions = list(plugin.actions.values())
    task = plugin.jobs.start(SelfTestJob(steps=5000, delay=0.02), "Long self-test")
    events = []
    task.event.connect(events.append)
    assert pump_until(lambda: bool(events), 30)
    worker = task._run._proc
    plugin.unload()
    assert worker.poll() is not None  # the worker process is gone
    flush_deletes()
    assert dl_menu(qgis_iface) is None
    assert QgsApplication.processingRegistry().providerById("dltrainer") is None
    assert QgsApplication.processingRegistry().algorithmById("dltrainer:selftest") is None
    assert all(sip.isdeleted(a) for a in actions)
    assert len(qgis_iface.mainWindow().findChildren(QToolBar)) == before_toolbars
    assert plugin.jobs.tasks == []
    # loading again after an unload works (plugin reloader)
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    assert dl_menu(qgis_iface) is not None
    plugin.unload()


def test_loading_imports_nothing_heavy():
    code = (
        "import sys, time\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "t = time.perf_counter()\n"
        "from plugin.gui.plugin import DeepLearningTrainerPlugin\n"
        "p = DeepLearningTrainerPlugin(None); p.initProcessing()\n"
        "ms = (time.perf_counter() - t) * 1000\n"
        "heavy = [m for m in ('torch', 'rasterio') if m in sys.modules]\n"
        "print(heavy, len(p.provider.algorithms()), round(ms))\n"
        "QgsApplication.processingRegistry().removeProvider(p.provider)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
                          timeout=120)
    heavy, count, ms = done.stdout.strip().rsplit("\n", 1)[-1].rsplit(" ", 2)
    assert heavy == "[]", done.stdout + done.stderr
    assert int(count) >= 2
    assert int(ms) < 3000, f"loading took {ms} ms"


def test_unload_closes_what_tools_keep_open_even_if_one_fails(qgis_iface):
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    closed = []

    class Manager(QObject):
        def close(self):
            closed.append("manager")

    class Broken:
        def unload(self):
            raise RuntimeError("boom")

    dock = QDockWidget("Labels", qgis_iface.mainWindow())
    dialog = QDialog(qgis_iface.mainWindow())
    dialog.show()
    plugin.windows.update({"broken": Broken(), "dock": dock, "dialog": dialog,
                           "manager": Manager()})
    manager = plugin.windows["manager"]
    plugin.unload()
    flush_deletes()
    assert closed == ["manager"]
    assert sip.isdeleted(dock) and sip.isdeleted(dialog) and sip.isdeleted(manager)
    assert plugin.windows == {} and dl_menu(qgis_iface) is None


def test_settings_entry_opens_the_settings_dialog(loaded):
    seen = []

    def close_dialog():
        dialog = QApplication.activeModalWidget()
        seen.append(dialog.windowTitle() if dialog is not None else None)
        if dialog is not None:
            dialog.reject()

    QTimer.singleShot(300, close_dialog)
    loaded.actions["settings"].trigger()  # modal: returns when the timer closed it
    assert seen == ["Deep Learning Trainer — Settings"]
