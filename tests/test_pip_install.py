"""`pip install .` alone gives a working `dltrain` (GPU-server recipe, README): a fresh virtual
environment WITHOUT system site packages (so no QGIS, no GDAL Python bindings) gets the project and
its dependencies from pip, then labels, trains and classifies a tiny job with `dltrain run`.

Slow (marked): about 3–5 minutes on the 2-core CI machine with a warm pip cache, most of it pip
unpacking torch. Exact versions come from constraints.txt; torch/torchvision may be replaced by a
CPU build found in pip's find-links (DLTRAINER_TEST_TORCH="torch==X torchvision==Y" overrides), so
that the test does not download CUDA libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# CPU torch builds and the torchvision release made for each (torchvision's own table)
TORCHVISION_FOR = {"2.13": "0.28.0", "2.14": "0.29.0", "2.15": "0.30.0"}

SETUP = """
import json, sys
from pathlib import Path
from plugin.core.demo import make_sample_project
scene, project = make_sample_project(Path(sys.argv[1]), 128)
print(json.dumps({"raster": str(scene.raster), "project": str(project)}))
"""


def _cpu_torch_pins() -> list[str]:
    """Pins for a CPU torch wheel in pip's find-links folders, if there is one."""
    if os.environ.get("DLTRAINER_TEST_TORCH"):
        return os.environ["DLTRAINER_TEST_TORCH"].split()
    links = os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split()
    for folder in map(Path, links):
        for wheel in sorted(folder.glob("torch-*+cpu-*.whl")) if folder.is_dir() else []:
            version = wheel.name.split("-")[1]
            vision = TORCHVISION_FOR.get(".".join(version.split(".")[:2]))
            if vision:
                return [f"torch=={version}", f"torchvision=={vision}"]
    return []


def _constraints(folder: Path) -> Path:
    pins = _cpu_torch_pins()
    replaced = {p.split("==")[0] for p in pins}
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
             if line.split("==")[0].strip() not in replaced]
    out = folder / "constraints.txt"
    out.write_text("\n".join(lines + pins) + "\n")
    return out


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DLTRAINER_PYTHON")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", MPLBACKEND="Agg")
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def test_pip_only_install_labels_trains_and_classifies(tmp_path):
    venv = tmp_path / "venv"
    _run(["/usr/bin/python3", "-m", "venv", venv])  # no --system-site-packages
    py, dltrain = venv / "bin" / "python", venv / "bin" / "dltrain"
    _run([py, "-m", "pip", "install", "--quiet", "-c", _constraints(tmp_path), ROOT],
         cwd=tmp_path)
    # the environment really is bare: no QGIS, no GDAL bindings, the project comes from pip
    probe = _run([py, "-c", "import importlib.util as u, plugin; print(json.dumps("
                  "[bool(u.find_spec(m)) for m in ('osgeo', 'qgis')] + [plugin.__file__]))"
                  .replace("print(", "import json; print(", 1)], cwd=tmp_path)
    osgeo, qgis, where = json.loads(probe.stdout)
    assert (osgeo, qgis) == (False, False)
    assert str(venv) in where and not (Path(where).parent / "gui").exists()

    data = tmp_path / "data"
    made = json.loads(_run([py, "-c", SETUP, data], cwd=tmp_path).stdout.strip().splitlines()[-1])
    jobs = {
        "labels": ("build_label_rasters", {"project": made["project"],
                                           "output_folder": str(data / "labels")}),
        "train": ("train_pixel_segmentation", {
            "project": made["project"], "architecture": "unet", "encoder": "resnet18",
            "patch_size": 64, "epochs": 2, "batch_size": 4, "steps_per_epoch": 3,
            "output_model": str(data / "model.dltmodel.safetensors")}),
        "classify": ("classify_pixels", {
            "input": made["raster"], "model": str(data / "model.dltmodel.safetensors"),
            "output": str(data / "classes.tif"), "output_vector": str(data / "polygons.gpkg"),
            "device": "cpu"}),
    }
    for name, (kind, params) in jobs.items():
        job_file = tmp_path / f"{name}.json"
        _run([dltrain, "template", kind, "-o", job_file], cwd=tmp_path)
        job = json.loads(job_file.read_text())
        job["params"].update(params)
        job_file.write_text(json.dumps(job))
        _run([dltrain, "run", job_file], cwd=tmp_path)

    check = ("import rasterio, pyogrio, sys; ds = rasterio.open(sys.argv[1]); "
             "print(ds.crs.to_epsg(), ds.width, ds.read(1).max(), "
             "pyogrio.read_info(sys.argv[2])['features'])")
    epsg, width, top, polygons = _run([py, "-c", check, data / "classes.tif",
                                       data / "polygons.gpkg"]).stdout.split()
    assert int(width) == 128 and int(epsg) > 0 and int(top) >= 1 and int(polygons) >= 1
    assert (data / "model.dltmodel.safetensors").stat().st_size > 1e6
