"""build.py: packaging rules, profile deployment, idempotent setup."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("build", ROOT / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def test_package_passes_the_plugin_repository_rules():
    assert build.cmd_package() == 0
    target = ROOT / "dist" / "deep_learning_trainer.zip"
    assert build.check_zip(target) == []
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    assert "deep_learning_trainer/core/worker.py" in names
    assert "deep_learning_trainer/resources/icons/icon.svg" in names


def test_zip_check_rejects_what_the_repository_rejects(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("deep_learning_trainer/__init__.py", "")
        archive.writestr("deep_learning_trainer/__pycache__/x.pyc", "")
        archive.writestr("other/readme.txt", "")
    problems = " ".join(build.check_zip(bad))
    assert "exactly one top folder" in problems
    assert "metadata.txt" in problems and "LICENSE" in problems and "__pycache__" in problems


def test_metadata_has_every_required_field():
    assert build.check_metadata((ROOT / "metadata.txt").read_text()) == []
    assert "lacks 'email'" in " ".join(build.check_metadata("[general]\nname=x\n"))


def test_ini_editing_keeps_other_settings(tmp_path):
    ini = tmp_path / "QGIS3.ini"
    ini.write_text("[PythonPlugins]\nother=true\n\n[qgis]\nfoo=bar\n")
    build.set_ini_value(ini, "PythonPlugins", "deep_learning_trainer", "true")
    build.set_ini_value(ini, "PythonPlugins", "deep_learning_trainer", "true")
    text = ini.read_text()
    assert text.count("deep_learning_trainer=true") == 1
    assert "other=true" in text and "foo=bar" in text


@pytest.mark.parametrize("link", [False, True])
def test_deploy_installs_and_enables(tmp_path, monkeypatch, link):
    monkeypatch.setenv("QGIS_PROFILES_DIR", str(tmp_path))
    args = type("A", (), {"profile": "p1", "link": link})()
    assert build.cmd_deploy(args) == 0
    target = tmp_path / "p1" / "python" / "plugins" / "deep_learning_trainer"
    assert (target / "__init__.py").exists() and (target / "metadata.txt").exists()
    assert (target / "resources" / "icons" / "icon.svg").exists()
    ini = (tmp_path / "p1" / "QGIS" / "QGIS3.ini").read_text()
    assert "deep_learning_trainer=true" in ini
    # The installed package imports under its slug, and the worker it starts finds it too.
    code = ("import deep_learning_trainer.core.runner as r;"
            "import deep_learning_trainer.core.basic_jobs as b;"
            "print(r.run_in_worker(b.SelfTestJob(steps=2, delay=0))['completed'])")
    env = {"PATH": "/usr/bin:/bin", "DLTRAINER_PYTHON": sys.executable,
           "PYTHONPATH": str(target.parent)}
    done = subprocess.run([sys.executable, "-c", code], cwd=target.parent, capture_output=True,
                          text=True, env=env)
    assert done.stdout.strip() == "2", done.stderr


def test_setup_is_idempotent_and_fast():
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "build.py"), "setup"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install" not in done.stdout
    assert time.monotonic() - started < 30
