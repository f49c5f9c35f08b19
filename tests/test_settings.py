"""Plugin settings (QgsSettings accessors) and the Settings dialog."""

from __future__ import annotations

import os
import sys

import pytest
from qgis.core import QgsSettings
from qgis.PyQt.QtWidgets import QDialogButtonBox

from plugin.core import pythonenv
from plugin.gui import settings
from plugin.gui.settings import SettingsDialog
from plugin.gui.task import pump_until


@pytest.fixture
def clean_settings(qgis_app):
    QgsSettings().remove("deep_learning_trainer")
    yield
    QgsSettings().remove("deep_learning_trainer")
    pythonenv.set_configured_python("")


def test_accessors_have_defaults_and_round_trip(clean_settings, tmp_path):
    assert (settings.device(), settings.python(), settings.tensorboard_port(),
            settings.output_folder()) == ("auto", "", 6006, "")
    settings.set_device("cuda:1")
    settings.set_tensorboard_port(6123)
    settings.set_output_folder(str(tmp_path))
    settings.set_python(sys.executable)
    assert (settings.device(), settings.tensorboard_port(), settings.output_folder()) == \
        ("cuda:1", 6123, str(tmp_path))
    assert QgsSettings().value("deep_learning_trainer/device") == "cuda:1"
    assert pythonenv.ml_python() == sys.executable  # the chosen Python runs the jobs
    with pytest.raises(ValueError):
        settings.set_device("gpu")
    with pytest.raises(ValueError):
        settings.set_tensorboard_port(0)
    QgsSettings().setValue("deep_learning_trainer/device", "nonsense")
    assert settings.device() == "auto"


def test_python_problems():
    assert settings.python_problem("") is None
    assert settings.python_problem(sys.executable) is None
    assert "does not exist" in settings.python_problem("/nonexistent/bin/python")
    assert "is a folder" in settings.python_problem(os.path.dirname(sys.executable))


def test_dialog_flags_a_missing_python_and_disables_ok(clean_settings, tmp_path):
    dialog = SettingsDialog(inspect=False)
    ok = dialog.button_box.button(QDialogButtonBox.Ok)
    assert ok.isEnabled()
    dialog.python_edit.setText("/nonexistent/bin/python")
    assert not ok.isEnabled()
    assert "does not exist" in dialog.python_problem_label.text()
    assert "does not exist" in ok.toolTip()
    assert not dialog.reason_label.isHidden()
    dialog.accept()  # refused: nothing saved
    assert settings.python() == ""
    dialog.python_edit.setText("")
    assert ok.isEnabled()
    dialog.output_edit.setText(str(tmp_path))
    dialog.port_spin.setValue(7007)
    dialog.accept()
    assert (settings.tensorboard_port(), settings.output_folder()) == (7007, str(tmp_path))


def test_dialog_shows_the_environment_report_from_the_worker(clean_settings):
    dialog = SettingsDialog()
    assert pump_until(lambda: dialog.report is not None, 90)
    assert dialog.report["libraries"]["torch"]
    rows = dict((dialog.env_form.itemAt(i, dialog.env_form.LabelRole).widget().text(),
                 dialog.env_form.itemAt(i, dialog.env_form.FieldRole).widget().text())
                for i in range(dialog.env_form.rowCount()))
    assert rows["<b>torch</b>"] == dialog.report["libraries"]["torch"]
    assert dialog.create_button.isHidden()  # torch is there: nothing to create


def test_devices_come_from_the_report_and_missing_torch_offers_setup(clean_settings):
    settings.set_device("cuda:1")
    dialog = SettingsDialog(inspect=False)
    report = {"python": "3.11.2", "executable": "/x/python",
              "libraries": {"torch": None, "numpy": "1.26.4"},
              "cuda_devices": [{"index": 0, "name": "NVIDIA H100", "memory_gib": 79.1},
                               {"index": 1, "name": "NVIDIA H100", "memory_gib": 79.1}]}
    dialog._report_ready(report)
    items = [dialog.device_combo.itemData(i) for i in range(dialog.device_combo.count())]
    assert items == ["auto", "cpu", "cuda:0", "cuda:1"]
    assert dialog.selected_device() == "cuda:1"
    assert "NVIDIA H100 (79.1 GiB)" in dialog.device_combo.currentText()
    assert not dialog.create_button.isHidden()
    assert "-m venv --system-site-packages" in dialog.commands_view.toPlainText()
    dialog.accept()
    assert settings.device() == "cuda:1"


def test_create_environment_runs_the_commands_as_a_task(clean_settings, monkeypatch):
    from plugin.core import envsetup

    commands = [[sys.executable, "-c", "print('creating venv')"],
                [sys.executable, "-c", "print('installing torch')"]]
    monkeypatch.setattr(envsetup, "setup_commands", lambda: commands)
    monkeypatch.setattr(envsetup, "env_python", lambda: sys.executable)
    dialog = SettingsDialog(inspect=False)
    dialog._report_failed("Cannot start the machine-learning Python.", "Set it.")
    assert not dialog.create_button.isHidden() and dialog.create_button.isEnabled()
    dialog.create_environment()
    assert not dialog.create_button.isEnabled()  # one at a time
    task = dialog._setup_task
    assert pump_until(lambda: task.outcome == "succeeded", 30)
    shown = dialog.commands_view.toPlainText()
    assert envsetup.format_commands(commands) in shown
    assert "creating venv" in shown and "installing torch" in shown
    assert dialog.python_edit.text() == sys.executable  # the new environment is selected
    inspecting = dialog._report_task  # and inspected
    assert inspecting is not None and inspecting.python == sys.executable
    inspecting.cancel()
    assert pump_until(lambda: bool(inspecting.outcome), 30)
