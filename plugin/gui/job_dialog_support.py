"""What the job dialogs share: small widget builders (file rows, spin boxes, form groups, the
OK/Cancel buttons, the device drop-down), the reason label that keeps OK disabled, browsing, the
last job remembered in QgsSettings, job files (Save/Load job…) and opening a dialog from the
menu."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QEvent, QObject, QPoint, QPointF, QSize, Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QScrollBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core import job_catalog  # noqa: F401  (registers every job class)
from ..core.errors import UserError
from ..core.jobs import Job

J = TypeVar("J", bound=Job)
JOB_FILTER = "Job file (*.json)"
PROBLEM_COLOR = "#b00020"
WARNING_COLOR = "#a05a00"
MODEL_SUFFIX = ".dltmodel.safetensors"
MODEL_FILTER = "Deep Learning Trainer model (*.dltmodel.safetensors *.safetensors)"


# -- widgets -----------------------------------------------------------------------------------
def file_row(field: QWidget, browse: Callable[[], None], text: str = "…",
             tooltip: str = "") -> QHBoxLayout:
    """``field`` stretched beside a button that calls ``browse`` (a compact 32 px "…" button
    unless ``text`` says otherwise)."""
    row = QHBoxLayout()
    row.addWidget(field, 1)
    button = QPushButton(text)
    if text == "…":
        button.setFixedWidth(32)
    if tooltip:
        button.setToolTip(tooltip)
    button.clicked.connect(browse)
    row.addWidget(button)
    return row


def spec_notes(ps) -> list[str]:
    """What a field's help leaves out: its range (``from 32 to 1024``), list and table forms
    (Processing's help and the forms' tooltips say the same)."""
    notes = []
    if ps.minimum is not None or ps.maximum is not None:
        low = "" if ps.minimum is None else f"{ps.minimum:g}"
        high = "" if ps.maximum is None else f"{ps.maximum:g}"
        notes.append(f"from {low} to {high}" if low and high else
                     (f"at least {low}" if low else f"at most {high}"))
    if ps.kind in ("str_list", "int_list", "float_list"):
        notes.append("comma separated")
    if ps.kind == "raster_list":
        notes.append("paths separated by ;")
    if ps.kind == "dict":
        notes.append("a JSON object")
    return notes


def spec_tooltip(ps) -> str:
    """A form field's tooltip: its help, then its unit (from the label, e.g. "px") and range,
    e.g. "Edge of the square grid cells. Unit: px; from 32 to 1024."."""
    import re

    unit = re.search(r"\((px|%|m|epochs?|patches|cells|s)\b[^)]*\)", ps.label)
    notes = ([f"unit: {unit.group(1)}"] if unit else []) + spec_notes(ps)
    text = ps.help.strip() or f"{ps.label}."
    return f"{text} ({'; '.join(notes)})" if notes else text


def explain_fields(job_cls: type[Job], fields: dict) -> None:
    """Give each widget of ``fields`` (job field name → widget) without a tooltip the one
    its spec gives (:func:`spec_tooltip`): hand-built forms explain their fields as the
    generated ones do."""
    from ..core.params import param_fields

    specs = {f.name: ps for f, ps in param_fields(job_cls)}
    for name, widget in fields.items():
        if not widget.toolTip() and name in specs:
            widget.setToolTip(spec_tooltip(specs[name]))


def problem_label(color: str = PROBLEM_COLOR) -> QLabel:
    """A word-wrapped coloured label for the reasons OK is disabled (or for warnings)."""
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {color};")
    return label


def show_messages(label: QLabel, messages: list[str], limit: int | None = None) -> None:
    """Show the first ``limit`` (all when None) messages in ``label``, hidden when none."""
    label.setText(" ".join(messages[:limit]))
    label.setVisible(bool(messages))


def show_problems(label: QLabel, ok_button: QPushButton, problems: list[str],
                  limit: int | None = None) -> None:
    """OK enabled only without problems; all of them in its tooltip, the first ``limit`` in
    ``label``."""
    ok_button.setEnabled(not problems)
    ok_button.setToolTip(" ".join(problems))
    show_messages(label, problems, limit)


def layer_picker(kind: str, project=None):
    """A drop-down of the project's raster (``kind`` "raster_in") or vector layers, empty
    allowed, that also takes a file: see :func:`picked_path` and :func:`pick_path`."""
    from qgis.core import QgsMapLayerProxyModel
    from qgis.gui import QgsMapLayerComboBox

    combo = QgsMapLayerComboBox()
    combo.setFilters(QgsMapLayerProxyModel.RasterLayer if kind == "raster_in"
                     else QgsMapLayerProxyModel.VectorLayer)
    combo.setAllowEmptyLayer(True)
    if project is not None and hasattr(combo, "setProject"):  # QGIS ≥ 3.24
        combo.setProject(project)
    return combo


def picked_path(combo) -> str:
    """The source of the layer chosen in a :func:`layer_picker`, else the file offered in it
    (when it exists); "" when none."""
    layer = combo.currentLayer()
    if layer is not None:
        return layer.source()
    text = combo.currentText().strip()
    return text if text and Path(text).exists() else ""


def pick_path(combo, path: str, layers=()) -> None:
    """Choose the layer of ``layers`` whose source is ``path`` in a :func:`layer_picker`, else
    offer the file as an extra item and choose it; "" leaves the choice as it is."""
    for layer in layers:
        if layer.source() == path:
            combo.setLayer(layer)
            if combo.currentLayer() is layer:
                return
    if not path:
        return
    items = list(combo.additionalItems())
    if path not in items:
        combo.setAdditionalItems(items + [path])
    combo.setCurrentIndex(combo.findText(path))


def double_spin(lo: float, hi: float, decimals: int = 2, step: float = 1.0,
                suffix: str = "") -> QDoubleSpinBox:
    """A QDoubleSpinBox (decimals set before the range, so small bounds are kept)."""
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    spin.setSuffix(suffix)
    return spin


def int_spin(lo: int, hi: int, step: int = 1, suffix: str = "", special: str = "",
             tooltip: str = "") -> QSpinBox:
    """A QSpinBox from ``lo`` to ``hi``; ``special`` is the text shown at ``lo`` (e.g.
    "automatic")."""
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    spin.setSuffix(suffix)
    spin.setSpecialValueText(special)
    spin.setToolTip(tooltip)
    return spin


def form_group(title: str) -> tuple[QGroupBox, QFormLayout]:
    """A titled group box and the form layout inside it."""
    box = QGroupBox(title)
    return box, QFormLayout(box)


def ok_cancel_buttons(dialog: QDialog, ok_text: str) -> QDialogButtonBox:
    """OK (labelled ``ok_text``) and Cancel, wired to the dialog's accept and reject."""
    buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
    buttons.button(QDialogButtonBox.Ok).setText(ok_text)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    return buttons


