"""The layout rules of plugin/core, and the family table as the one place that says what exists.

- import-linter's contracts (pyproject.toml): the core never imports QGIS, Qt, the GUI or
  Processing; no model family imports another; the shared layers import no family.
- No import circle in plugin/core, counting imports made inside functions (grimp's graph).
- Every row of the family table resolves: its jobs register the kinds it names, its training
  task, model loader and ONNX export exist, and the Training Model window's tool is its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plugin.core import families
from plugin.core.errors import UserError
from plugin.core.families import FAMILIES
from plugin.core.jobs import job_classes

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                out.append(sorted(component))
    return sorted(out, key=len, reverse=True)


def test_strongly_connected_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph)[0] == ["a", "b", "c"]


def test_no_import_circle_in_the_core():
    """Imports inside functions count: they close circles at run time just the same. A package
    counts as importing its ``__init__`` only through its own import lines."""
    import grimp

    graph = grimp.build_graph("plugin", include_external_packages=False, cache_dir=None)
    core = {m for m in graph.modules if m == "plugin.core" or m.startswith("plugin.core.")}
    edges = {m: {t for t in graph.find_modules_directly_imported_by(m) if t in core}
             for m in core}
    circles = [c for c in strongly_connected(edges) if len(c) > 1]
    assert not circles, f"import circles in plugin/core: {circles}"


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.task)
def test_family_row_resolves(fam):
    kinds = job_classes()
    for kind in fam.job_kinds:
        assert kind in kinds, f"{fam.title}: job kind {kind!r} is not registered"
    assert kinds[fam.train_kind].__module__.endswith(fam.jobs_module)
    assert families.family_of_kind(fam.train_kind) is fam
    task = families.make_task(fam.train_kind)
    assert task.name == fam.task
    assert callable(families.load_function(fam.task))
    assert callable(families.card_check_function(fam.task))
    export = families.export_function(fam.task)
    assert (export is not None) == bool(fam.exporter)
    assert fam.window_tool is not None and fam.window_tool.kind in fam.classify_kinds
    for tool in (fam.train_tool, *fam.classify_tools):
        assert tool is not None and tool.kind in fam.job_kinds


def test_family_folders_have_the_same_file_names():
    """A newcomer who knows one family folder knows where to look in the next."""
    core = ROOT / "plugin" / "core"
    for fam in FAMILIES:
        folder = core / fam.jobs_module.split(".")[0]
        names = {p.stem for p in folder.glob("*.py")}
        for name in ("jobs", "task", "data", "network", "modelfile",
                     "export" if fam.exporter else "jobs"):
            assert name in names, f"{folder.name}/ lacks {name}.py"
        assert any(n.startswith("predict") for n in names), f"{folder.name}/ lacks predict*.py"


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.task)
def test_invalid_model_message_names_the_family(fam, tmp_path):
    from plugin.core.modelfile import read_model_card

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a valid model file") as info:
        read_model_card(junk, fam.task)
    assert f"Train {fam.title}" in info.value.fix
    for other in FAMILIES:
        assert other is fam or f"Train {other.title}" not in info.value.fix


def test_an_unknown_task_is_refused_before_loading(tmp_path):
    import json

    from safetensors.numpy import save_file

    from plugin.core.modelfile import FORMAT, load_model

    card = {"task": "weather_forecast", "classes": [{"id": 0, "name": "a"}], "bands": 1,
            "mean": [0.0], "std": [1.0]}
    path = tmp_path / "m.safetensors"
    import numpy as np

    save_file({"w": np.zeros(1, np.float32)}, str(path),
              metadata={"format": FORMAT, "format_version": "1", "card": json.dumps(card)})
    with pytest.raises(UserError, match="does not know"):
        load_model(path)
