"""Every model family's dialogs behave alike (issue 17): a matrix over the family table."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from family_cards import CARD_FIELDS
from qgis.PyQt.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit

from plugin.core.families import FAMILIES
from plugin.core.labeling.project import LabelingProject

TRAIN_TOOLS = [pytest.param(fam.train_tool, id=fam.task) for fam in FAMILIES if fam.train_tool]


def open_tool(tool, plugin, *args):
    """What the Deep Learning menu does for the family ``tool``: the dialog the GUI names for
    its kind (``gui.tools.DIALOGS``), opened with the plugin."""
    from plugin.gui.tools import DIALOGS

    module, _, function = DIALOGS[tool.kind].partition(":")
    return getattr(importlib.import_module(f"plugin.gui.{module}"), function)(plugin, *args)


def test_every_family_tool_has_a_dialog_and_a_menu_entry():
    from plugin.gui.tools import DIALOGS, TOOLS

    kinds = [t.kind for fam in FAMILIES for t in (fam.train_tool, *fam.classify_tools) if t]
    assert sorted(kinds) == sorted(DIALOGS)
    assert {t.id for t in TOOLS} >= set(kinds)


@pytest.fixture
def plugin(qgis_app):
    from plugin.gui.job_dialog_support import set_known_devices
    from plugin.gui.task import JobManager

    set_known_devices([])   # no device probe in a worker
    plugin = SimpleNamespace(iface=None, jobs=JobManager(), windows={}, labeling_project=None)
    yield plugin
    from qgis.core import QgsApplication

    from plugin.gui.task import pump_until

    plugin.jobs.cancel_all()   # live summaries the dialogs started, ended and deleted
    assert pump_until(lambda: QgsApplication.taskManager().count() == 0, 30)


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


def _wheel(widget, steps: int = 1) -> None:
    """Turn the mouse wheel ``steps`` notches up over the middle of ``widget``."""
    from qgis.PyQt.QtCore import QPoint, QPointF, Qt
    from qgis.PyQt.QtGui import QWheelEvent
    from qgis.PyQt.QtWidgets import QApplication

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * steps), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase,
                        False)
    QApplication.sendEvent(widget, event)


@pytest.mark.parametrize("tool", TRAIN_TOOLS)
def test_the_wheel_scrolls_a_train_form_instead_of_changing_the_value_under_it(plugin, tool):
    """Over an unfocused spin box or drop-down the wheel leaves the value alone (it goes to the
    scrolled form); once the field has the focus the wheel changes it as usual."""
    from qgis.PyQt.QtWidgets import QApplication, QScrollArea

    dialog = open_tool(tool, plugin)
    spins = [s for s in dialog.findChildren(QAbstractSpinBox) if s.isEnabled()
             and s.isVisible() and s.value() < s.maximum()]
    combos = [c for c in dialog.findChildren(QComboBox) if c.isEnabled() and c.isVisible()
              and 0 < c.currentIndex() + 1 < c.count()]
    assert spins and combos
    dialog.resize(dialog.width(), 300)   # the forms scroll
    QApplication.processEvents()
    for field in (spins[0], combos[0]):
        area = next((a for a in dialog.findChildren(QScrollArea) if a.isAncestorOf(field)), None)
        scroll = area.verticalScrollBar() if area is not None else None
        if scroll is not None:
            scroll.setValue(scroll.maximum() // 2)
        position = scroll.value() if scroll is not None else None
        before = field.value() if field in spins else field.currentIndex()
        _wheel(field)
        after = field.value() if field in spins else field.currentIndex()
        assert after == before, (tool.kind, type(field).__name__)
        if scroll is not None and position:
            assert scroll.value() < position          # the form scrolled up instead
    spin = spins[0]
    spin.setFocus()
    dialog.activateWindow()
    if spin.hasFocus():   # (focus needs an active window; offscreen platforms may refuse it)
        before = spin.value()
        _wheel(spin)
        assert spin.value() > before
    dialog.close()


@pytest.mark.parametrize("family", [pytest.param(f, id=f.task) for f in FAMILIES
                                    if f.train_tool and f.classify_tools])
def test_training_window_offers_the_familys_own_classify_tool(plugin, family, tmp_path):
    """After training a grid model the window offers Classify Grid (it offered Classify Pixels
    to every family but detection), and opens it with the best model."""
    from plugin.core.jobs import job_class
    from plugin.gui.training_window import TrainingWindow

    window = TrainingWindow(None, job_class(family.train_kind)(), plugin=plugin)
    tool = family.classify_tools[0]
    assert window.classify_button.text() == tool.label
    model = tmp_path / "best.dltmodel.safetensors"
    model.write_bytes(b"x")
    window._succeeded({"output_model": str(model), "epochs_run": 1, "best_epoch": 1})
    assert not window.classify_button.isHidden()
    dialog = window.open_classify()
    assert dialog is not None and dialog.isVisible()
    assert str(model) in [e.text() for e in dialog.findChildren(QLineEdit)] or \
        str(model) in json_of(dialog)
    dialog.close()
    window.close()


def json_of(dialog) -> str:
    """The dialog's job as JSON (a model chosen in a picker rather than a line edit)."""
    import json

    return json.dumps(dialog.job().to_dict())