def lay_out_dialog(dialog: QDialog, body, ok_text: str, *notes: QWidget) -> QDialogButtonBox:
    """The dialog's layout: ``body`` (a layout) taking the height, then the ``notes`` (warning
    and reason labels), then OK (``ok_text``) and Cancel; sets ``dialog.buttons`` and
    ``dialog.ok_button``."""
    dialog.buttons = ok_cancel_buttons(dialog, ok_text)
    dialog.ok_button = dialog.buttons.button(QDialogButtonBox.Ok)
    if isinstance(dialog, JobDialog):   # every job dialog saves and loads its job
        dialog.save_button, dialog.load_button = add_job_file_buttons(
            dialog.buttons, dialog._save_job_clicked, dialog._load_job_clicked)
    layout = QVBoxLayout(dialog)
    layout.addLayout(body, 1)
    for note in notes:
        layout.addWidget(note)
    layout.addWidget(dialog.buttons)
    return dialog.buttons


def add_job_file_buttons(buttons: QDialogButtonBox, save: Callable[[], None],
                         load: Callable[[], None]) -> tuple[QPushButton, QPushButton]:
    """"Save job…" and "Load job…" beside OK and Cancel, calling ``save`` and ``load``."""
    save_button = buttons.addButton("Save job…", QDialogButtonBox.ActionRole)
    load_button = buttons.addButton("Load job…", QDialogButtonBox.ActionRole)
    save_button.clicked.connect(save)
    load_button.clicked.connect(load)
    return save_button, load_button


