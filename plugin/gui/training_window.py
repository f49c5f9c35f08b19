"""The "Training Model" window: live epoch, batch, losses, a loss chart, times, Cancel.

Driven by a :class:`~.task.JobTask`'s ``event`` signal (or by :meth:`TrainingWindow.handle_event`
directly, e.g. with synthetic events in tests). Closing the window leaves the task running; Cancel
asks the worker to stop at its next safe point (finished epochs and the best model are kept).
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

from qgis.PyQt import sip
from qgis.PyQt.QtCore import QPointF, QRectF, QSize, Qt, QTimer
from qgis.PyQt.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qgis.PyQt.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..core.wording import plural
from .tools import call_opener, classify_tool

TRAIN_COLOR = QColor("#1f77b4")
VAL_COLOR = QColor("#ff7f0e")
_EPOCH_IN_MESSAGE = re.compile(r"epoch\s+(\d+)", re.IGNORECASE)
_TRAIN_KEYS = ("train_loss", "loss")
_VAL_KEYS = ("val_loss", "validation_loss")


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``4:05`` style; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _first(metrics: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round axis ticks (steps of 1, 2 or 5 × 10^k) covering ``lo``..``hi``."""
    if not hi > lo:
        lo, hi = lo - max(abs(lo) * 0.1, 1e-3), hi + max(abs(hi) * 0.1, 1e-3)
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = start
    while True:
        ticks.append(round(value, 10))
        if value >= hi - 1e-12:
            break
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a logarithmic axis covering ``lo``..``hi`` (both > 0): 1, 2, 5 × 10^k (every
    mantissa 1–9 when that gives fewer than 3 ticks, decades only when more than 8); the
    first tick is at or below ``lo``, the last at or above ``hi``."""
    lo, hi = min(lo, hi), max(lo, hi)
    if hi <= lo * 1.0001:
        lo, hi = lo / 1.5, hi * 1.5
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def covering(mantissas) -> list[float]:
        values = sorted(float(f"{m}e{k}") for k in range(k0, k1 + 1) for m in mantissas)
        below = [v for v in values if v <= lo * (1 + 1e-12)]
        above = [v for v in values if v >= hi * (1 - 1e-12)]
        start, end = (below[-1] if below else values[0]), (above[0] if above else values[-1])
        return [v for v in values if start <= v <= end]

    ticks = covering((1, 2, 5))
    if len(ticks) < 3:
        ticks = covering(range(1, 10))
    elif len(ticks) > 8:
        ticks = covering((1,))
    return ticks


def _alive(obj) -> bool:
    """False for a Qt object already deleted on the C++ side."""
    try:
        return not sip.isdeleted(obj)
    except TypeError:  # not a Qt object
        return True


class LossChart(QWidget):
    """Training and validation loss per epoch, drawn with QPainter on a logarithmic axis (a
    large first epoch would flatten every later one on a linear axis); linear when a loss is
    0 or below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.train: list[tuple[float, float]] = []   # (epoch, loss)
        self.val: list[tuple[float, float]] = []
        self.epochs = 0
        self.log_scale = True
        self.setMinimumSize(QSize(360, 180))
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def add(self, epoch: int, train: float | None, val: float | None) -> None:
        for series, value in ((self.train, train), (self.val, val)):
            if value is not None:
                series[:] = [p for p in series if p[0] != epoch] + [(float(epoch), value)]
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("0.0000") + 12, 12, 22, fm.height() + 10
        plot = QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))
        p.setPen(QPen(QColor("#c8c8c8")))
        p.drawRect(plot)
        points = self.train + self.val
        if not points:
            p.setPen(QColor("#777"))
            p.drawText(plot, Qt.AlignCenter, "The loss per epoch appears here.")
            p.end()
            return
        x_max = max(self.epochs, max(x for x, _ in points), 2)
        low, high = min(y for _, y in points), max(y for _, y in points)
        self.log_scale = low > 0
        ticks = log_ticks(low, high) if self.log_scale else nice_ticks(low, high)
        scale = math.log10 if self.log_scale else (lambda v: v)
        y_lo, y_hi = scale(ticks[0]), scale(ticks[-1])

        def at(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - 1) / max(x_max - 1, 1) * plot.width(),
                           plot.bottom() - (scale(y) - y_lo) / (y_hi - y_lo) * plot.height())

        p.setPen(QPen(QColor("#555")))
        for y in ticks:  # y grid and labels
            pt = at(1, y)
            p.setPen(QPen(QColor("#eeeeee")))
            p.drawLine(QPointF(plot.left(), pt.y()), QPointF(plot.right(), pt.y()))
            p.setPen(QPen(QColor("#555")))
            p.drawText(QRectF(0, pt.y() - fm.height() / 2, left - 6, fm.height()),
                       Qt.AlignRight | Qt.AlignVCenter, f"{y:g}")
        step = max(1, math.ceil(x_max / 8))
        for e in range(1, int(x_max) + 1, step):  # x labels
            pt = at(e, ticks[0])
            p.drawText(QRectF(pt.x() - 20, plot.bottom() + 2, 40, fm.height()),
                       Qt.AlignHCenter | Qt.AlignTop, str(e))
        for series, color in ((self.train, TRAIN_COLOR), (self.val, VAL_COLOR)):
            if not series:
                continue
            pts = [at(x, y) for x, y in sorted(series)]
            path = QPainterPath(pts[0])
            for pt in pts[1:]:
                path.lineTo(pt)
            p.setPen(QPen(color, 2))
            p.drawPath(path)
            p.setBrush(color)
            for pt in pts:
                p.drawEllipse(pt, 2.5, 2.5)
            p.setBrush(Qt.NoBrush)
        x = plot.left() + 4  # legend
        for label, color in (("training loss", TRAIN_COLOR), ("validation loss", VAL_COLOR)):
            p.setPen(QPen(color, 3))
            p.drawLine(QPointF(x, 11), QPointF(x + 16, 11))
            p.setPen(QPen(QColor("#333")))
            p.drawText(QPointF(x + 20, 11 + fm.ascent() / 2 - 1), label)
            x += 28 + fm.horizontalAdvance(label)
        p.drawText(QRectF(0, plot.bottom() + 2, left - 6, fm.height()),
                   Qt.AlignRight | Qt.AlignTop, "epoch")
        p.end()


