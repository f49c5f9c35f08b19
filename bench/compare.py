"""Run a bench script once per code version (this checkout, an older checkout such as
/work/main) and collect each run's JSON result, so the old and the new defaults are measured by
the same script on the same data and printed side by side.

A script supports it with ``add_code_args(parser)``, ``use_code(args)`` before importing the
plugin, and ``write_json(args, result)`` at the end.
"""

from __future__ import annotations

import json
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


def run_versions(script: str, argv: list[str], versions: dict[str, str]) -> dict[str, object]:
    """{label: the JSON result of ``script argv --code root``} for each {label: root}."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, root in versions.items():
            path = Path(tmp) / f"{label}.json"
            cmd = [sys.executable, script, *argv, "--code", root, "--json", str(path)]
            print(f"[{label}] {' '.join(cmd)}", flush=True)
            subprocess.run(cmd, check=True)
            out[label] = json.loads(path.read_text(encoding="utf-8"))
    return out


def strip_old(argv: list[str]) -> list[str]:
    """``argv`` without ``--old X`` / ``--code X`` / ``--json X``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--old", "--code", "--json"):
            skip = True
            continue
        if not a.startswith(("--old=", "--code=", "--json=")):
            out.append(a)
    return out


def measure_versions(args, script: str, measure, show) -> None:
    """``show({"old": …, "new": …})`` of ``measure(args)`` run by ``script`` with the plugin of
    ``args.old`` and of this checkout when ``--old`` is given, else ``show({"this": …})`` of
    this run (written to ``--json`` too)."""
    if args.old:
        show(run_versions(script, strip_old(sys.argv[1:]), {"old": args.old, "new": str(ROOT)}))
        return
    use_code(args)
    result = measure(args)
    write_json(args, result)
    show({"this": result})