def on_change(slot: Callable, *widgets: QWidget) -> None:
    """Call ``slot`` whenever one of ``widgets`` changes value: the text of a line edit, the
    state of a check or radio button, the value of a spin box or slider, the item of a
    drop-down."""
    for w in widgets:
        if isinstance(w, QLineEdit):
            w.textChanged.connect(slot)
        elif isinstance(w, QAbstractButton):
            w.toggled.connect(slot)
        elif isinstance(w, (QAbstractSpinBox, QAbstractSlider)):
            w.valueChanged.connect(slot)
        elif isinstance(w, QComboBox):
            w.currentIndexChanged.connect(slot)
        else:
            raise TypeError(f"no change signal known for {type(w).__name__}")


def counted(spin, word: str, many: str | None = None):
    """Give a spin box a unit suffix in the right number: "1 patch", "4 patches"."""
    from ..core.wording import plural

    def update(value) -> None:
        spin.setSuffix(" " + plural(value, word, many).split(" ", 1)[1])

    spin.valueChanged.connect(update)
    update(spin.value())
    return spin


def fill_devices(combo: QComboBox, devices: list[dict], current: str) -> None:
    """Automatic, CPU and each CUDA device in ``devices``; ``current`` is selected."""
    combo.blockSignals(True)
    combo.clear()
    combo.addItem("Automatic (GPU if available)", "auto")
    combo.addItem("CPU", "cpu")
    for d in devices:
        combo.addItem(f"CUDA {d['index']}: {d.get('name', 'GPU')}", f"cuda:{d['index']}")
    combo.blockSignals(False)
    select_device(combo, current)


#: CUDA devices reported by the ML environment this session (None until a dialog has asked).
_known_devices: list[dict] | None = None


def known_devices() -> list[dict]:
    """CUDA devices the ML environment reported this session (empty until it has)."""
    return list(_known_devices or [])


def devices_listed() -> bool:
    """Whether the ML environment has reported its CUDA devices this session."""
    return _known_devices is not None


def set_known_devices(devices: list[dict]) -> None:
    """Keep the CUDA devices the ML environment reported (an ``environment_report``'s
    ``cuda_devices``) for the device lists opened later this session."""
    global _known_devices
    _known_devices = list(devices)


def device_combo(tooltip: str = "") -> QComboBox:
    """The device drop-down with the CUDA devices known this session, Automatic selected."""
    combo = QComboBox()
    combo.setToolTip(tooltip)
    fill_devices(combo, known_devices(), "auto")
    return combo


def select_device(combo: QComboBox, value: str) -> None:
    """Select device ``value`` ("auto", "cpu", "cuda:N"), adding it when not listed."""
    value = (value or "auto").strip().lower()
    if value == "cuda":
        value = "cuda:0"
    if combo.findData(value) < 0:
        combo.addItem(f"CUDA {value[5:]}" if value.startswith("cuda:") else value, value)
    combo.setCurrentIndex(combo.findData(value))


def widget_value(widget: QWidget):
    """The value a form widget shows, as a job field takes it: a check box's state, a spin box's
    or slider's number (a float spin box's rounded to the decimals it shows), a line edit's
    text without surrounding spaces, a combo box's item data."""
    if isinstance(widget, QAbstractButton):
        return widget.isChecked()
    if isinstance(widget, QDoubleSpinBox):
        return round(widget.value(), widget.decimals())
    if isinstance(widget, (QAbstractSpinBox, QAbstractSlider)):
        return widget.value()
    if isinstance(widget, QLineEdit):
        return widget.text().strip()
    if isinstance(widget, QComboBox):
        return widget.currentData()
    raise TypeError(f"no value for a {type(widget).__name__}")


def show_value(widget: QWidget, value) -> None:
    """Show a job field's ``value`` in ``widget`` (the inverse of :func:`widget_value`; None
    shows as 0 in a number box, a combo box selects the item whose data is ``value``)."""
    if isinstance(widget, QAbstractButton):
        widget.setChecked(bool(value))
    elif isinstance(widget, (QAbstractSpinBox, QAbstractSlider)):
        widget.setValue(type(widget.value())(value or 0))
    elif isinstance(widget, QLineEdit):
        widget.setText(str(value or ""))
    elif isinstance(widget, QComboBox):
        widget.setCurrentIndex(max(widget.findData(value), 0))
    else:
        raise TypeError(f"cannot show a value in a {type(widget).__name__}")


