"""TensorBoard as a local server: free ports, the command, a real start/answer/stop, reuse."""

from __future__ import annotations

import socket
import sys

import pytest

from plugin.core.errors import UserError
from plugin.core.tensorboard_process import (
    HOST,
    TensorBoardProcess,
    answers,
    free_port,
    port_is_free,
    tensorboard_command,
    wait_until_answering,
)


def test_free_port_skips_a_busy_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        assert not port_is_free(taken)
        port = free_port(taken)
        assert port != taken and port_is_free(port)
        assert port > taken or port < 1024 or port > taken + 100
    assert free_port(taken) == taken  # free again once released
    assert free_port(taken, exclude={taken}) != taken


def test_command_binds_to_localhost_with_the_given_python(tmp_path):
    cmd = tensorboard_command("/env/bin/python", tmp_path / "logs", 6123)
    assert cmd[:3] == ["/env/bin/python", "-m", "tensorboard.main"]
    assert cmd[cmd.index("--logdir") + 1] == str(tmp_path / "logs")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "6123"


def test_wait_gives_up_when_nothing_answers():
    port = free_port(20000)
    assert not answers(f"http://{HOST}:{port}/", 0.2)
    assert not wait_until_answering(f"http://{HOST}:{port}/", timeout_s=0.6, poll_s=0.1)
    # a dead process ends the wait at once
    assert not wait_until_answering(f"http://{HOST}:{port}/", timeout_s=30, alive=lambda: False)


def test_tensorboard_starts_answers_on_localhost_and_stops(tmp_path):
    logdir = tmp_path / "run_logs"
    logdir.mkdir()
    server = TensorBoardProcess(logdir, sys.executable, free_port(16006))
    try:
        url = server.start().wait_ready(timeout_s=90)
        assert url == f"http://127.0.0.1:{server.port}/"
        assert answers(url)
        assert not port_is_free(server.port)
    finally:
        server.stop()
    assert not server.running
    assert wait_until_answering(f"http://127.0.0.1:{server.port}/", 0.5) is False


def test_a_python_without_tensorboard_gives_a_clear_error(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"No module named tensorboard\" >&2\nexit 1\n")
    fake.chmod(0o755)
    server = TensorBoardProcess(tmp_path, str(fake), free_port(17006))
    with pytest.raises(UserError, match="TensorBoard is not installed") as info:
        server.start().wait_ready(timeout_s=20)
    assert "pip install tensorboard" in info.value.fix
    missing = TensorBoardProcess(tmp_path, str(tmp_path / "nope" / "python"), 17007)
    with pytest.raises(UserError, match="Cannot start TensorBoard"):
        missing.start()


def test_manager_opens_the_browser_when_ready_reuses_and_stops(qgis_app, tmp_path):
    from plugin.gui.task import pump_until
    from plugin.gui.tensorboard import TensorBoardManager

    opened: list[str] = []
    manager = TensorBoardManager(open_url=opened.append, python=lambda: sys.executable,
                                 port=lambda: free_port(18006), timeout_s=90)
    run = tmp_path / "runs" / "model_logs"
    server = manager.open(run)
    assert run.is_dir() and server.running
    assert pump_until(lambda: bool(opened), 90), server.output_tail
    assert opened == [server.url] and manager.is_ready(run)
    # the same folder (or one inside it) reuses the running server
    assert manager.open(run) is server and manager.open(run / "tensorboard") is server
    assert opened == [server.url] * 3
    other = manager.open(tmp_path / "runs" / "second", browse=False)
    assert other is not server and other.port != server.port
    manager.close()  # what plugin unload does with the windows it keeps
    assert not server.running and not other.running and manager.servers == {}


def test_address_is_shown_and_a_missing_browser_is_said(qgis_app, qgis_iface, tmp_path,
                                                        monkeypatch):
    """No browser: the message bar still shows the address as a link, says the browser could
    not be opened, and the Training Model window shows it too; the picker starts at the last
    training's logs."""
    from qgis.core import Qgis
    from qgis.PyQt.QtWidgets import QFileDialog

    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob
    from plugin.gui import tensorboard
    from plugin.gui.tensorboard import TensorBoardManager
    from plugin.gui.training_window import TrainingWindow

    manager = TensorBoardManager(iface=qgis_iface, open_url=lambda url: False)
    job = TrainPixelSegmentationJob(output_model=str(tmp_path / "m.dltmodel.safetensors"))
    logdir = job.resolved_log_folder()
    window = TrainingWindow(None, job)
    window._watch(manager)
    manager.servers[logdir] = object()  # a server that answered (no process needed here)
    manager._browse_when_ready.add(logdir)
    manager._on_ready(logdir, "http://127.0.0.1:6123/")
    text = qgis_iface.messageBar().get_messages(Qgis.Warning)[-1]
    assert '<a href="http://127.0.0.1:6123/">http://127.0.0.1:6123/</a>' in text
    assert "no web browser could be opened" in text
    assert "http://127.0.0.1:6123/" in window.tensorboard_label.text()
    assert window.tensorboard_label.isVisibleTo(window)
    manager.servers.clear()
    tensorboard.remember_log_folder(logdir)
    starts = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda parent, title, start: starts.append(start) or ""))
    tensorboard.open_tensorboard(type("P", (), {"iface": None, "windows": {}})())
    assert starts == [logdir]
    window.close()
