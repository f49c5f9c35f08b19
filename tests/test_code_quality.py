"""The code stays lint-clean and the core stays free of QGIS imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_core_never_imports_qgis():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "plugin" / "core").rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+(qgis|PyQt5)\b", p.read_text(), re.M)]
    assert offenders == []


def test_plugin_entry_imports_nothing_heavy():
    code = ("import sys; import plugin; "
            "heavy = [m for m in ('torch', 'rasterio', 'qgis.core', 'numpy') if m in sys.modules];"
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_qgis_side_never_loads_the_ml_stack():
    """Every dialog, dock and algorithm module imports without torch, rasterio & co (they run in
    the worker process, never inside QGIS)."""
    code = """
import importlib, pkgutil, sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
import plugin.gui, plugin.processing
for package in (plugin.gui, plugin.processing):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
from plugin.processing.provider import DeepLearningTrainerProvider
DeepLearningTrainerProvider().loadAlgorithms()
heavy = ("torch", "rasterio", "safetensors", "scipy", "tensorboard", "onnxruntime",
         "segmentation_models_pytorch", "matplotlib")
print([m for m in heavy if m in sys.modules])
"""
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.stdout.strip().splitlines()[-1:] == ["[]"], done.stdout + done.stderr