def labeling_tool_project(plugin) -> str | None:
    """The labeling project a dialog opened from the menu starts with: the one the Labeling
    Tool handed over (``plugin.labeling_project``, used once), else the one open in the
    Labeling Tool, else the one the QGIS project remembers; None when there is none."""
    path = getattr(plugin, "labeling_project", None)
    if path:
        plugin.labeling_project = None
        return str(path)
    dock = (getattr(plugin, "windows", None) or {}).get("labeling")
    project = getattr(dock, "project", None) if dock is not None else None
    if project is not None and getattr(project, "path", None):
        return str(project.path)
    from qgis.core import QgsProject

    path, ok = QgsProject.instance().readEntry("dltrainer", "labeling_project", "")
    return path if ok and path and Path(path).is_file() else None


class _WheelGuard(QObject):
    """Event filter: a wheel turned over an unfocused spin box, drop-down or slider scrolls the
    form around it instead of changing the value under the cursor."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = obj.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is None:          # no form to scroll: Qt passes the ignored wheel on
            event.ignore()
            return True
        from qgis.PyQt.QtGui import QWheelEvent

        viewport = area.viewport()
        forwarded = QWheelEvent(QPointF(obj.mapTo(viewport, event.pos())),
                                QPointF(event.globalPosF()), QPoint(event.pixelDelta()),
                                QPoint(event.angleDelta()), event.buttons(), event.modifiers(),
                                event.phase(), event.inverted())
        QApplication.sendEvent(viewport, forwarded)
        event.accept()
        return True


_WHEEL_GUARD: _WheelGuard | None = None


def guard_wheel(root: QWidget) -> int:
    """Make every spin box, drop-down and slider under ``root`` ignore the mouse wheel unless
    it has the keyboard focus (click or Tab into it first), so that the wheel scrolls long
    forms; call again after adding such widgets (those already guarded are skipped). The
    number newly guarded."""
    global _WHEEL_GUARD
    if _WHEEL_GUARD is None:
        _WHEEL_GUARD = _WheelGuard()
    count = 0
    for w in root.findChildren((QAbstractSpinBox, QComboBox, QAbstractSlider)):
        if w.property("dlt_wheel_guarded") or isinstance(w, QScrollBar):
            continue
        w.setProperty("dlt_wheel_guarded", True)
        w.setFocusPolicy(Qt.StrongFocus)   # the wheel alone never focuses it
        w.installEventFilter(_WHEEL_GUARD)
        count += 1
    return count


def fit_to_screen(widget: QWidget, width: int, height: int, margin: int = 60) -> None:
    """Resize ``widget`` to ``width`` × ``height``, or less so that it fits the screen it opens
    on with room for the window frame and task bar (every dialog usable on 1366 × 768)."""
    from qgis.PyQt.QtWidgets import QApplication

    screen = widget.screen() if hasattr(widget, "screen") else None
    screen = screen or QApplication.primaryScreen()
    if screen is not None:
        area = screen.availableGeometry()
        width = min(width, area.width() - margin // 2)
        height = min(height, area.height() - margin)
    widget.resize(width, height)


def scrolled(inner: QWidget) -> QWidget:
    """``inner`` in a frameless vertical scroll area (for forms taller than small screens),
    never narrower than ``inner`` needs (:class:`FormScrollArea`)."""
    from qgis.PyQt.QtWidgets import QFrame

    area = FormScrollArea()
    area.setWidget(inner)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    return area


class FormScrollArea(QScrollArea):
    """A vertical scroll area whose minimum width is its form's (the form's minimum width,
    the scroll bar's and the frame's), updated when the form's layout changes (Advanced
    shown): with no horizontal scroll bar, a narrower area cut off the form's right side, the
    "…" buttons included (Train Instance Segmentation and Train Pixel Regression beside their
    pre-flight summaries at 1366 × 768)."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is not None:
            hint.setWidth(max(hint.width(), inner.minimumSizeHint().width()
                              + self.verticalScrollBar().sizeHint().width()
                              + 2 * self.frameWidth()))
        return hint

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)