ALL_TOOLS = TRAIN_TOOLS + [pytest.param(t, id=t.kind) for fam in FAMILIES
                           for t in fam.classify_tools]


def _button_texts(dialog) -> list[str]:
    return [b.text() for b in dialog.buttons.buttons()]


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_every_dialog_has_the_same_buttons_and_explained_fields(plugin, tool, tmp_path):
    """One look for all families: Train (or the tool's verb), Save job…, Load job…, Cancel;
    every field has a tooltip; a saved job loads back unchanged."""
    from qgis.PyQt.QtWidgets import QAbstractButton

    dialog = open_tool(tool, plugin)
    verb = "Train" if tool.kind.startswith("train_") else tool.label.split()[0]
    assert sorted(_button_texts(dialog)) == sorted([verb, "Save job…", "Load job…", "Cancel"])
    fields = [w for w in dialog.findChildren((QLineEdit, QAbstractSpinBox, QComboBox))
              if not isinstance(w.parent(), (QAbstractSpinBox, QComboBox))
              and not w.parent().inherits("QTableWidget") and w.isVisibleTo(dialog)]
    bare = [(type(w).__name__, w.objectName()) for w in fields
            if not w.toolTip() and not any(isinstance(p, QAbstractButton) for p in [w])]
    assert bare == [], bare
    saved = tmp_path / "job.json"
    dialog.save_job(saved)
    again = open_tool(tool, plugin)
    again.load_job(saved)
    assert again.job() == dialog.job()
    dialog.close()
    again.close()


@pytest.mark.parametrize("tool", TRAIN_TOOLS)
def test_train_dialogs_start_with_the_labeling_tools_project(plugin, tool, tmp_path):
    project = LabelingProject.create(tmp_path / "handed.gpkg", "EPSG:32631")
    plugin.labeling_project = str(project.path)
    dialog = open_tool(tool, plugin)
    job = dialog.job()
    assert str(project.path) in (getattr(job, "project", ""), getattr(job, "input", ""))
    dialog.close()


@pytest.mark.parametrize("family", [pytest.param(f, id=f.task) for f in FAMILIES
                                    if f.classify_tools])
