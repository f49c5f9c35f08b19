"""Jobs as QGIS tasks: progress in order, cancel, a crashing worker, unload killing workers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsTask

from plugin.core.basic_jobs import EnvironmentReportJob, SelfTestJob
from plugin.gui.task import JobManager, JobTask, pump_until, wait_for


def record(task: JobTask) -> dict:
    seen: dict = {"events": [], "progress": [], "outcomes": []}
    task.event.connect(seen["events"].append)
    task.progressChanged.connect(seen["progress"].append)
    task.succeeded.connect(lambda result: seen["outcomes"].append(("succeeded", result)))
    task.failed.connect(lambda message, fix: seen["outcomes"].append(("failed", message, fix)))
    task.cancelled.connect(lambda partial: seen["outcomes"].append(("cancelled", partial)))
    return seen


def test_job_runs_to_completion_with_progress_in_order(qgis_app):
    jobs = JobManager()
    job = SelfTestJob(steps=4, delay=0.02)
    task = jobs.start(job, "Self-test")
    seen = record(task)
    job.steps = 99  # the task copied the job when it was created
    assert task in jobs.tasks
    assert wait_for(task, 60) == "succeeded"
    assert seen["outcomes"] == [("succeeded", {"completed": 4, "cancelled": False})]
    steps = [e["step"] for e in seen["events"] if e["event"] == "progress"]
    assert steps == [1, 2, 3, 4]
    assert seen["events"][0]["total"] == 4 and seen["events"][-1]["metrics"] == {"value": 16.0}
    assert seen["progress"] and seen["progress"][-1] == 100
    assert seen["progress"] == sorted(seen["progress"])
    assert pump_until(lambda: jobs.tasks == [], 5)  # the reference is dropped when it ends


def test_cancelled_job_ends_cancelled_with_its_partial_result(qgis_app):
    jobs = JobManager()
    task = jobs.start(SelfTestJob(steps=2000, delay=0.02), "Long self-test")
    seen = record(task)
    assert pump_until(lambda: len(seen["events"]) >= 2, 30)
    started = time.monotonic()
    task.cancel()
    assert wait_for(task, 30) == "cancelled"
    assert time.monotonic() - started < 5  # stopped at its next safe point, not after the grace
    (outcome, partial), = seen["outcomes"]
    assert outcome == "cancelled"
    assert partial["cancelled"] is True and 2 <= partial["completed"] < 2000


def test_crashing_worker_reports_a_clear_error_and_qgis_lives_on(qgis_app, qgis_iface):
    jobs = JobManager(qgis_iface)
    task = jobs.start(SelfTestJob(steps=5, delay=0.01, crash_at=2), "Crash test")
    seen = record(task)
    assert wait_for(task, 60) == "failed"
    (outcome, message, fix), = seen["outcomes"]
    assert message == "The worker process exited with code 139 before finishing the job."
    assert "memory" in fix
    assert [e["step"] for e in seen["events"] if e["event"] == "progress"] == [1]
    bar = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert any("Crash test failed: The worker process exited with code 139" in m for m in bar)
    # QGIS is still here and runs the next job
    assert QgsApplication.instance() is not None
    again = jobs.start(SelfTestJob(steps=1, delay=0), "After the crash")
    assert wait_for(again, 60) == "succeeded"
    assert "Deep Learning Trainer:After the crash: finished." in \
        qgis_iface.messageBar().get_messages(Qgis.Success)


def test_missing_python_fails_with_the_fix(qgis_app):
    jobs = JobManager()
    task = jobs.start(SelfTestJob(steps=1), "No python", python="/nonexistent/bin/python")
    seen = record(task)
    assert wait_for(task, 30) == "failed"
    (_, message, fix), = seen["outcomes"]
    assert "Cannot start the machine-learning Python (/nonexistent/bin/python)" in message
    assert "Settings" in fix


def test_cancel_all_kills_a_worker_that_ignores_cancel(qgis_app):
    jobs = JobManager()
    stubborn = jobs.start(SelfTestJob(steps=5000, delay=0.02, ignore_cancel=True), "Stubborn")
    polite = jobs.start(SelfTestJob(steps=5000, delay=0.02), "Polite")
    seen = record(stubborn)
    assert pump_until(lambda: len(seen["events"]) >= 1, 30)
    started = time.monotonic()
    jobs.cancel_all(grace_s=1.0)
    assert time.monotonic() - started < 8
    assert jobs.tasks == []
    assert wait_for(stubborn, 10) == "cancelled" and wait_for(polite, 10) == "cancelled"
    assert not stubborn._run.running and not polite._run.running
    assert pump_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 10)


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs the system Python")
def test_environment_report_runs_in_a_python_without_torch(qgis_app):
    jobs = JobManager()
    task = jobs.start(EnvironmentReportJob(), "Report", python="/usr/bin/python3", notify=False)
    seen = record(task)
    assert wait_for(task, 60) == "succeeded"
    (_, report), = seen["outcomes"]
    assert report["executable"] == "/usr/bin/python3"
    assert report["libraries"]["torch"] is None and report["cuda_devices"] == []


def test_overall_progress_only_goes_up_across_phases():
    """Training phases (prepare, batch within epoch, epoch) add up to one rising percent."""
    from plugin.core.progress import OverallProgress, for_job
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    tracker = for_job(TrainPixelSegmentationJob(epochs=3))
    events = [("prepare", 0, 3, ""), ("raster", 1, 2, ""), ("prepare", 2, 3, ""),
              ("batch", 1, 2, "epoch 1"), ("batch", 2, 2, "epoch 1"), ("epoch", 1, 3, ""),
              ("batch", 1, 2, "epoch 2"), ("epoch", 2, 3, ""), ("batch", 2, 2, "epoch 3"),
              ("epoch", 3, 3, "")]
    values = [tracker.update({"event": "progress", "phase": p, "step": s, "total": t,
                              "message": m}) for p, s, t, m in events]
    assert values == sorted(values) and values[-1] == pytest.approx(100)
    assert 5 < values[3] < values[4] <= values[5] < 50  # epoch 1 halfway, then done
    raw = [100 * s / t for _p, s, t, _m in events]
    assert raw != sorted(raw)  # what the task manager showed before: 0, 50, 67, 50, 100, 33…
    plain = OverallProgress()  # no plan: each phase's share, never going down
    assert [plain.update({"event": "progress", "phase": p, "step": s, "total": 4})
            for p, s in (("a", 3), ("b", 1), ("b", 4))] == [75, 75, 100]
    assert plain.update({"event": "log"}) is None


def test_cancelled_task_is_not_reported_as_failed_by_qgis(qgis_app):
    """A cancel the job honours ends the QgsTask as complete (QGIS says "Task failed" for a
    terminated one); the outcome signal still says cancelled."""
    jobs = JobManager()
    task = jobs.start(SelfTestJob(steps=2000, delay=0.02), "Cancelled self-test")
    statuses = []
    task.statusChanged.connect(statuses.append)
    assert pump_until(lambda: task.progress() > 0, 30)
    task.cancel()
    assert wait_for(task, 30) == "cancelled"
    assert pump_until(lambda: QgsTask.Complete in statuses, 5)
    assert QgsTask.Terminated not in statuses


def test_finished_message_names_the_files_with_an_open_folder_button(qgis_app, tmp_path,
                                                                     monkeypatch):
    from qgis.gui import QgsMessageBar
    from qgis.PyQt.QtWidgets import QPushButton

    from plugin.gui import messages

    class Iface:
        def __init__(self, bar) -> None:
            self.bar = bar

        def messageBar(self):  # noqa: N802
            return self.bar

    out = tmp_path / "out"
    out.mkdir()
    files = [out / "scene_classes.tif", out / "scene_classes.gpkg"]
    for f in files:
        f.write_bytes(b"x")
    paths = messages.output_paths({"output": str(files[0]), "output_vector": str(files[1]),
                                   "output_probabilities": "", "pixels": 4})
    assert paths == [str(f) for f in files]
    assert messages.output_paths({}, [("best_model", "/a/m"), ("best_model", "/a/m"),
                                      ("report", "/a/r.md")]) == ["/a/m", "/a/r.md"]
    iface = Iface(QgsMessageBar())
    messages.show_outputs(iface, "Classifying scene.tif: finished.", paths)
    item = iface.bar.currentItem()
    assert "scene_classes.tif, scene_classes.gpkg" in item.text() and str(out) in item.text()
    opened = []
    monkeypatch.setattr("qgis.PyQt.QtGui.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toLocalFile()))
    button = item.findChild(QPushButton, "open_folder_button")
    assert button.text() == "Open folder"
    button.click()
    assert opened == [str(out)]
    iface.bar.clearWidgets()
    iface.bar.deleteLater()


def _train_kinds() -> list[str]:
    from plugin.core.families import FAMILIES

    return [fam.train_kind for fam in FAMILIES]


#: What a training run reports, in order, across the families: the task's preparation (label
#: rasters burnt one by one, grid cells, band statistics), 2 epochs of 2 batches, a test set.
TRAINING_EVENTS = [("prepare", 0, 3, "Reading labels"), ("raster", 1, 1, "Burning labels"),
                   ("prepare", 1, 3, "Planning"), ("cells", 4, 4, "Grid model"),
                   ("prepare", 2, 3, "Band statistics"),
                   ("batch", 1, 2, "epoch 1"), ("batch", 2, 2, "epoch 1"), ("epoch", 1, 2, ""),
                   ("batch", 1, 2, "epoch 2"), ("batch", 2, 2, "epoch 2"), ("epoch", 2, 2, ""),
                   ("test", 0, 1, "Test set"), ("test", 1, 1, "Test set")]


@pytest.mark.parametrize("kind", _train_kinds())
def test_training_progress_rises_with_the_epochs_for_every_family(qgis_app, kind):
    """The task manager's bar of every family's training (events as the worker sends them):
    a few percent while preparing, half way after the first of two epochs, 100 % at the end.
    Detection, grid and chip training used to show 100 % from the first second."""
    from plugin.core.jobs import job_class

    task = JobTask(job_class(kind)(epochs=2), "Training")
    shown = []
    for phase, step, total, message in TRAINING_EVENTS:
        task._on_event({"event": "progress", "phase": phase, "step": step, "total": total,
                        "message": message})
        shown.append(task.progress())
    assert shown == sorted(shown)
    assert max(shown[:5]) < 6                      # preparing: at most the prepare share
    assert 25 < shown[6] <= shown[7] <= 55         # epoch 1 of 2 done
    assert shown[10] == pytest.approx(100) and shown[-1] == pytest.approx(100)


class _BarIface:
    """An iface whose message bar is a real QgsMessageBar."""

    def __init__(self) -> None:
        from qgis.gui import QgsMessageBar

        self.bar = QgsMessageBar()

    def messageBar(self):  # noqa: N802
        return self.bar


@pytest.mark.parametrize("cancel", [False, True], ids=["finished", "cancelled"])
def test_an_outcome_is_shown_once_and_qgis_task_notice_is_dropped(qgis_app, cancel):
    """QGIS pushes "Task complete: <description>" (its notification without a desktop one) for
    any task that ran 5 s, a cancelled one too; pushed over ours, it brought ours back 5 s later.
    The manager removes that notice: the bar holds our one message, saying how it ended."""
    iface = _BarIface()
    jobs = JobManager(iface)
    manager = QgsApplication.taskManager()

    def qgis_notice(task_id: int, status: int) -> None:   # what QgisApp does (qgisapp.cpp)
        task = manager.task(task_id)
        if task is not None and status in (QgsTask.Complete, QgsTask.Terminated):
            iface.bar.pushMessage("Task complete" if status == QgsTask.Complete
                                  else "Task failed", task.description(), Qgis.Info)

    manager.statusChanged.connect(qgis_notice)
    try:
        task = jobs.start(SelfTestJob(steps=2000 if cancel else 3, delay=0.01), "Self-test run")
        if cancel:
            assert pump_until(lambda: task.progress() > 0, 30)
            task.cancel()
        assert wait_for(task, 60) == ("cancelled" if cancel else "succeeded")
        pump_until(lambda: False, 0.3)
    finally:
        manager.statusChanged.disconnect(qgis_notice)
    texts = [(item.title(), item.text()) for item in iface.bar.items()]
    assert [t for t in texts if t[0] in ("Task complete", "Task failed")] == []
    ours = [text for _title, text in texts if text.startswith("Self-test run")]
    assert len(ours) == 1, texts
    assert ours[0].startswith("Self-test run: cancelled" if cancel else "Self-test run: finished")


def test_finished_training_names_the_models_folder_not_the_label_rasters():
    """A training announces label rasters (in its log folder) before its models: the message
    names the models' folder first; the label rasters are left out."""
    from plugin.gui import messages

    artifacts = [("log_folder", "/w/logs"), ("label_raster", "/w/logs/label_rasters/r1.tif"),
                 ("best_model", "/w/models/m.dltmodel.safetensors"),
                 ("last_model", "/w/models/m_last.dltmodel.safetensors"),
                 ("report", "/w/logs/report.md")]
    paths = messages.output_paths({}, artifacts)
    assert paths == ["/w/models/m.dltmodel.safetensors", "/w/models/m_last.dltmodel.safetensors",
                     "/w/logs/report.md"]
    bar = _BarIface()
    messages.show_outputs(None, "x", paths)   # no iface: only logged
    messages.show_outputs(bar, "Training m: finished.", paths)
    text = bar.bar.currentItem().text()
    assert "m.dltmodel.safetensors, m_last.dltmodel.safetensors in /w/models" in text
    assert "label_rasters" not in text and "1 more" in text
