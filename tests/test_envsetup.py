"""Creating the dedicated ML environment: the exact commands, and running them (no QGIS)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from plugin.core import envsetup
from plugin.core.errors import JobCancelled, UserError
from plugin.core.pythonenv import DEDICATED_ENV

ROOT = Path(__file__).resolve().parent.parent


def test_commands_use_the_plugins_requirements_and_constraints(tmp_path):
    plugin = tmp_path / "plugin dir"
    plugin.mkdir()
    (plugin / "requirements.txt").write_text("torch\n")
    (plugin / "constraints.txt").write_text("torch==2.15.0\n")
    env = tmp_path / "env"
    commands = envsetup.setup_commands(env, plugin, python="/usr/bin/python3")
    py = str(env / "bin" / "python")
    assert commands == [
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(env)],
        [py, "-m", "pip", "install", "--upgrade", "pip"],
        [py, "-m", "pip", "install", "--progress-bar", "off", "-r",
         str(plugin / "requirements.txt"), "-c", str(plugin / "constraints.txt")],
    ]
    shown = envsetup.format_commands(commands).splitlines()
    assert shown[0] == f"/usr/bin/python3 -m venv --system-site-packages {env}"
    assert shown[2].endswith(f"-r '{plugin}/requirements.txt' -c '{plugin}/constraints.txt'")


def test_without_requirements_the_pinned_list_is_installed(tmp_path):
    commands = envsetup.setup_commands(tmp_path / "env", tmp_path)
    install = commands[-1]
    assert "-r" not in install and "numpy==1.26.4" in install and "torch==2.15.0" in install
    pins = dict(p.split("==") for p in envsetup.PINNED_PACKAGES)
    constraints = dict(line.split("==") for line in
                       (ROOT / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    assert {k: v for k, v in pins.items() if k in constraints} == \
        {k: constraints[k] for k in pins if k in constraints}


def test_default_environment_and_shipped_requirements():
    commands = envsetup.setup_commands()
    assert commands[0][-1] == str(DEDICATED_ENV)
    assert commands[0][:4] == [envsetup.base_python(), "-m", "venv", "--system-site-packages"]
    assert commands[-1][-4:] == ["-r", str(ROOT / "requirements.txt"),
                                 "-c", str(ROOT / "constraints.txt")]


def test_run_commands_streams_output_and_progress():
    lines, progress = [], []
    envsetup.run_commands([[sys.executable, "-c", "print('one'); print('two')"],
                           [sys.executable, "-c", "print('three')"]],
                          on_output=lines.append, on_progress=lambda d, t: progress.append(d))
    assert [ln for ln in lines if not ln.startswith("$ ")] == ["one", "two", "three"]
    assert lines[0].startswith("$ ") and "print" in lines[0]
    assert progress == [0, 1, 2]


def test_a_failing_command_names_itself():
    with pytest.raises(UserError, match=r"failed \(exit code 3\).*-c") as info:
        envsetup.run_commands([[sys.executable, "-c", "print('no space left'); exit(3)"],
                               [sys.executable, "-c", "print('never')"]])
    assert "no space left" in info.value.message
    with pytest.raises(UserError, match="Cannot run /nonexistent/python3"):
        envsetup.run_commands([["/nonexistent/python3", "-m", "venv", "x"]])


def test_cancel_terminates_a_silent_command():
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        envsetup.run_commands([[sys.executable, "-c", "import time; time.sleep(60)"]],
                              is_cancelled=cancel.is_set)
    assert time.monotonic() - started < 5


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs the system Python")
def test_the_venv_command_creates_an_environment_seeing_system_packages(tmp_path):
    env = tmp_path / "venv"
    first = envsetup.setup_commands(env, tmp_path)[0]
    envsetup.run_commands([first])
    python = envsetup.env_python(env)
    assert python.is_file()
    done = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(env)
    assert "include-system-site-packages = true" in (env / "pyvenv.cfg").read_text()
