#!/usr/bin/env python3
"""One entry point for people and CI (standard library only).

    python3 build.py setup                      system packages, Python environment, pinned deps
    python3 build.py test [PYTEST ARGS]         setup, then the whole test suite
    python3 build.py demo [--output DIR]        setup, then label -> train -> classify on the sample
    python3 build.py package                    dist/deep_learning_trainer.zip, checked
    python3 build.py deploy [--profile NAME] [--link]   install into a QGIS profile and enable it
    python3 build.py qgis [--profile NAME]      open QGIS with the plugin and the sample loaded
    python3 build.py gpu-wheels [--dest .whl]   wheels a bare CUDA machine (torch only) lacks
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
SLUG = "deep_learning_trainer"
SYSTEM_PYTHON = "/usr/bin/python3"
APT_PACKAGES = ["python3-qgis", "qgis-providers", "qgis", "xvfb", "xauth", "python3-venv",
                "imagemagick"]
ZIP_LIMIT = 25 * 2**20
METADATA_REQUIRED = ["name", "qgisMinimumVersion", "description", "about", "version", "author",
                     "email", "repository", "tracker"]


def say(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    say("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


# -- setup -------------------------------------------------------------------------------------
def missing_apt_packages() -> list[str]:
    if not shutil.which("dpkg-query"):
        return []
    missing = []
    for name in APT_PACKAGES:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                             capture_output=True, text=True)
        if "install ok installed" not in out.stdout:
            missing.append(name)
    return missing


def ensure_system_packages() -> None:
    missing = missing_apt_packages()
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("missing system packages; run as root:\n  apt-get update && "
            + " ".join(command))
        sys.exit(1)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(command, env=env)


def requirements_stamp() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if not PY.exists():
        if not Path(SYSTEM_PYTHON).exists():
            say(f"{SYSTEM_PYTHON} not found: this needs Debian's Python with QGIS bindings.")
            sys.exit(1)
        run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", VENV])
    stamp_file = VENV / ".dltrainer-requirements"
    stamp = requirements_stamp()
    if not stamp_file.exists() or stamp_file.read_text() != stamp:
        run([PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", ROOT / "requirements.txt", "-c", ROOT / "constraints.txt"])
        stamp_file.write_text(stamp)
    dltrain = VENV / "bin" / "dltrain"
    script = (f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" '
              f'exec "{PY}" -m plugin.cli "$@"\n')
    if not dltrain.exists() or dltrain.read_text() != script:
        dltrain.write_text(script)
        dltrain.chmod(0o755)


def cmd_setup(_args=None) -> None:
    ensure_system_packages()
    ensure_venv()
    say(f"environment ready: {PY} (dltrain: {VENV / 'bin' / 'dltrain'})")


# -- test / demo ---------------------------------------------------------------------------------
def system_path() -> str:
    """PATH without pyenv's folders: QGIS's embedded Python finds its home through PATH, and a
    pyenv interpreter found first makes it lose Debian's packages (and the qgis module)."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and ".pyenv" not in p]
    return os.pathsep.join([str(VENV / "bin"), *parts])