def test_classify_dialogs_show_the_model_card(plugin, family, tmp_path):
    """The model to apply is shown with its classes in every family's classify dialog."""
    import json
    import struct

    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "roofs", "color": "#e31a1c"}]
    card = {"format": "dltrainer-model", "format_version": 1, "task": family.task,
            "classes": classes, "num_outputs": 2, "bands": 3, "mean": [0, 0, 0],
            "std": [1, 1, 1], "patch_size": 64, **CARD_FIELDS[family.task]}
    raw = json.dumps({"__metadata__": {"format": "dltrainer-model", "format_version": "1",
                                       "card": json.dumps(card)},
                      "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    model = tmp_path / "m.dltmodel.safetensors"
    model.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    dialog = open_tool(family.classify_tools[0], plugin, str(model))
    assert dialog.card_view is not None
    assert "roofs" in dialog.card_view.toPlainText(), dialog.card_view.toPlainText()
    dialog.close()


def test_grid_form_shows_what_training_will_sample(plugin, tmp_path):
    """Train Grid Model has a live pre-flight summary like the other train dialogs: the grid
    cells of the project per split, from a worker, and the training length in steps (the
    automatic 3 batches an epoch of a small project × the default 100 epochs)."""
    from plugin.core.classification.synthetic import make_grid_scene
    from plugin.gui.classification_dialogs import open_train_grid_model
    from plugin.gui.task import pump_until

    scene = make_grid_scene(tmp_path / "scene", cells=4, cell=32, feature_share=0.5,
                            rasters=2)
    dialog = open_train_grid_model(plugin, str(scene.project))
    dialog.widgets["grid_size"][1].setValue(32)
    assert pump_until(lambda: "Training" in dialog.summary_view.toPlainText(), 60), \
        dialog.summary_status.text() + dialog.summary_view.toPlainText()
    text = dialog.summary_view.toPlainText()
    assert "Patches of 32 px from 2 rasters" in text
    assert "Training length: 300 optimiser steps (100 epochs × 3 batches of 32)" in text
    assert dialog.summary_status.text().startswith("What training will sample")
    dialog.close()


def test_chip_form_shows_what_training_will_use(plugin, tmp_path):
    """Train Chip Classifier has a live pre-flight summary too: chips per class in the
    training, validation and test sets, from a worker, and the training length in steps."""
    from plugin.core.classification.synthetic import make_chip_folder
    from plugin.gui.classification_dialogs import open_train_chip_classifier
    from plugin.gui.task import pump_until

    make_chip_folder(tmp_path / "chips", per_class=6, size=16)
    dialog = open_train_chip_classifier(plugin, str(tmp_path / "chips"))
    dialog.widgets["test_size"][1].setValue(2)
    assert pump_until(lambda: "Validation" in dialog.summary_view.toPlainText(), 60), \
        dialog.summary_status.text() + dialog.summary_view.toPlainText()
    text = dialog.summary_view.toPlainText()
    assert "Chips of up to 16 px (imagefolder layout)" in text
    assert "Training length: 315 optimiser steps (35 epochs × 9 batches of 32)" in text
    assert dialog.summary_status.text() == "What training will use:"
    dialog.close()


@pytest.mark.parametrize("tool", TRAIN_TOOLS)
def test_every_train_dialog_offers_the_start_weights(plugin, tool, tmp_path):
    """START_WEIGHTS (issue 19): every train dialog shows random, the family's pretrained
    choice (imagenet or coco) and a weights file, and gives the job the one shown."""
    import dataclasses

    from qgis.PyQt.QtWidgets import QRadioButton

    from plugin.core.families import family_of_kind

    fam = family_of_kind(tool.kind)
    dialog = open_tool(tool, plugin)
    offered = [c.itemText(i) for c in dialog.findChildren(QComboBox) for i in range(c.count())]
    offered += [b.text() for b in dialog.findChildren(QRadioButton)]
    assert any(fam.pretrained in text.lower() for text in offered), offered
    weights = tmp_path / "start.safetensors"
    weights.write_bytes(b"x")
    for value in (fam.pretrained, str(weights), "random"):
        dialog.set_job(dataclasses.replace(dialog.job(), start_weights=value))
        assert dialog.job().start_weights == value
    dialog.close()


@pytest.mark.parametrize("task", ["instance_segmentation", "pixel_regression"])
def test_instance_and_regression_forms_show_the_training_length(plugin, task, tmp_path):
    """Train Instance Segmentation and Train Pixel Regression show the optimiser steps before
    training, as the other train dialogs do: a live pre-flight summary from a worker."""
    from family_models import rgba_project, train_job

    from plugin.core.families import family
    from plugin.gui.task import pump_until

    job = train_job(task, rgba_project(tmp_path / "scene"), tmp_path / "m.dltmodel.safetensors")
    dialog = open_tool(family(task).train_tool, plugin)
    dialog.set_job(job)
    dialog._changed()
    assert pump_until(lambda: "Training length" in dialog.summary_view.toPlainText(), 60), \
        dialog.summary_status.text() + dialog.summary_view.toPlainText()
    text = dialog.summary_view.toPlainText()
    assert "Training length: 2 optimiser steps (1 epoch × 2 batches of 2)" in text
    assert "Only 2 training steps" in text and "Validation" in text
    dialog.close()


def test_a_summary_that_waited_starts_once_the_job_is_valid(plugin, tmp_path):
    """The summary waits for a valid job; it used to note its fields as seen while waiting,
    so a job made valid by a field it does not read never started it: reopening Train
    Instance Segmentation on its remembered project left the summary empty (its learning-rate
    field still read 0 while the remembered project and patch size were filled in)."""
    from family_models import rgba_project, train_job

    from plugin.core.families import family
    from plugin.gui.task import pump_until
    from plugin.gui.training_dialog_parts import SUMMARY_WAITING

    job = train_job("instance_segmentation", rgba_project(tmp_path / "scene"),
                    tmp_path / "m.dltmodel.safetensors")
    dialog = open_tool(family("instance_segmentation").train_tool, plugin)
    ready = dialog.summary_ready
    dialog.summary_ready = lambda _job: False   # another field not valid yet
    dialog.set_job(job)
    dialog._changed()
    assert dialog.summary_status.text() == SUMMARY_WAITING
    dialog.summary_ready = ready   # that field is valid now; the summary's own are unchanged
    dialog._changed()
    assert pump_until(lambda: "Training length" in dialog.summary_view.toPlainText(), 60), \
        dialog.summary_status.text() + dialog.summary_view.toPlainText()
    dialog.close()


def test_train_forms_are_never_cut_off_beside_their_summary(plugin):
    """The form of a train dialog with a pre-flight summary is as wide as it needs, Advanced
    shown or not: it was cut at the right (the "…" buttons hidden) in Train Instance
    Segmentation and Train Pixel Regression at 1366 × 768."""
    from qgis.PyQt.QtWidgets import QGroupBox, QScrollArea

    from plugin.core.families import family

    for task in ("instance_segmentation", "pixel_regression"):
        dialog = open_tool(family(task).train_tool, plugin)
        dialog.resize(1060, 700)
        dialog.show()
        area = dialog.findChildren(QScrollArea)[0]
        for advanced in (False, True):
            next(b for b in dialog.findChildren(QGroupBox)
                 if b.title() == "Advanced").setChecked(advanced)
            dialog.layout().activate()
            need = area.widget().minimumSizeHint().width()
            assert area.viewport().width() >= need, (task, advanced)
        dialog.close()


def test_a_failed_training_shows_its_message_as_typed_and_enter_adds_no_weights(plugin):
    """The Training Model window showed messages as rich text, so "<urlopen error …>" and
    any other "<…>" vanished ("(URLError: )"); Enter in the Start weights field added the
    typed path to its list of choices."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QTextDocument
    from qgis.PyQt.QtTest import QTest

    from plugin.core.families import family
    from plugin.core.jobs import job_class
    from plugin.gui.training_window import TrainingWindow

    fam = family("object_detection")
    window = TrainingWindow(None, job_class(fam.train_kind)(), plugin=plugin)
    window._failed("Offline (URLError: <urlopen error unreachable>).", "Use a <file>.")
    shown = QTextDocument()
    shown.setHtml(window.status_label.text())   # what the rich-text label shows
    assert "<urlopen error unreachable>). Use a <file>." in shown.toPlainText()
    window.close()
    dialog = open_tool(fam.train_tool, plugin)
    combo = dialog.findChild(QComboBox, "start_weights")
    combo.lineEdit().setText("/no/such.pth")
    QTest.keyClick(combo.lineEdit(), Qt.Key_Return)
    assert [combo.itemText(i) for i in range(combo.count())] == ["random", fam.pretrained]
    dialog.close()
