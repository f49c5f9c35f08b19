"""Run a bench script once per code version (this checkout, an older checkout such as
/work/main) and collect each run's JSON result, so the old and the new defaults are measured by
the same script on the same data and printed side by side.

A script supports it with ``add_code_args(parser)``, ``use_code(args)`` before importing the
plugin, and ``write_json(args, result)`` at the end.

``--seeds S [S …]`` runs each version once per seed (each a fresh process with ``--seed S``) and
shows every seed's column and their mean; ``--results DIR`` keeps each run's JSON
(``<version>_s<seed>.json``) and reuses those already there, so the runs of a long comparison
can be made one at a time (e.g. one seed per turn of a shared machine) and shown together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_code_args(ap) -> None:
    ap.add_argument("--code", default=str(ROOT),
                    help="repository root whose plugin/ is measured (default: this one)")
    ap.add_argument("--json", default="", help="write the result here (JSON)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a job field (exploring other settings than the defaults)")
    ap.add_argument("--old", default="",
                    help="also measure this older repository root (e.g. /work/main) and print "
                         "both side by side")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="run once per seed (fresh processes) and show each and the mean")
    ap.add_argument("--results", default="",
                    help="folder keeping each run's JSON; runs found there are not repeated")


def use_code(args) -> None:
    """Import ``plugin`` from ``args.code``."""
    sys.path.insert(0, str(Path(args.code).resolve()))


def overrides(args) -> dict:
    """{field: value} of ``--set FIELD=VALUE`` (numbers and true/false parsed as JSON)."""
    out = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def write_json(args, result) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


def run_versions(script: str, argv: list[str], versions: dict[str, str],
                 seeds: list[int] | None = None, results: str = "") -> dict[str, object]:
    """{label: the JSON result of ``script argv --code root``} for each {label: root}; with
    ``seeds`` {"<label> s<seed>": result} per seed and {"<label> mean": :func:`mean_result`}.
    ``results``: a folder where each run's JSON is kept and found again (not rerun)."""
    out: dict[str, object] = {}
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")   # nothing written into other roots
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(results or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for label, root in versions.items():
            runs = []
            for seed in seeds if seeds else [None]:
                name = label if seed is None else f"{label} s{seed}"
                path = folder / (name.replace(" ", "_") + ".json")
                if not (results and path.is_file()):
                    cmd = [sys.executable, script, *argv, "--code", root, "--json", str(path)]
                    if seed is not None:
                        cmd += ["--seed", str(seed)]
                    print(f"[{name}] {' '.join(cmd)}", flush=True)
                    subprocess.run(cmd, check=True, env=env)
                out[name] = json.loads(path.read_text(encoding="utf-8"))
                runs.append(out[name])
            if seeds and len(seeds) > 1:
                out[f"{label} mean"] = mean_result(runs)
    return out


def mean_result(runs: list[dict]) -> dict:
    """The mean of several runs' results, key by key (nested dicts too; integers stay integers
    when their mean is whole); values that are not numbers are the first run's."""
    out = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = mean_result([v for v in values if isinstance(v, dict)])
        elif isinstance(first, (int, float)) and not isinstance(first, bool) and all(
                isinstance(v, (int, float)) for v in values):
            mean = sum(values) / len(values)
            out[key] = int(mean) if all(isinstance(v, int) for v in values) and \
                mean == int(mean) else float(mean)
        else:
            out[key] = first
    return out


def strip_old(argv: list[str]) -> list[str]:
    """``argv`` without ``--old X`` / ``--code X`` / ``--json X`` / ``--results X`` and the
    seeds (``--seed S``, ``--seeds S …``: each run gets its own)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--old", "--code", "--json", "--results"):
            skip = True
            continue
        if a in ("--seeds", "--seed"):
            skip = None     # drop the numbers that follow
            continue
        if skip is None and a.lstrip("-").isdigit():
            continue
        skip = False
        if not a.startswith(("--old=", "--code=", "--json=", "--results=", "--seeds=",
                             "--seed=")):
            out.append(a)
    return out


def measure_versions(args, script: str, measure, show) -> None:
    """``show({"old": …, "new": …})`` of ``measure(args)`` run by ``script`` with the plugin of
    ``args.old`` and of this checkout when ``--old`` is given, else ``show({"this": …})`` of
    this run (written to ``--json`` too); with ``--seeds`` one column per version and seed and
    the mean of each version (:func:`run_versions`)."""
    if args.old or args.seeds:
        versions = {"old": args.old, "new": str(ROOT)} if args.old else {"this": args.code}
        show(run_versions(script, strip_old(sys.argv[1:]), versions, args.seeds,
                          args.results))
        return
    use_code(args)
    result = measure(args)
    write_json(args, result)
    show({"this": result})