def test_env() -> dict:
    env = {**os.environ, "PATH": system_path(), "QT_QPA_PLATFORM": "offscreen",
           "DLTRAINER_PYTHON": str(PY),
           "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
    env.setdefault("XDG_RUNTIME_DIR", "/tmp/runtime-" + str(os.getuid()))
    Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    return env


def cmd_test(args) -> int:
    cmd_setup()
    return subprocess.call([str(PY), "-m", "pytest", *args.pytest_args], cwd=ROOT,
                           env=test_env())


def cmd_demo(args) -> int:
    cmd_setup()
    out = Path(args.output).resolve()
    return subprocess.call([str(PY), "-m", "plugin.cli", "demo", "--output", str(out)],
                           cwd=ROOT, env=test_env())


# -- gpu-wheels ----------------------------------------------------------------------------------
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# What a CUDA machine that has torch (and torchvision, which must match its torch) lacks to run
# `dltrain` and bench/gpu_suite.py: pyproject.toml's dependencies but torch and torchvision, and
# their own dependencies (pip download cannot resolve them without fetching torch again, hence
# --no-deps and this list). Versions: constraints.txt where pinned, GPU_WHEEL_PINS, else newest.
GPU_WHEELS = (
    "numpy", "affine", "rasterio", "attrs", "certifi", "click", "cligj", "click-plugins",
    "pyparsing", "shapely", "pyproj", "pyogrio", "packaging", "scipy",
    "segmentation-models-pytorch", "timm", "huggingface_hub", "hf-xet", "httpx2", "httpcore2",
    "h11", "anyio", "idna", "truststore", "pyyaml", "tqdm", "safetensors", "torchmetrics",
    "lightning-utilities", "tensorboard", "tensorboard-data-server", "absl-py", "grpcio",
    "markdown", "werkzeug", "markupsafe", "protobuf", "onnx", "ml-dtypes", "onnxruntime",
    "flatbuffers", "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver",
    "python-dateutil", "six", "pillow", "pycocotools", "typing-extensions", "optuna",
    "alembic", "sqlalchemy", "mako", "colorlog",
)
# dependencies of dependencies whose newest release would not fit (tensorboard: protobuf < 8;
# httpx2 2.17.0: httpcore2 == 2.17.0; huggingface_hub: click < 9; contourpy 1.4: numpy 2;
# python-dateutil 4: tzdata). typing-extensions is fetched too: anyio wants a newer one than
# torch brings. Checked with `pip install --dry-run` on Python 3.12 beside torch 2.11.
GPU_WHEEL_PINS = ("protobuf==7.36.2", "httpx2==2.17.0", "httpcore2==2.17.0", "click==8.5.1",
                  "hf-xet==1.8.0", "tensorboard-data-server==0.7.2", "grpcio==1.85.3",
                  "lightning-utilities==0.15.3", "ml-dtypes==0.5.4", "contourpy==1.3.3",
                  "python-dateutil==2.9.0.post0")


def gpu_wheels_commands(dest: Path, python: str = GPU_PYTHON, torchvision: str = ""
                        ) -> tuple[list[str], list[str]]:
    """(the pip download command run here, the pip install command run on the CUDA machine from
    the repository root). ``torchvision``: a version to fetch too (the machine's torch's)."""
    pins = {re.split(r"[=<>]", p)[0]: p for p in GPU_WHEEL_PINS}
    names = [pins.get(n, n) for n in GPU_WHEELS]
    if torchvision:
        names.append(f"torchvision=={torchvision}")
    download = [str(PY if PY.exists() else sys.executable), "-m", "pip", "download",
                "--no-deps", "--only-binary=:all:", "--python-version", python,
                "--implementation", "cp"]
    for platform in GPU_PLATFORMS:
        download += ["--platform", platform]
    download += ["-c", str(ROOT / "constraints.txt"), "-d", str(dest), *names]
    install = ["python3", "-m", "pip", "install", "--no-index", "--find-links", ".whl",
               "-r", ".whl/gpu-requirements.txt"]
    return download, install


def cmd_gpu_wheels(args) -> int:
    dest = Path(args.dest).resolve()
    download, install = gpu_wheels_commands(dest, args.python, args.torchvision)
    dest.mkdir(parents=True, exist_ok=True)
    names = list(GPU_WHEELS) + (["torchvision"] if args.torchvision else [])
    (dest / "gpu-requirements.txt").write_text("\n".join(names) + "\n")
    run(download)
    say(f"wheels in {dest}; copy the repository with {dest.name}/ to the CUDA machine and run "
        "there, from its root:\n  " + " ".join(install)
        + "\n  python3 bench/gpu_suite.py --json gpu_suite.json")
    return 0


# -- package ---------------------------------------------------------------------------------
def plugin_files() -> list[tuple[Path, str]]:
    """(source, path inside the zip) for everything the installed plugin needs."""
    files = []
    for path in sorted((ROOT / "plugin").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((path, f"{SLUG}/{path.relative_to(ROOT / 'plugin').as_posix()}"))
    for path in sorted((ROOT / "resources").rglob("*")):
        if path.is_file():
            files.append((path, f"{SLUG}/{path.relative_to(ROOT).as_posix()}"))
    for name in ("metadata.txt", "LICENSE", "README.md", "requirements.txt", "constraints.txt"):
        files.append((ROOT / name, f"{SLUG}/{name}"))
    return files


def check_metadata(text: str) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(text)
    if "general" not in parser:
        return ["metadata.txt has no [general] section"]
    general = parser["general"]
    problems = [f"metadata.txt lacks '{key}'" for key in METADATA_REQUIRED
                if not general.get(key, "").strip()]
    if general.get("hasProcessingProvider", "").strip().lower() != "yes":
        problems.append("metadata.txt must say hasProcessingProvider=yes")
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", general.get("version", "").strip()):
        problems.append("metadata.txt version must look like 1.2.3")
    return problems


def check_zip(path: Path) -> list[str]:
    """The plugins.qgis.org rules a zip must pass (empty list when it does)."""
    problems = []
    if path.stat().st_size >= ZIP_LIMIT:
        problems.append(f"zip is {path.stat().st_size / 2**20:.1f} MB (limit 25 MB)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        tops = {n.split("/", 1)[0] for n in names}
        if tops != {SLUG}:
            problems.append(f"zip must hold exactly one top folder '{SLUG}', found {sorted(tops)}")
        for required in ("__init__.py", "metadata.txt", "LICENSE"):
            if f"{SLUG}/{required}" not in names:
                problems.append(f"zip lacks {SLUG}/{required}")
        for name in names:
            parts = name.split("/")
            if "__pycache__" in parts or name.endswith(".pyc") or ".git" in parts:
                problems.append(f"zip must not contain {name}")
        if f"{SLUG}/metadata.txt" in names:
            problems += check_metadata(archive.read(f"{SLUG}/metadata.txt").decode("utf-8"))
    return problems


def cmd_package(_args=None) -> int:
    dist = ROOT / "dist"
    dist.mkdir(exist_ok=True)
    target = dist / f"{SLUG}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for source, name in plugin_files():
            archive.write(source, name)
    problems = check_zip(target)
    for problem in problems:
        say("FAIL: " + problem)
    if problems:
        return 1
    say(f"wrote {target} ({target.stat().st_size / 2**10:.0f} KiB); passes the plugin checks")
    return 0


# -- deploy / qgis -----------------------------------------------------------------------------
def profile_dir(profile: str) -> Path:
    base = os.environ.get("QGIS_PROFILES_DIR")
    root = Path(base) if base else Path.home() / ".local/share/QGIS/QGIS3/profiles"
    return root / profile


def set_ini_value(ini: Path, section: str, key: str, value: str) -> None:
    """Set ``key=value`` in a Qt INI file, leaving every other line as it is."""
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.exists() else []
    header = f"[{section}]"
    if header not in lines:
        lines += ["", header, f"{key}={value}"]
    else:
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        for i in range(start, end):
            if lines[i].split("=", 1)[0].strip() == key:
                lines[i] = f"{key}={value}"
                break
        else:
            lines.insert(end if end == len(lines) else end, f"{key}={value}")
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("\n".join(lines).strip("\n") + "\n", encoding="utf-8")


def cmd_deploy(args) -> int:
    profile = profile_dir(args.profile)
    target = profile / "python" / "plugins" / SLUG
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if args.link:  # a real folder of links: edits in the repository show up in QGIS
        for item in sorted((ROOT / "plugin").iterdir()):
            if item.name != "__pycache__":
                (target / item.name).symlink_to(item)
        for name in ("resources", "metadata.txt", "LICENSE", "requirements.txt",
                     "constraints.txt"):
            (target / name).symlink_to(ROOT / name)
    else:
        for source, name in plugin_files():
            out = target / name.split("/", 1)[1]
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out)
    ini = profile / "QGIS" / "QGIS3.ini"
    set_ini_value(ini, "PythonPlugins", SLUG, "true")
    if PY.exists():
        set_ini_value(ini, SLUG, "python", str(PY))
    say(f"deployed to {target} ({'linked' if args.link else 'copied'}); enabled in {ini}")
    return 0


def qgis_binary() -> str:
    return shutil.which("qgis") or "/usr/bin/qgis"


OPEN_SAMPLE = """
from qgis.utils import plugins
plugin = plugins.get("deep_learning_trainer")
if plugin is not None:
    from deep_learning_trainer.gui.labeling.dock import open_labeling_tool
    open_labeling_tool(plugin).open_project({project!r})
"""


def cmd_qgis(args) -> int:
    cmd_setup()
    args.link = True
    cmd_deploy(args)
    sample = ROOT / ".cache" / "sample"
    project = sample / "labeling_project.gpkg"
    if not project.exists():  # the sample scene as a labeling project, as the demo makes it
        code = ("from plugin.core.demo import make_sample_project; "
                f"make_sample_project({str(sample)!r}, size=512)")
        subprocess.run([str(PY), "-c", code], cwd=ROOT, check=True)
    if not os.environ.get("DISPLAY"):
        say("no DISPLAY: start a virtual one first, e.g. `Xvfb :99 & export DISPLAY=:99`")
        return 1
    startup = sample / "open_sample.py"
    startup.write_text(OPEN_SAMPLE.format(project=str(project)))
    env = {**os.environ, "DLTRAINER_PYTHON": str(PY), "PATH": system_path()}
    cmd = [qgis_binary(), "--profile", args.profile, "--noversioncheck", "--code", str(startup)]
    if os.environ.get("QGIS_PROFILES_DIR"):  # QGIS wants the folder that holds 'profiles'
        cmd += ["--profiles-path", str(profile_dir(args.profile).parent.parent)]
    return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    p_test = sub.add_parser("test")
    p_test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p_demo = sub.add_parser("demo")
    p_demo.add_argument("--output", default=str(ROOT / "demo_output"))
    sub.add_parser("package")
    p_gpu = sub.add_parser("gpu-wheels")
    p_gpu.add_argument("--dest", default=str(ROOT / ".whl"))
    p_gpu.add_argument("--python", default=GPU_PYTHON, help="the CUDA machine's Python (X.Y)")
    p_gpu.add_argument("--torchvision", default="",
                       help="also fetch this torchvision (the one matching its torch)")
    for name in ("deploy", "qgis"):
        p = sub.add_parser(name)
        p.add_argument("--profile", default="default")
        p.add_argument("--link", action="store_true", help="link instead of copying")
    args, extra = parser.parse_known_args(argv)
    if args.command == "test":
        args.pytest_args = extra + args.pytest_args
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    handlers = {"setup": cmd_setup, "test": cmd_test, "demo": cmd_demo,
                "package": cmd_package, "deploy": cmd_deploy, "qgis": cmd_qgis,
                "gpu-wheels": cmd_gpu_wheels}
    return handlers[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
