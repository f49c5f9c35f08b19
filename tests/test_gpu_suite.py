"""bench/gpu_suite.py keeps working on the CPU (tiny sizes): a row per family, every forced
out-of-memory ends in a UserError, the paths it could not exercise are named; build.py
gpu-wheels asks pip for every wheel a bare CUDA machine lacks."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)   # about 45 s on 2 idle cores
def test_tiny_suite_runs_every_family_on_the_cpu(capsys):
    suite_mod = _load("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    suite = suite_mod.run_suite("cpu", tiny=True)
    families = {r.family for r in suite.rows}
    assert set(suite_mod.FAMILIES) <= families
    failed = [(r.path, r.note) for r in suite.rows if not r.ok]
    assert failed == []
    for fam in suite_mod.FAMILIES:   # training and classify measured against the bare path
        measured = [r for r in suite.rows if r.family == fam and r.ours and r.bare]
        assert any(r.path.startswith("train") for r in measured), fam
        assert any(not r.path.startswith("train") for r in measured), fam
        oom = [r for r in suite.rows if r.family == fam and r.path.startswith("OOM")]
        assert oom and all(r.note.startswith("UserError: The ") for r in oom), fam
    auto = [r for r in suite.rows if r.path.startswith("classify_pixels BATCH_SIZE 0")]
    assert len(auto) == 1
    ddp = next(r for r in suite.rows if r.path == "dltrain run --processes 1")
    assert ddp.note.startswith("gloo, DistributedDataParallel")
    text = suite_mod.table(suite)
    assert "Not exercised:" in text and "NCCL" in text and "CUDA" in text
    assert text.count("\n") >= len(suite.rows) + 3


def _requirement_names(dist: str) -> set[str]:
    """Names ``dist`` needs on Linux x86-64, Python 3.12 (extras and other platforms left out)."""
    from packaging.markers import Marker

    env = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux",
           "platform_machine": "x86_64", "extra": ""}
    out = set()
    for req in importlib.metadata.distribution(dist).requires or []:
        name, _, marker = req.partition(";")
        if marker and not Marker(marker.strip()).evaluate(env):
            continue
        out.add(re.split(r"[ <>=!~\[(]", name.strip(), maxsplit=1)[0])
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_gpu_wheels_fetch_what_the_core_needs_beside_torch(tmp_path):
    build = _load("build_for_gpu_wheels", ROOT / "build.py")
    download, install = build.gpu_wheels_commands(tmp_path, "3.12", "0.26.0")
    assert download[1:4] == ["-m", "pip", "download"]
    for flag in ("--no-deps", "--only-binary=:all:"):
        assert flag in download
    assert download[download.index("--python-version") + 1] == "3.12"
    assert [download[i + 1] for i, a in enumerate(download) if a == "--platform"] == list(
        build.GPU_PLATFORMS)
    assert download[download.index("-c") + 1] == str(ROOT / "constraints.txt")
    assert download[download.index("-d") + 1] == str(tmp_path)
    assert "torchvision==0.26.0" in download and "protobuf==7.36.2" in download
    assert install[-2:] == ["-r", ".whl/gpu-requirements.txt"] and "--no-index" in install
    fetched = {_norm(n) for n in build.GPU_WHEELS}
    # every runtime dependency of the package but torch/torchvision, and theirs, is fetched
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {_norm(re.split(r"[ <>=!~\[]", d, maxsplit=1)[0]) for d in deps}
    beside_torch = {"torch", "torchvision"}
    torch_side = {_norm(n) for n in _requirement_names("torch") | _requirement_names(
        "torchvision")} | beside_torch
    seen: set[str] = set()
    todo = wanted - beside_torch
    while todo:
        name = todo.pop()
        seen.add(name)
        try:
            todo |= {_norm(n) for n in _requirement_names(name)} - seen - torch_side
        except importlib.metadata.PackageNotFoundError:
            pass
    assert seen - fetched == set()
