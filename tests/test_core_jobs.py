"""The job framework: serialisation, validation, the worker process and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plugin.core.basic_jobs import EnvironmentReportJob, SelfTestJob
from plugin.core.errors import JobCancelled, UserError, WorkerError
from plugin.core.jobs import Job, RecordingContext, job_classes
from plugin.core.runner import WorkerRun, run_in_worker


def test_job_file_round_trip(tmp_path):
    job = SelfTestJob(steps=7, delay=0.0)
    path = tmp_path / "job.json"
    job.save(path)
    assert json.loads(path.read_text())["kind"] == "self_test"
    assert Job.load(path) == job


def test_bad_job_files_get_clear_messages(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Job.load(bad)
    bad.write_text(json.dumps({"params": {}}))
    with pytest.raises(UserError, match="no 'kind'"):
        Job.load(bad)
    bad.write_text(json.dumps({"kind": "nope", "params": {}}))
    with pytest.raises(UserError, match="Unknown job kind"):
        Job.load(bad)
    bad.write_text(json.dumps({"kind": "self_test", "params": {"stepz": 3}}))
    with pytest.raises(UserError, match="stepz"):
        Job.load(bad)
    bad.write_text(json.dumps({"kind": "self_test", "params": {"steps": "many"}}))
    with pytest.raises(UserError, match="not a whole number"):
        Job.load(bad)
    with pytest.raises(UserError, match="does not exist"):
        Job.load(tmp_path / "missing.json")


def test_range_checks_name_the_parameter_and_the_fix():
    problems = SelfTestJob(steps=0).problems()
    assert problems and "STEPS" in problems[0] and "1 or more" in problems[0]


def test_every_registered_job_has_a_title_and_default_round_trip():
    for kind, cls in job_classes().items():
        assert cls.title, kind
        job = cls()
        assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_in_process_run_reports_progress_in_order():
    ctx = RecordingContext()
    result = SelfTestJob(steps=4, delay=0).run(ctx)
    steps = [e["step"] for e in ctx.events if e["event"] == "progress"]
    assert steps == [1, 2, 3, 4] and result["completed"] == 4


def test_worker_streams_progress_in_order_and_returns_the_result():
    events: list[dict] = []
    result = run_in_worker(SelfTestJob(steps=5, delay=0.01), on_event=events.append)
    assert result == {"completed": 5, "cancelled": False}
    assert [e["step"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert events[-1]["metrics"]["value"] == 25.0


def test_worker_environment_report_names_torch():
    result = run_in_worker(EnvironmentReportJob())
    assert result["libraries"]["torch"]
    assert result["python"].startswith("3.")


def test_worker_cancel_stops_at_a_safe_point_and_keeps_partial_result():
    events: list[dict] = []
    run = WorkerRun(SelfTestJob(steps=500, delay=0.02), on_event=events.append).start()
    with pytest.raises(JobCancelled) as info:
        run.wait(is_cancelled=lambda: len(events) >= 3)
    partial = info.value.result  # type: ignore[attr-defined]
    assert 3 <= partial["completed"] < 500 and partial["cancelled"]


def test_worker_that_ignores_cancel_is_terminated():
    run = WorkerRun(SelfTestJob(steps=500, delay=0.05, ignore_cancel=True), cancel_grace_s=0.5)
    run.start()
    with pytest.raises(JobCancelled):
        run.wait(is_cancelled=lambda: True)
    assert not run.running


def test_crashing_worker_is_reported_not_fatal():
    with pytest.raises(WorkerError, match="exited with code 139"):
        run_in_worker(SelfTestJob(steps=5, delay=0, crash_at=2))


def test_user_errors_cross_the_process_boundary():
    with pytest.raises(UserError, match="STEPS"):
        run_in_worker(SelfTestJob(steps=-3))


def test_missing_python_is_a_clear_error():
    with pytest.raises(UserError, match="Settings"):
        run_in_worker(SelfTestJob(), python="/nonexistent/python")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plugin.cli", *args], capture_output=True,
                          text=True, cwd=str(__import__("pathlib").Path(__file__).parent.parent))


def test_cli_template_then_run(tmp_path):
    job_file = tmp_path / "job.json"
    assert _cli("template", "self_test", "-o", str(job_file)).returncode == 0
    done = _cli("run", str(job_file), "--set", "steps=3", "--set", "delay=0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["completed"] == 3
    assert "[step 3/3]" in done.stderr


def test_cli_bad_job_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    done = _cli("run", str(bad))
    assert done.returncode == 2
    assert "error: This is not a job description" in done.stderr
    assert "Traceback" not in done.stderr
