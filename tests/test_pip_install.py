"""`pip install .` alone gives a working `dltrain` (GPU-server recipe, README): a fresh virtual
environment WITHOUT system site packages (so no QGIS, no GDAL Python bindings) gets the project and
its dependencies from pip, then labels, trains and classifies a tiny job with `dltrain run`.

Slow (marked): 441 s measured on the shared 2-core CI machine (pip resolving, downloading and
unpacking rasterio, pyogrio, shapely, pyproj, smp, timm, onnxruntime, …). torch itself (several GB
with its CUDA libraries) is taken as preinstalled, as on GPU images that ship it: the venv gets a
.pth file naming a folder that links only torch, torchvision, triton and the NVIDIA/CUDA wheels
of the test runner's environment (pip then sees them installed). DLTRAINER_TEST_TORCH=pip makes
pip install torch as well.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SETUP = """
import json, sys
from pathlib import Path
from plugin.core.demo import make_sample_project
scene, project = make_sample_project(Path(sys.argv[1]), 128)
print(json.dumps({"raster": str(scene.raster), "project": str(project)}))
"""
PREINSTALLED = ("torch", "torchvision", "torchgen", "functorch", "triton", "nvidia", "cuda")


def _preinstall_torch(venv: Path) -> None:
    """Make this environment's torch stack (only it) visible to the new venv through a .pth."""
    if os.environ.get("DLTRAINER_TEST_TORCH") == "pip":
        return
    import torch

    site = Path(torch.__file__).resolve().parent.parent
    links = venv / "torch_stack"
    links.mkdir()
    for entry in site.iterdir():
        stem = entry.name.lower().split("-")[0].split(".")[0]
        if stem in PREINSTALLED or stem.startswith(("nvidia_", "cuda_")):
            (links / entry.name).symlink_to(entry.resolve())
    (next((venv / "lib").glob("python3*")) / "site-packages" / "torch_stack.pth").write_text(
        f"{links}\n")


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
    _preinstall_torch(venv)
    _run([py, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", ROOT],
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
