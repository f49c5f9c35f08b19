"""The real QGIS desktop under Xvfb: deployed with build.py, the plugin loads and shows its menu."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.desktop,
              pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("qgis")),
                                 reason="needs Xvfb and the QGIS desktop (build.py setup)")]

PROBE = r'''
import json, traceback
from qgis.utils import iface, active_plugins
from qgis.core import QgsApplication
out = {}
try:
    bar = iface.mainWindow().menuBar()
    menus = {}
    for action in bar.actions():
        menu = action.menu()
        if menu is None:
            continue
        entries = []
        for a in menu.actions():
            if a.menu() is not None:
                entries.append({a.text(): [b.text() for b in a.menu().actions()]})
            elif a.text():
                entries.append(a.text())
        menus[action.text()] = entries
    out["menus"] = menus
    out["active_plugins"] = list(active_plugins)
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("dltrainer")
    out["provider"] = None if provider is None else [a.id() for a in provider.algorithms()]
except Exception:
    out["error"] = traceback.format_exc()
open(OUT_PATH, "w").write(json.dumps(out))
'''


def _load_build():
    spec = importlib.util.spec_from_file_location("build", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_display() -> int:
    for number in range(90, 140):
        if not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


def test_plugin_loads_in_the_real_desktop(tmp_path, monkeypatch):
    build = _load_build()
    profiles = tmp_path / "profiles"
    monkeypatch.setenv("QGIS_PROFILES_DIR", str(profiles))
    args = type("A", (), {"profile": "dltest", "link": True})()
    assert build.cmd_deploy(args) == 0

    result = tmp_path / "probe.json"
    probe = tmp_path / "probe.py"
    probe.write_text(f"OUT_PATH = {str(result)!r}\n" + PROBE)
    display = _free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1400x900x24", "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update({"DISPLAY": f":{display}", "DLTRAINER_PYTHON": str(ROOT / ".venv/bin/python"),
                "PATH": build.system_path()})
    qgis = None
    try:
        time.sleep(1.0)
        qgis = subprocess.Popen(
            ["qgis", "--profiles-path", str(tmp_path), "--profile", "dltest", "--nologo",
             "--noversioncheck", "--code", str(probe)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 150
        while not result.exists() and time.monotonic() < deadline and qgis.poll() is None:
            time.sleep(0.5)
        time.sleep(0.5)
        if shutil.which("import"):
            subprocess.run(["import", "-display", f":{display}", "-window", "root",
                            str(tmp_path / "desktop.png")], timeout=30, check=False)
    finally:
        if qgis is not None and qgis.poll() is None:
            os.killpg(qgis.pid, 9)
        log = qgis.stdout.read().decode(errors="replace")[-3000:] if qgis else ""
        xvfb.kill()
    assert result.exists(), f"QGIS did not run the probe; its output:\n{log}"
    found = json.loads(result.read_text())
    assert "error" not in found, found.get("error")
    assert "deep_learning_trainer" in found["active_plugins"]
    menu = found["menus"].get("&Deep Learning") or found["menus"].get("Deep Learning")
    assert menu, f"no Deep Learning menu in {list(found['menus'])}"
    flat = json.dumps(menu)
    assert "Settings" in flat
    assert found["provider"] and "dltrainer:selftest" in found["provider"]
