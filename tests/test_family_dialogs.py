"""Every model family's dialogs behave alike (issue 17): a matrix over the family table."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from qgis.PyQt.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit

from plugin.core.families import FAMILIES
from plugin.core.labeling.project import LabelingProject

TRAIN_TOOLS = [pytest.param(fam.train_tool, id=fam.task) for fam in FAMILIES if fam.train_tool]


def open_tool(tool, plugin, *args):
    """What the Deep Learning menu does for ``tool``: its opener with the plugin."""
    module, _, function = tool.opener.partition(":")
    return getattr(importlib.import_module(f"plugin.gui.{module}"), function)(plugin, *args)


@pytest.fixture
def plugin(qgis_app):
    from plugin.gui.job_dialog_support import set_known_devices
    from plugin.gui.task import JobManager

    set_known_devices([])   # no device probe in a worker
    return SimpleNamespace(iface=None, jobs=JobManager(), windows={}, labeling_project=None)


def typed_fields(dialog) -> list[QLineEdit]:
    """The text fields a user types into (not the editors inside spin boxes or combos)."""
    return [e for e in dialog.findChildren(QLineEdit) if e.isEnabled() and not e.isReadOnly()
            and not isinstance(e.parent(), (QAbstractSpinBox, QComboBox))]


@pytest.mark.parametrize("tool", TRAIN_TOOLS)
def test_typing_paths_key_by_key_never_raises_nor_names_outputs_after_a_prefix(
        plugin, tool, tmp_path, monkeypatch):
    """Typing ``/tmp/…`` one key at a time into every field of a train dialog: no Python error
    at any key (it was ``PosixPath('/') has an empty name``) and no output named after a
    half-typed path (the detector's were ``/t_detector…``). Leaving the project field with a
    project that exists names the models after it."""
    from qgis.PyQt.QtTest import QTest

    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc[1]))
    dialog = open_tool(tool, plugin)
    fields = typed_fields(dialog)
    assert len(fields) >= 3
    for edit in fields:
        edit.clear()
    typed = str(tmp_path / "typed" / "labels.gpkg")
    for edit in fields:
        QTest.keyClicks(edit, typed)
        assert edit.text() == typed
        assert errors == [], (tool.kind, edit.objectName(), errors)
    job = dialog.job()
    for name, value in vars(job).items():
        if isinstance(value, str) and value.startswith("/"):
            # the typed path (a model name may get its .dltmodel ending), never a prefix of it
            assert value.startswith(typed.removesuffix(".gpkg")), (name, value)
    # a project that exists, typed and left: the best model is named after it
    project = LabelingProject.create(tmp_path / "roofs.gpkg", "EPSG:32631")
    source = project_field(dialog, job)
    for edit in fields:
        edit.clear()
    QTest.keyClicks(source, str(project.path))
    assert dialog.job().output_model == ""
    source.editingFinished.emit()
    best = Path(dialog.job().output_model)
    assert best.parent == tmp_path and best.name.startswith("roofs_"), best
    assert best.name.endswith(".dltmodel.safetensors")
    assert errors == []
    dialog.close()


def project_field(dialog, job) -> QLineEdit:
    """The line edit holding the job's project (or chips input)."""
    field = "project" if hasattr(job, "project") else "input"
    for edit in typed_fields(dialog):
        edit.setText("marker")
        found = getattr(dialog.job(), field) == "marker"
        edit.clear()
        if found:
            return edit
    raise AssertionError(f"no field sets {field}")
