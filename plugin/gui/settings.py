"""Plugin settings (typed accessors on QgsSettings) and the Settings dialog.

Keys live under ``deep_learning_trainer/``: ``device`` ("auto", "cpu" or "cuda:N"), ``python``
(the ML Python, "" for automatic), ``tensorboard_port`` (int) and ``output_folder``.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from qgis.core import QgsSettings
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core import envsetup
from ..core.basic_jobs import EnvironmentReportJob
from ..core.pythonenv import DEDICATED_ENV, ml_python, set_configured_python
from .job_dialog_support import (
    browse_file,
    browse_folder,
    file_row,
    form_group,
    int_spin,
    problem_label,
)
from .task import CommandsTask, JobManager

PREFIX = "deep_learning_trainer/"
DEFAULT_PORT = 6006
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda:\d+)$")


# -- typed accessors ---------------------------------------------------------------------------
def _value(key: str, default, type_):
    return QgsSettings().value(PREFIX + key, default, type=type_)


def _set(key: str, value) -> None:
    QgsSettings().setValue(PREFIX + key, value)


def device() -> str:
    """The torch device jobs use: "auto", "cpu" or "cuda:N"."""
    value = str(_value("device", "auto", str) or "auto").strip().lower()
    return value if _DEVICE_RE.match(value) else "auto"


def set_device(value: str) -> None:
    value = (value or "auto").strip().lower()
    if not _DEVICE_RE.match(value):
        raise ValueError(f"device must be auto, cpu or cuda:N, not {value!r}")
    _set("device", value)


def python() -> str:
    """The ML Python chosen by the user ("" for automatic)."""
    return str(_value("python", "", str) or "")


def set_python(path: str) -> None:
    _set("python", path or "")
    set_configured_python(path or "")


def tensorboard_port() -> int:
    port = _value("tensorboard_port", DEFAULT_PORT, int)
    return port if isinstance(port, int) and 1 <= port <= 65535 else DEFAULT_PORT


def set_tensorboard_port(port: int) -> None:
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, not {port}")
    _set("tensorboard_port", int(port))


def output_folder() -> str:
    """Default folder for outputs ("" when not set: dialogs choose next to the input)."""
    return str(_value("output_folder", "", str) or "")


def output_base(path: str | Path) -> Path:
    """Where the outputs made from ``path`` (an input raster, a project, a chips folder) are
    suggested: its path without the suffix, moved into :func:`output_folder` when one is set;
    callers add "_classes.tif" and the like."""
    stem = Path(path).with_suffix("")
    folder = output_folder()
    return Path(folder) / stem.name if folder else stem


def set_output_folder(path: str) -> None:
    _set("output_folder", path or "")


def apply() -> None:
    """Make the saved Python the one workers use (called when the plugin starts)."""
    set_configured_python(python())


def python_problem(path: str) -> str | None:
    """Why ``path`` cannot be the ML Python (a sentence with the fix), or None."""
    if not path:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        return (f"{path} is a folder: choose the python program inside it (e.g. "
                f"{p / 'bin' / 'python'}).")
    if not p.exists():
        return (f"Python {path} does not exist: choose an existing python program, or clear the "
                "field for automatic.")
    if not os.access(p, os.X_OK):
        return f"{path} is not executable: choose a python program."
    return None


# -- dialog ------------------------------------------------------------------------------------
class SettingsDialog(QDialog):
    """Device, ML Python, TensorBoard port, output folder, and what the ML environment has."""

    def __init__(self, parent: QWidget | None = None, jobs: JobManager | None = None,
                 inspect: bool = True) -> None:
        """``inspect``: run the environment report at once (in the selected ML Python)."""
        super().__init__(parent)
        self.setWindowTitle("Deep Learning Trainer — Settings")
        self.setMinimumWidth(620)
        self.jobs = jobs if jobs is not None else JobManager(None, self)
        self.report: dict | None = None
        self._report_task = None
        self._setup_task = None
        self._build()
        self._load()
        self._validate()
        if inspect:
            self.refresh_environment()
        else:
            self.env_label.setText("Press Refresh to inspect the machine-learning environment.")

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        general, form = form_group("General")
        self.device_combo = QComboBox()
        self.device_combo.setToolTip("Where training and classification run. Automatic uses the "
                                     "first CUDA GPU when there is one, else the CPU.")
        form.addRow("Device", self.device_combo)

        self.python_edit = QLineEdit()
        self.python_edit.setPlaceholderText(f"Automatic ({ml_python()})")
        self.python_edit.setToolTip("The python program of the environment that has torch; "
                                    "empty: automatic.")
        self.python_problem_label = problem_label()
        self.python_problem_label.hide()
        column = QVBoxLayout()
        column.setSpacing(2)
        column.addLayout(file_row(self.python_edit, self._browse_python, "Browse…"))
        column.addWidget(self.python_problem_label)
        form.addRow("Python environment", column)

        self.port_spin = int_spin(1024, 65535, tooltip="Local port of the TensorBoard server.")
        form.addRow("TensorBoard port", self.port_spin)

        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("Next to the input data")
        form.addRow("Default output folder",
                    file_row(self.output_edit, self._browse_output, "Browse…"))

        env = QGroupBox("Environment")
        env_layout = QVBoxLayout(env)
        self.env_label = QLabel("Inspecting the machine-learning environment…")
        self.env_label.setWordWrap(True)
        env_layout.addWidget(self.env_label)
        self.env_details = QWidget()
        self.env_form = QFormLayout(self.env_details)
        self.env_form.setContentsMargins(0, 0, 0, 0)
        self.env_details.hide()
        env_layout.addWidget(self.env_details)
        buttons = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh_environment)
        self.create_button = QPushButton("Create environment")
        self.create_button.setToolTip(f"Create a Python environment in {DEDICATED_ENV} and "
                                      "install torch and the other libraries (internet needed).")
        self.create_button.clicked.connect(self.create_environment)
        self.create_button.hide()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.create_button)
        buttons.addStretch(1)
        env_layout.addLayout(buttons)
        self.commands_view = QPlainTextEdit()
        self.commands_view.setReadOnly(True)
        self.commands_view.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.commands_view.setMinimumHeight(120)
        self.commands_view.hide()
        env_layout.addWidget(self.commands_view)
        self.setup_progress = QProgressBar()
        self.setup_progress.hide()
        env_layout.addWidget(self.setup_progress)

        self.reason_label = problem_label()
        self.button_box = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.button_box.accepted.connect(self.accept)
        self.button_box.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(general)
        layout.addWidget(env, 1)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.button_box)
        self.python_edit.textChanged.connect(self._validate)
        self.output_edit.textChanged.connect(self._validate)
        self.python_edit.editingFinished.connect(self._python_edited)
        self._last_python = None

    def _load(self) -> None:
        self._fill_devices([], device())
        self.python_edit.setText(python())
        self._last_python = python()
        self.port_spin.setValue(tensorboard_port())
        self.output_edit.setText(output_folder())

    # -- values --------------------------------------------------------------------------------
    def selected_device(self) -> str:
        return str(self.device_combo.currentData() or "auto")

    def problems(self) -> list[str]:
        """Why OK is disabled (empty when the values can be saved)."""
        out = []
        problem = python_problem(self.python_edit.text().strip())
        if problem:
            out.append(problem)
        folder = self.output_edit.text().strip()
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            out.append(f"Default output folder {folder} is a file: choose a folder.")
        return out

    def _validate(self) -> None:
        problem = python_problem(self.python_edit.text().strip())
        self.python_problem_label.setText(problem or "")
        self.python_problem_label.setVisible(bool(problem))
        problems = self.problems()
        ok = self.button_box.button(QDialogButtonBox.Ok)
        ok.setEnabled(not problems)
        ok.setToolTip(" ".join(problems))
        others = [p for p in problems if p != problem]  # the Python's is shown under its field
        reason = " ".join((["OK is disabled until the Python environment is fixed."]
                           if problem else []) + others)
        self.reason_label.setText(reason)
        self.reason_label.setVisible(bool(reason))

    def save(self) -> None:
        set_device(self.selected_device())
        set_python(self.python_edit.text().strip())
        set_tensorboard_port(self.port_spin.value())
        set_output_folder(self.output_edit.text().strip())

    def accept(self) -> None:
        if self.problems():
            return
        self.save()
        super().accept()

    # -- devices and environment ---------------------------------------------------------------
    def _fill_devices(self, devices: list[dict], current: str) -> None:
        self.device_combo.clear()
        self.device_combo.addItem("Automatic (GPU if available, else CPU)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        for d in devices:
            self.device_combo.addItem(f"cuda:{d['index']} — {d['name']} "
                                      f"({d.get('memory_gib', '?')} GiB)", f"cuda:{d['index']}")
        if self.device_combo.findData(current) < 0:
            self.device_combo.addItem(f"{current} (not found)", current)
        self.device_combo.setCurrentIndex(self.device_combo.findData(current))

    def _python_edited(self) -> None:
        text = self.python_edit.text().strip()
        if text != self._last_python and not python_problem(text):
            self._last_python = text
            self.refresh_environment()

    def refresh_environment(self) -> None:
        """Run the environment report in the selected Python (never imports torch here)."""
        text = self.python_edit.text().strip()
        if python_problem(text):
            return
        self.env_label.setText(f"Inspecting {html.escape(text or ml_python())}…")
        self.env_label.show()
        self.env_details.hide()
        self.refresh_button.setEnabled(False)
        previous = self._report_task
        if previous is not None and not sip.isdeleted(previous) and not previous.outcome:
            for signal in (previous.succeeded, previous.failed, previous.cancelled):
                signal.disconnect()
            previous.cancel()
        task = self.jobs.start(EnvironmentReportJob(), "Inspecting the machine-learning "
                               "environment", python=text or None, notify=False)
        task.succeeded.connect(self._report_ready)
        task.failed.connect(self._report_failed)
        task.cancelled.connect(lambda _partial: self._report_failed("Cancelled.", ""))
        self._report_task = task

    def _report_ready(self, report: dict) -> None:
        if sip.isdeleted(self):
            return
        self.report = report
        self.refresh_button.setEnabled(True)
        self._fill_devices(report.get("cuda_devices", []), self.selected_device())
        while self.env_form.rowCount():
            self.env_form.removeRow(0)
        for name, value in report_rows(report):
            label = QLabel(value)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            self.env_form.addRow(f"<b>{name}</b>", label)
        self.env_details.show()
        has_torch = bool(report.get("libraries", {}).get("torch"))
        self.env_label.setVisible(not has_torch)
        self.env_label.setText(
            "<b>torch is not installed in this Python.</b> Choose another Python above, or "
            f"let <i>Create environment</i> make one in {html.escape(str(DEDICATED_ENV))} "
            "(internet needed, several GB).")
        self._offer_setup(not has_torch)
        self.adjustSize()

    def _report_failed(self, message: str, fix: str) -> None:
        if sip.isdeleted(self):
            return
        self.report = None
        self.refresh_button.setEnabled(True)
        self.env_label.setText(f"<b>The machine-learning Python cannot run:</b> "
                               f"{html.escape(message)} {html.escape(fix)}")
        self.env_label.show()
        self.env_details.hide()
        self._offer_setup(True)
        self.adjustSize()

    def _offer_setup(self, offer: bool) -> None:
        busy = self._setup_task is not None
        self.create_button.setVisible(offer or busy)
        self.create_button.setEnabled(not busy)
        if offer and not busy:
            self.commands_view.setPlainText(
                "Create environment will run:\n" + envsetup.format_commands(
                    envsetup.setup_commands()))
        self.commands_view.setVisible(offer or busy)

    def create_environment(self) -> None:
        """Create the dedicated venv with torch in a background task, showing its output."""
        commands = envsetup.setup_commands()
        self.commands_view.setPlainText(envsetup.format_commands(commands) + "\n")
        self.commands_view.show()
        self.create_button.setEnabled(False)
        self.setup_progress.setValue(0)
        self.setup_progress.show()
        task = CommandsTask(commands, "Creating the machine-learning environment")
        task.output.connect(self._setup_output)
        task.progressChanged.connect(self._setup_progress)
        task.succeeded.connect(self._setup_done)
        task.failed.connect(self._setup_failed)
        task.cancelled.connect(lambda _p: self._setup_failed("Cancelled.", ""))
        self._setup_task = task
        self.jobs.add(task)

    def _setup_output(self, line: str) -> None:
        if not sip.isdeleted(self):
            self.commands_view.appendPlainText(line)

    def _setup_progress(self, value: float) -> None:
        if not sip.isdeleted(self):
            self.setup_progress.setValue(int(value))

    def _setup_done(self, _result: dict) -> None:
        if sip.isdeleted(self):
            return
        self._setup_task = None
        self.setup_progress.hide()
        self.python_edit.setText(str(envsetup.env_python()))
        self._python_edited()

    def _setup_failed(self, message: str, fix: str) -> None:
        if sip.isdeleted(self):
            return
        self._setup_task = None
        self.setup_progress.hide()
        self.commands_view.appendPlainText(f"\nFailed: {message} {fix}")
        self.create_button.setEnabled(True)

    # -- browsing ------------------------------------------------------------------------------
    def _browse_python(self) -> None:
        start = self.python_edit.text().strip() or str(Path(ml_python()).parent)
        if browse_file(self, self.python_edit, "Python of the machine-learning environment",
                       start=start):
            self._python_edited()

    def _browse_output(self) -> None:
        browse_folder(self, self.output_edit, "Default output folder")


def report_rows(report: dict) -> list[tuple[str, str]]:
    """The environment report as (name, rich text) rows."""
    red = "<span style='color:#b00020'>{}</span>"
    libs = report.get("libraries", {})
    torch = libs.get("torch")
    python_text = f"{report.get('python', '?')} ({report.get('executable', '?')})"
    rows = [("Python", html.escape(python_text)),
            ("torch", html.escape(torch) if torch else red.format("not installed"))]
    devices = report.get("cuda_devices", [])
    rows.append(("CUDA devices", "<br>".join(
        f"cuda:{d['index']}: {html.escape(d['name'])}, {d.get('memory_gib', '?')} GiB"
        for d in devices) or "none (jobs run on the CPU)"))
    others = ", ".join(f"{name} {version}" for name, version in libs.items()
                       if name != "torch" and version)
    rows.append(("Libraries", html.escape(others) or "none"))
    missing = ", ".join(name for name, version in libs.items() if not version)
    if missing:
        rows.append(("Missing", red.format(html.escape(missing))))
    return rows


def open_settings(plugin) -> None:
    """Menu opener: show the Settings dialog; saved values apply at once."""
    dialog = SettingsDialog(plugin.iface.mainWindow(), jobs=plugin.jobs)
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    dialog.exec_()