class TrainingWindow(QWidget):
    """Progress of one training task. ``task`` may be None (tests feed events directly)."""

    def __init__(self, task=None, job=None, parent: QWidget | None = None, plugin=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(parent, Qt.Window)
        self.task = task
        self.job = job
        self.plugin = plugin
        self.clock = clock
        self.started = clock()
        self.ended_at: float | None = None
        self.epoch_done = 0
        self.epoch_current = 0
        self.epochs = int(getattr(job, "epochs", 0) or 0)
        self.batch = 0
        self.batches = 0
        self.train_loss: float | None = None
        self.val_loss: float | None = None
        self.best_val: float | None = None
        self.best_model = ""
        self.state = "running"
        name = Path(getattr(job, "output_model", "") or "model").name
        self.setWindowTitle(f"Training Model — {name}")
        self.setObjectName("TrainingModelWindow")
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._refresh_times)
        self._timer.start()
        if plugin is not None and job is not None:
            from .tensorboard import manager

            self._watch(manager(plugin))
        if task is not None:
            task.event.connect(self.handle_event)
            task.succeeded.connect(self._succeeded)
            task.failed.connect(self._failed)
            task.cancelled.connect(self._cancelled)
        self._refresh()

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.status_label = QLabel("Preparing…")
        self.status_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        form = QFormLayout()
        self.epoch_label = QLabel()
        self.batch_label = QLabel()
        self.train_label = QLabel()
        self.val_label = QLabel()
        self.metrics_label = QLabel()
        self.elapsed_label = QLabel()
        self.remaining_label = QLabel()
        for lab in (self.train_label, self.val_label):
            lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
        left = QFormLayout()
        right = QFormLayout()
        left.addRow("Epoch", self.epoch_label)
        left.addRow("Batch", self.batch_label)
        left.addRow("Elapsed", self.elapsed_label)
        left.addRow("Remaining", self.remaining_label)
        right.addRow("Training loss", self.train_label)
        right.addRow("Validation loss", self.val_label)
        right.addRow("Validation", self.metrics_label)
        cols = QHBoxLayout()
        cols.addLayout(left, 1)
        cols.addLayout(right, 1)
        form.addRow(cols)
        self.chart = LossChart()
        self.chart.epochs = self.epochs
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.model_label.setStyleSheet("color: #555;")
        self.preview_label = QLabel()   # which epoch the map preview shows
        self.preview_label.setStyleSheet("color: #555;")
        self.preview_label.setVisible(False)
        self.tensorboard_label = QLabel()
        self.tensorboard_label.setTextFormat(Qt.RichText)
        self.tensorboard_label.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.tensorboard_label.setOpenExternalLinks(True)
        self.tensorboard_label.setWordWrap(True)
        self.tensorboard_label.hide()
        self.tensorboard_button = QPushButton("TensorBoard")
        self.tensorboard_button.setToolTip("Open the training metrics in the browser.")
        self.tensorboard_button.clicked.connect(self.open_tensorboard)
        self.tensorboard_button.setEnabled(self.job is not None)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setToolTip("Stop after the current batch; finished epochs and the "
                                      "best model so far are kept.")
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close this window; training goes on in the background "
                                     "(see the task manager).")
        self.close_button.clicked.connect(self.close)
        self.classify = classify_tool(getattr(self.job, "kind", ""))   # the family's own
        self.classify_button = QPushButton(self.classify.label if self.classify else "")
        self.classify_button.setToolTip(
            f"Open {self.classify.label.rstrip('…')} with the best model." if self.classify
            else "")
        self.classify_button.clicked.connect(self.open_classify)
        self.classify_button.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.tensorboard_button)
        buttons.addWidget(self.classify_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status_label)
        layout.addWidget(self.progress)
        layout.addLayout(form)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.model_label)
        layout.addWidget(self.preview_label)
        layout.addWidget(self.tensorboard_label)
        layout.addLayout(buttons)
        self.resize(560, 480)

    # -- events --------------------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        """Update from one worker event (progress / log / artifact)."""
        if sip.isdeleted(self):
            return
        kind = event.get("event")
        if kind == "progress":
            phase = event.get("phase")
            step, total = int(event.get("step", 0)), int(event.get("total", 0))
            metrics = event.get("metrics") or {}
            if phase == "batch":
                found = _EPOCH_IN_MESSAGE.search(str(event.get("message", "")))
                if found:
                    self.epoch_current = int(found.group(1))
                    self.epoch_done = max(self.epoch_done, self.epoch_current - 1)
                self.batch, self.batches = step, total
                loss = _first(metrics, _TRAIN_KEYS)
                if loss is not None and self.epoch_done == 0:
                    self.train_loss = loss  # before the first epoch ends: the running loss
                self.status_label.setText("Training…")
            elif phase == "epoch":
                self.epoch_done, self.epochs = step, total or self.epochs
                self.epoch_current = step
                self.chart.epochs = self.epochs
                self.batch = self.batches
                self.train_loss = _first(metrics, _TRAIN_KEYS)
                self.val_loss = _first(metrics, _VAL_KEYS)
                if self.val_loss is not None and (self.best_val is None
                                                  or self.val_loss < self.best_val):
                    self.best_val = self.val_loss
                self.chart.add(step, self.train_loss, self.val_loss)
                parts = []
                for key, label in (("val_miou", "mean IoU"), ("val_accuracy", "accuracy"),
                                   ("val_map50", "mAP50"), ("val_map", "mAP"),
                                   ("val_f1", "F1")):
                    if isinstance(metrics.get(key), (int, float)):
                        parts.append(f"{label} {metrics[key]:.3f}")
                self.metrics_label.setText(", ".join(parts) or "—")
                self.status_label.setText(str(event.get("message") or "Training…"))
            else:
                self.status_label.setText(str(event.get("message") or "Preparing…"))
        elif kind == "artifact" and event.get("name") == "best_model":
            self.best_model = str(event.get("path", ""))
            self.model_label.setText(f"Best model so far: {self.best_model}")
        elif kind == "artifact" and event.get("name") == "preview":
            self.preview_label.setText(f"Map preview: epoch {event.get('epoch', '?')}")
            self.preview_label.setVisible(True)
        elif kind == "log" and event.get("level") == "warning":
            self.status_label.setText(str(event.get("message", "")))
        self._refresh()

    def current_epoch(self) -> int:
        """The epoch being trained (the last finished one once training has ended)."""
        return self.epoch_current or self.epoch_done

    def fraction_done(self) -> float:
        """Share of the whole training done (epochs and batches of the current epoch)."""
        if not self.epochs:
            return 0.0
        within = self.batch / self.batches if self.batches and self.epoch_done < self.epochs \
            and self.batch < self.batches else 0.0
        return min(1.0, (self.epoch_done + within) / self.epochs)

    def elapsed(self) -> float:
        return (self.ended_at or self.clock()) - self.started

    def remaining(self) -> float | None:
        """Seconds left, extrapolated from the pace so far (None before any progress)."""
        if self.state != "running":
            return 0.0 if self.state == "succeeded" else None
        done = self.fraction_done()
        if done <= 0:
            return None
        return self.elapsed() * (1.0 - done) / done

    def _refresh(self) -> None:
        self.epoch_label.setText(f"{self.current_epoch()} / {self.epochs}" if self.epochs
                                 else "—")
        self.batch_label.setText(f"{self.batch} / {self.batches}" if self.batches else "—")
        self.train_label.setText(f"{self.train_loss:.4f}" if self.train_loss is not None
                                 else "—")
        val = f"{self.val_loss:.4f}" if self.val_loss is not None else "—"
        if self.best_val is not None:
            val += f"  (best {self.best_val:.4f})"
        self.val_label.setText(val)
        self.progress.setValue(int(1000 * self.fraction_done()))
        self._refresh_times()

    def _refresh_times(self) -> None:
        if sip.isdeleted(self):
            return
        self.elapsed_label.setText(format_duration(self.elapsed()))
        self.remaining_label.setText(format_duration(self.remaining()))

    # -- outcome -------------------------------------------------------------------------------
    def _ended(self, state: str, text: str) -> None:
        if sip.isdeleted(self):
            return
        self.state = state
        self.ended_at = self.clock()
        self._timer.stop()
        self.cancel_button.setEnabled(False)
        self.close_button.setText("Close")
        self.status_label.setText(text)
        self._refresh()

    def _succeeded(self, result: dict) -> None:
        model = result.get("output_model") or self.best_model
        self.epoch_done = max(self.epoch_done, int(result.get("epochs_run") or 0))
        epochs = int(result.get("epochs_run", self.epoch_done) or 0)
        self._ended("succeeded", f"Finished after {plural(epochs, 'epoch')}; best epoch "
                                 f"{result.get('best_epoch', '?')}.")
        if model:
            self.best_model = model
            self.classify_button.setVisible(self.plugin is not None
                                            and self.classify is not None)
            self.model_label.setText(f"Best model: {model}"
                                     + (f"\nReport: {result['report']}" if result.get("report")
                                        else ""))

    def _failed(self, message: str, fix: str) -> None:
        text = html.escape(f"{message} {fix}".strip())   # plain text: '<' must show
        self._ended("failed", f"<b>Training failed:</b> {text}")
        self.status_label.setStyleSheet("color: #b00020;")

    def _cancelled(self, partial) -> None:
        model = (partial or {}).get("output_model") if isinstance(partial, dict) else None
        self.best_model = self.best_model or (model if model and Path(model).exists() else "")
        kept = (f" The best model so far is kept: {self.best_model}" if self.best_model
                else "")
        self._ended("cancelled", f"Cancelled after {plural(self.epoch_done, 'finished epoch')}."
                                 f"{kept}")
        if self.best_model:  # the kept model classifies as well as a finished one
            self.classify_button.setVisible(self.plugin is not None
                                            and self.classify is not None)
            self.model_label.setText(f"Best model: {self.best_model}")

    # -- actions -------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the task to stop at its next safe point."""
        if self.task is not None and _alive(self.task):
            self.task.cancel()
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling… finished epochs and the best model are kept.")

    def open_tensorboard(self) -> None:
        if self.job is None:
            return
        from .tensorboard import manager

        tb = manager(self.plugin)
        self._watch(tb)
        tb.open(self.job.resolved_log_folder())

    def set_tensorboard_url(self, url: str, browser_opened: bool = True) -> None:
        """Show TensorBoard's address (clickable, selectable to copy)."""
        if not _alive(self):
            return
        from .tensorboard import url_message

        self.tensorboard_label.setText(url_message(
            self.job.resolved_log_folder() if self.job is not None else "", url,
            None if browser_opened else False))
        self.tensorboard_label.show()

    def _watch(self, tb) -> None:
        """Follow the TensorBoard manager: show the address of this run's server."""
        if getattr(self, "_watched", None) is tb or self.job is None:
            return
        self._watched = tb
        from ..core.tensorboard_process import same_folder

        logdir = self.job.resolved_log_folder()

        def shown(key: str, url: str, opened: bool) -> None:
            if same_folder(key, logdir) or Path(logdir).resolve().is_relative_to(
                    Path(key).resolve()):
                self.set_tensorboard_url(url, opened)

        tb.shown.connect(shown)
        for key, url in tb.urls.items():
            shown(key, url, True)

    def open_classify(self):
        """Open the family's classify tool (Classify Pixels, Detect Objects, Classify Grid,
        Classify Chips) with the best model; the dialog."""
        if self.plugin is None or not self.best_model or self.classify is None:
            return None
        return call_opener(self.classify.opener, self.plugin, self.best_model)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.state == "running":
            self._timer.start()
        super().showEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Closing only hides the progress: the task goes on in the task manager."""
        self._timer.stop()
        super().closeEvent(event)


WINDOW_PREFIX = "training_window_"


def open_training_window(plugin) -> TrainingWindow | None:
    """Menu opener: show the latest Training Model window again (running or ended)."""
    from ..core.errors import UserError

    windows = [w for k, w in (getattr(plugin, "windows", None) or {}).items()
               if k.startswith(WINDOW_PREFIX) and _alive(w)]
    if not windows:
        raise UserError("No training has run in this QGIS session.",
                        "Start one with Deep Learning ▸ Train; its progress window can be "
                        "reopened here while and after it runs.")
    window = windows[-1]
    window.show()
    window.raise_()
    window.activateWindow()
    return window