def single_shot_timer(parent: QWidget, interval_ms: int, slot: Callable[[], None]) -> QTimer:
    """A single-shot timer of ``parent`` that calls ``slot`` ``interval_ms`` after each
    ``start()`` (restarting it waits again: a live summary runs once typing pauses)."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(interval_ms)
    timer.timeout.connect(slot)
    return timer


def main_window(plugin) -> QWidget | None:
    """The QGIS main window of ``plugin`` (the parent of its dialogs); None without iface."""
    return plugin.iface.mainWindow() if getattr(plugin, "iface", None) else None


def show_dialog(dialog: QDialog) -> QDialog:
    """Show a dialog opened from the menu (modeless, deleted when closed); the dialog."""
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    guard_wheel(dialog)
    dialog.show()
    return dialog


# -- browsing ----------------------------------------------------------------------------------
def browse_file(parent: QWidget, edit: QLineEdit, title: str, filter_: str = "",
                start: str | None = None) -> str:
    """Ask for an existing file (from ``start``, else the edit's path) into ``edit``; the path,
    "" when cancelled."""
    start = edit.text().strip() if start is None else start
    path, _ = QFileDialog.getOpenFileName(parent, title, start, filter_)
    if path:
        edit.setText(path)
    return path


def browse_folder(parent: QWidget, edit: QLineEdit, title: str) -> str:
    """Ask for a folder (from the edit's path) into ``edit``; the path, "" when cancelled."""
    path = QFileDialog.getExistingDirectory(parent, title, edit.text().strip())
    if path:
        edit.setText(path)
    return path


def browse_save_file(parent: QWidget, edit: QLineEdit, title: str, filter_: str, suffix: str,
                     ending: str | None = None) -> str:
    """Ask for a file to write into ``edit``, adding ``suffix`` unless the name ends with
    ``ending`` (default: the suffix); the path, "" when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, edit.text().strip(), filter_)
    if path:
        path = _with_suffix(path, suffix, ending)
        edit.setText(path)
    return path


def _with_suffix(path: str, suffix: str, ending: str | None = None) -> str:
    return path if path.lower().endswith(ending or suffix) else path + suffix


# -- remembering -------------------------------------------------------------------------------
def remembered_value(key: str):
    """The JSON value stored under ``key`` in QgsSettings; None when absent or unreadable."""
    text = QgsSettings().value(key, "", type=str)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def remember_value(key: str, value) -> None:
    """Store a JSON-serialisable ``value`` under ``key`` in QgsSettings."""
    QgsSettings().setValue(key, json.dumps(value))


def remembered_job(key: str, default: J) -> J:
    """The job stored under ``key``; ``default`` when there is none, it is unreadable or of
    another kind than ``default``'s. Settings the user left at their default follow the current
    default (:func:`followed_defaults`)."""
    data = remembered_value(key)
    if data is None:
        return default
    try:
        job = Job.from_dict(data)
    except (UserError, ValueError, TypeError):
        return default
    if not isinstance(job, type(default)):
        return default
    return followed_defaults(job, data.get("defaults"))


def followed_defaults(job: J, then: dict | None) -> J:
    """``job`` with each setting that equals its default of the time (``then``: field → value
    as :meth:`Job.to_dict` writes them, stored beside the job by :func:`remember_job`) given
    today's default where that changed; without ``then`` (remembered by an older version), the
    class's ``previous_defaults`` stand for it. A user who never touched a setting gets a new
    default (issue 19: LOSS ce_dice → auto) and one who chose a value keeps it."""
    now = type(job)().to_dict()["params"]
    then = then if isinstance(then, dict) else {**now, **type(job).previous_defaults}
    kept = job.to_dict()["params"]
    changed = {name for name, old in then.items()
               if name in now and name in kept and kept[name] == old and now[name] != old}
    fresh = type(job)()
    return dataclasses.replace(job, **{name: getattr(fresh, name) for name in changed})


def remember_job(key: str, job: Job) -> None:
    """Store ``job`` under ``key`` with today's defaults beside it (see
    :func:`remembered_job`)."""
    remember_value(key, {**job.to_dict(), "defaults": type(job)().to_dict()["params"]})


# -- job files ---------------------------------------------------------------------------------
def load_job_file(path: str | Path, job_cls: type[J]) -> J:
    """:meth:`Job.load`, with a clear :class:`UserError` when the file holds another kind."""
    job = Job.load(path)
    if not isinstance(job, job_cls):
        raise UserError(f"{Path(path).name} holds a {job.kind!r} job, not a {job_cls.kind} job.",
                        f"Load a job saved from {job_cls.title}.")
    return job


def ask_save_job(parent: QWidget, job: Job, start: str = "") -> str:
    """Ask where to save ``job`` (a .json file) and save it; the path, "" when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save job", start, JOB_FILTER)
    if path:
        path = _with_suffix(path, ".json")
        job.save(path)
    return path


def ask_load_job(parent: QWidget, job_cls: type[J], start: str = "",
                 show_error: Callable[[str], None] | None = None) -> J | None:
    """Ask for a job file of ``job_cls``'s kind and load it; None when cancelled or unusable
    (the reason goes to ``show_error``, by default a warning box)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load job", start, JOB_FILTER)
    if not path:
        return None
    try:
        return load_job_file(path, job_cls)
    except UserError as exc:
        text = f"{exc.message} {exc.fix}".strip()
        if show_error is not None:
            show_error(text)
        else:
            QMessageBox.warning(parent, "Load job", text)
        return None


# -- checking ----------------------------------------------------------------------------------
def checked_problems(job: Job) -> list[str]:
    """``job.problems()`` for a dialog that checks at each keystroke: an unexpected error there
    (a bug with a half-typed value) becomes one sentence that keeps OK disabled, its traceback
    in the log, instead of a Python error dialog per key."""
    try:
        return list(job.problems())
    except Exception as exc:  # noqa: BLE001 - the form must stay usable while typing
        import traceback

        from . import messages

        messages.log(f"Checking {job.kind} failed:\n{traceback.format_exc()}", "warning")
        return [f"These values cannot be checked ({type(exc).__name__}: {exc}): complete or "
                "correct the paths."]


# -- the OK button -----------------------------------------------------------------------------
class JobDialog(QDialog):
    """A dialog that describes one job: OK (``accept``) shows the problems while there are any
    and starts nothing; else it asks what the job needs asked (:meth:`confirm`), remembers the
    values (when ``self.remember``) and starts the job (``self.start(job)``).

    Subclasses give ``problems()``, ``job()``, ``start(job)``, ``_changed()`` (shows the
    problems) and :attr:`settings_key` (where the last job is remembered)."""

    settings_key = ""
    remember = True

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        guard_wheel(self)
        super().showEvent(event)

    def confirm(self, job: Job) -> bool:
        """Whether to go on with ``job`` (e.g. after asking to replace files); yes by default."""
        return True

    def remember_values(self) -> None:
        """Keep the values for the next time the dialog opens (QgsSettings)."""
        remember_job(self.settings_key, self.job())

    # -- job files (the "Save job…" and "Load job…" buttons of :func:`lay_out_dialog`) --------
    def save_job(self, path: str | Path) -> None:
        """Write the job the dialog describes to ``path`` (JSON, as ``dltrain run`` reads)."""
        self.job().save(path)

    def load_job(self, path: str | Path) -> None:
        """Show the job saved in ``path``; UserError when it holds another kind of job."""
        self._show_loaded_job(load_job_file(path, type(self.job())))

    def _show_loaded_job(self, job: Job) -> None:
        self.set_job(job)
        self._changed()

    def _save_job_clicked(self) -> None:
        ask_save_job(self, self.job(), self._job_folder())

    def _load_job_clicked(self) -> None:
        job = ask_load_job(self, type(self.job()), self._job_folder())
        if job is not None:
            self._show_loaded_job(job)

    def _job_folder(self) -> str:
        """Where Save/Load job start: the folder of the job's first output, else the output
        folder of the settings."""
        from ..core.outputs import OUT_KINDS
        from ..core.params import param_fields
        from .settings import output_folder

        job = self.job()
        for f, ps in param_fields(type(job)):
            value = getattr(job, f.name)
            if ps.kind in OUT_KINDS and isinstance(value, str) and value:
                return str(Path(value).parent)
        return output_folder()

    def accept(self) -> None:
        if self.problems():
            self._changed()
            return
        job = self.job()
        if not self.confirm(job):
            return
        if self.remember:
            self.remember_values()
        self.start(job)
        super().accept()
