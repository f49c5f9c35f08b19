"""Jobs as QGIS background tasks: :class:`JobTask` runs one job in a worker process,
:class:`JobManager` (``plugin.jobs``) starts tasks, keeps them alive and reports their outcome.

Dialogs start work with ``task = plugin.jobs.start(job, "Training …")`` and connect to the task's
signals (all delivered on the main thread):

- ``task.event.connect(fn)``: ``fn(event: dict)`` for each worker event (progress, log, artifact);
- ``task.succeeded.connect(fn)``: ``fn(result: dict)``;
- ``task.failed.connect(fn)``: ``fn(message: str, fix: str)``;
- ``task.cancelled.connect(fn)``: ``fn(partial_result)`` (a dict, or None).
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
from collections.abc import Callable

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QObject, QTimer, pyqtSignal

from ..core.envsetup import run_commands
from ..core.errors import JobCancelled, UserError, WorkerError
from ..core.jobs import Job
from ..core.progress import for_job as progress_for_job
from ..core.pythonenv import ml_python
from ..core.runner import WorkerRun
from . import messages

CRASH_FIX = ("Look at View ▸ Panels ▸ Log Messages (tab Deep Learning Trainer) for the worker's "
             "output; a crash is often a lack of memory (use a smaller batch or patch size) or a "
             "broken environment (check Deep Learning ▸ Settings).")


def worker_error_fix(exc: WorkerError) -> str:
    """What to do about a worker failure that is not a :class:`UserError`."""
    if "out of memory" in exc.message:
        return "Use a smaller patch size or batch size."
    if exc.message.startswith("The worker process"):
        return CRASH_FIX
    return ("This is a bug or an unexpected environment problem; View ▸ Panels ▸ Log Messages "
            "(tab Deep Learning Trainer) has the details.")


class _EventSignal:
    """``task.event``: connect/emit like a signal, and still QObject.event for Qt.

    QObject already has a virtual ``event(QEvent)`` method, so a native signal cannot use that
    name; this adapter forwards Qt's calls to it and signal use to ``task.jobEvent``.
    """

    def __init__(self, task: JobTask) -> None:
        self._task = task

    def __call__(self, qevent):  # Qt delivering a QEvent to the task
        return QgsTask.event(self._task, qevent)

    def connect(self, slot, *args, **kwargs):
        return self._task.jobEvent.connect(slot, *args, **kwargs)

    def disconnect(self, *args):
        return self._task.jobEvent.disconnect(*args)

    def emit(self, event: dict) -> None:
        self._task.jobEvent.emit(event)


class _OutcomeTask(QgsTask):
    """A cancellable task ending in exactly one of succeeded / failed / cancelled."""

    succeeded = pyqtSignal(dict)
    failed = pyqtSignal(str, str)
    cancelled = pyqtSignal(object)

    def __init__(self, description: str) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.outcome = ""            # "succeeded", "failed" or "cancelled" once signalled
        self._status = ""            # the same, set by run() in the worker thread
        self.result: dict | None = None
        self.partial_result: dict | None = None
        self.error_message = ""
        self.error_fix = ""
        self.error_details = ""
        self.run_ended = threading.Event()

    def _fail(self, message: str, fix: str = "", details: str = "") -> bool:
        self._status = "failed"
        self.error_message, self.error_fix, self.error_details = message, fix, details
        return False

    def finished(self, ok: bool) -> None:  # main thread
        self.outcome = self._status or "cancelled"  # no status: cancelled before it started
        if self.outcome == "succeeded":
            self.succeeded.emit(self.result or {})
        elif self.outcome == "failed":
            self.failed.emit(self.error_message, self.error_fix)
        else:
            self.cancelled.emit(self.partial_result)

    def kill_worker(self) -> None:  # pragma: no cover - overridden
        pass


class JobTask(_OutcomeTask):
    """Runs ``job`` (copied at creation) in a worker process of the ML Python.

    ``run()`` never raises and touches no widget or layer. Progress events set the task's
    progress (step / total). ``cancel()`` asks the worker to stop at its next safe point; the
    runner terminates it after its grace period.
    """

    jobEvent = pyqtSignal(dict)  # noqa: N815 - Qt naming; use ``task.event`` (see _EventSignal)

    def __init__(self, job: Job, description: str, python: str | None = None) -> None:
        super().__init__(description)
        self.job = copy.deepcopy(job)
        self.python = python or ml_python()  # the setting as it is now
        self._run: WorkerRun | None = None
        self._kill = threading.Event()
        self.overall = progress_for_job(self.job)
        self.artifacts: list[tuple[str, str]] = []  # (name, path) of each file announced

    @property
    def event(self) -> _EventSignal:  # type: ignore[override]
        return _EventSignal(self)

    def run(self) -> bool:  # worker thread
        try:
            self._run = WorkerRun(self.job, python=self.python, on_event=self._on_event)
            if self._kill.is_set():
                return False
            self._run.start()
            if self._kill.is_set():
                self._run.kill()
            self.result = self._run.wait(lambda: self.isCanceled() or self._kill.is_set())
            self._status = "succeeded"
            return True
        except JobCancelled as exc:
            # a cancel the job honoured is an ending, not a failure: True keeps QGIS from
            # reporting "Task failed" (the outcome signal still says cancelled)
            self._status = "cancelled"
            self.partial_result = getattr(exc, "result", None)
            return True
        except UserError as exc:
            return self._fail(exc.message, exc.fix)
        except WorkerError as exc:
            return self._fail(exc.message, worker_error_fix(exc), exc.details)
        except Exception as exc:  # noqa: BLE001 - a task must never raise
            return self._fail(f"{type(exc).__name__}: {exc}",
                              "This is a bug; the log has details.", traceback.format_exc())
        finally:
            self.run_ended.set()

    def _on_event(self, event: dict) -> None:  # worker thread
        if event.get("event") == "artifact":
            self.artifacts.append((str(event.get("name", "")), str(event.get("path", ""))))
        if event.get("event") == "progress":
            before = self.overall.value
            if self.overall.update(event) != before or before == 0:
                self.setProgress(self.overall.value)
        self.jobEvent.emit(event)

    def kill_worker(self) -> None:
        """End the worker process now (used when QGIS or the plugin closes)."""
        self._kill.set()
        if self._run is not None:
            self._run.kill()


class CommandsTask(_OutcomeTask):
    """Runs shell-free commands one after the other (e.g. creating the ML environment).

    ``output(str)`` carries each line they print; success gives ``{"commands": n}``.
    """

    output = pyqtSignal(str)

    def __init__(self, commands: list[list[str]], description: str) -> None:
        super().__init__(description)
        self.commands = [list(c) for c in commands]
        self._kill = threading.Event()

    def run(self) -> bool:  # worker thread
        try:
            def progress(done: int, total: int) -> None:
                self.setProgress(100.0 * done / max(total, 1))

            run_commands(self.commands, on_output=self.output.emit, on_progress=progress,
                         is_cancelled=lambda: self.isCanceled() or self._kill.is_set())
            self.result = {"commands": len(self.commands)}
            self._status = "succeeded"
            return True
        except JobCancelled:
            self._status = "cancelled"
            return False
        except UserError as exc:
            return self._fail(exc.message, exc.fix)
        except Exception as exc:  # noqa: BLE001
            return self._fail(f"{type(exc).__name__}: {exc}", "The log has details.",
                              traceback.format_exc())
        finally:
            self.run_ended.set()

    def kill_worker(self) -> None:
        self._kill.set()


class JobManager(QObject):
    """Starts background tasks, keeps a reference to each until it ends, reports outcomes."""

    def __init__(self, iface=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self._tasks: list[_OutcomeTask] = []
        self._just_ended: dict[str, float] = {}   # description → when its outcome was shown
        bar = iface.messageBar() if iface is not None else None
        if hasattr(bar, "widgetAdded"):
            bar.widgetAdded.connect(self._drop_qgis_notice)

    @property
    def tasks(self) -> list[_OutcomeTask]:
        """Tasks started here that have not ended yet."""
        return list(self._tasks)

    def start(self, job: Job, description: str, python: str | None = None,
              notify: bool = True) -> JobTask:
        """Run ``job`` in the background; returns the task (connect to its signals at once).

        ``python`` overrides the ML Python for this job; ``notify=False`` keeps outcomes out of
        the message bar (they are still logged).
        """
        task = JobTask(job, description, python=python)
        task.event.connect(lambda event, d=description: self._log_event(d, event))
        return self.add(task, notify)

    def add(self, task: _OutcomeTask, notify: bool = True) -> _OutcomeTask:
        """Register any :class:`_OutcomeTask` (keeps it alive, reports, adds to the manager)."""
        description = task.description()
        self._tasks.append(task)
        task.succeeded.connect(lambda result: self._ended(task, "succeeded", notify))
        task.failed.connect(lambda message, fix: self._ended(task, "failed", notify))
        task.cancelled.connect(lambda partial: self._ended(task, "cancelled", notify))
        task.taskTerminated.connect(lambda: self._forget(task))
        task.taskCompleted.connect(lambda: self._forget(task))
        messages.log(f"Started: {description}")
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel_all(self, grace_s: float = 3.0, timeout_s: float = 10.0) -> None:
        """Cancel every running task; kill workers still running after ``grace_s``."""
        tasks = [t for t in self._tasks if not sip.isdeleted(t)]
        for task in tasks:
            task.cancel()
        self._wait(tasks, grace_s)
        for task in tasks:
            if not task.run_ended.is_set():
                task.kill_worker()
        self._wait(tasks, timeout_s)
        self._tasks.clear()

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _wait(tasks: list[_OutcomeTask], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            running = [t for t in tasks if not sip.isdeleted(t) and t.status() in
                       (QgsTask.Running, QgsTask.OnHold) and not t.run_ended.is_set()]
            if not running:
                return
            QCoreApplication.processEvents()
            time.sleep(0.02)

    def _log_event(self, description: str, event: dict) -> None:
        kind = event.get("event")
        if kind == "log":
            messages.log(f"{description}: {event.get('message', '')}",
                         "warning" if event.get("level") == "warning" else "info")
        elif kind == "artifact":
            messages.log(f"{description}: wrote {event.get('name')}: {event.get('path')}")

    def _drop_qgis_notice(self, item) -> None:
        """Remove the "Task complete" / "Task failed" notice QGIS pushes when one of our tasks
        that ran 5 s or more ends (its notification falls back to the message bar where the
        desktop has none): our own message says how it ended (finished, failed, or cancelled,
        which QGIS calls complete), and QGIS's notice, pushed on top, brought ours back a
        second time when it expired."""
        from qgis.gui import QgsMessageBarItem

        if not isinstance(item, QgsMessageBarItem):
            item = sip.cast(item, QgsMessageBarItem)
        ended = self._just_ended.get(item.text())
        if ended is None or time.monotonic() - ended > 5 or item.title() not in (
                QCoreApplication.translate("QgisApp", "Task complete"),
                QCoreApplication.translate("QgisApp", "Task failed")):
            return
        QTimer.singleShot(0, lambda: None if sip.isdeleted(item) else
                          self.iface.messageBar().popWidget(item))

    def _ended(self, task: _OutcomeTask, outcome: str, notify: bool) -> None:
        description = task.description()
        self._just_ended = {d: t for d, t in self._just_ended.items()
                            if time.monotonic() - t < 60}
        self._just_ended[description] = time.monotonic()
        iface = self.iface if notify else None
        if outcome == "succeeded":
            messages.log(f"Finished: {description}", "success")
            if iface is not None:
                paths = messages.output_paths(task.result, getattr(task, "artifacts", []))
                messages.show_outputs(iface, f"{description}: finished.", paths)
        elif outcome == "failed":
            if task.error_details:
                messages.log(f"{description}: details\n{task.error_details}", "warning")
            text = f"{description} failed: {task.error_message}"
            if iface is not None:
                messages.show_error(iface, text, task.error_fix)
            else:
                messages.log(f"{text} {task.error_fix}".strip(), "error")
        else:
            text = f"{description}: cancelled; finished work was kept."
            paths = messages.output_paths(task.partial_result, getattr(task, "artifacts", []))
            if iface is not None and paths:
                messages.show_outputs(iface, text, paths)
            elif iface is not None:
                messages.show_info(iface, text)
            else:
                messages.log(text)
        self._forget(task)

    def _forget(self, task: _OutcomeTask) -> None:
        if task in self._tasks:
            self._tasks.remove(task)


def pump_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Run the Qt event loop until ``condition()`` holds (tests, scripts); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return False


def wait_for(task: _OutcomeTask, timeout_s: float = 60.0) -> str:
    """Pump the event loop until ``task`` has signalled its outcome; returns it ('' on timeout)."""
    pump_until(lambda: bool(task.outcome), timeout_s)
    return task.outcome
