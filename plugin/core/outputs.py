"""Safe outputs for every job: absolute paths, clash and writability checks, locks, atomic writes.

One mechanism for all jobs, driven by the parameter kinds of the job's fields (``params.KINDS``):

- :func:`absolute_paths` makes every path field absolute against the caller's working directory
  before the job leaves the calling process (the worker runs in a temporary folder, so a relative
  output would otherwise land there and be deleted with it). The runner and the CLI call it.
- :func:`output_problems` (part of ``Job.problems``): every output against every input, every
  other output and the rasters of the labeling project the job reads; outputs whose folder is a
  file, is read-only, or that are an existing folder where a file is written. Standard library
  only: the QGIS process runs it.
- :class:`OutputLocks`: a lock file ``.<name>.dltrainer.lock`` (JSON: pid, host, job kind, start
  time) beside each output while a job writes it; a second run is refused with a message naming
  the first, a lock whose process is gone (same host) is stale and taken over.
- :func:`atomic_file` writes through a temporary file in the target's folder and replaces the
  target only when the write succeeded; a failed write leaves the previous file intact and no
  partial file behind.
- :func:`io_user_error` turns an ``OSError`` (disk full, permission, damaged file) raised anywhere
  in a job into a :class:`UserError` naming the file and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError
from .params import param_fields

#: A job (a :class:`.jobs.Job` dataclass whose fields carry ParamSpecs); not imported from
#: ``.jobs``, which imports this module.
Job = Any

IN_KINDS = ("file_in", "folder_in", "raster_in", "vector_in", "vector_or_file_in", "project_in",
            "model_in")
OUT_KINDS = ("file_out", "folder_out", "model_out", "project_out", "raster_out", "vector_out")
LIST_IN_KINDS = ("raster_list", "vector_list")
FOLDER_KINDS = ("folder_in", "folder_out")
LOCK_SUFFIX = ".dltrainer.lock"


# -- absolute paths ---------------------------------------------------------------------------
def _is_uri(text: str) -> bool:
    return "://" in text or text.startswith(("/vsi", "PG:", "MySQL:"))


def absolute_path(text: str, cwd: str | Path | None = None) -> str:
    """``text`` made absolute against ``cwd`` (default: the current folder) with ``~`` expanded;
    a QGIS layer source's ``|layername=…`` suffix is kept; URIs and empty strings unchanged."""
    if not isinstance(text, str) or not text.strip() or _is_uri(text):
        return text
    base, sep, rest = text.partition("|")
    p = Path(base).expanduser()
    if not p.is_absolute():
        p = Path(cwd or os.getcwd()) / p
    return os.path.normpath(str(p)) + sep + rest


def absolute_paths(job: Job, cwd: str | Path | None = None) -> Job:
    """A copy of ``job`` whose path fields (inputs, outputs, lists of layers) are absolute."""
    changes = {}
    for f, ps in param_fields(type(job)):
        value = getattr(job, f.name)
        if ps.kind in IN_KINDS + OUT_KINDS and isinstance(value, str):
            changes[f.name] = absolute_path(value, cwd)
        elif ps.kind in LIST_IN_KINDS and isinstance(value, list):
            changes[f.name] = [absolute_path(v, cwd) if isinstance(v, str) else v for v in value]
    return dataclasses.replace(job, **changes)


# -- what a job reads and writes --------------------------------------------------------------
def _file_part(text: str) -> str:
    return text.partition("|")[0]


def job_inputs(job: Job) -> list[tuple[str, str]]:
    """(label, path) of every file or folder the job reads (layer lists flattened), plus the
    rasters of a labeling project it reads."""
    out = []
    for f, ps in param_fields(type(job)):
        value = getattr(job, f.name)
        if ps.kind in IN_KINDS and isinstance(value, str) and value:
            out.append((f"{ps.label} ({ps.name})", _file_part(value)))
            if ps.kind in ("project_in",):
                out += [(f"training raster of the project ({ps.name})", r)
                        for r in project_rasters(_file_part(value))]
        elif ps.kind in LIST_IN_KINDS and isinstance(value, list):
            out += [(f"{ps.label} ({ps.name})", _file_part(v)) for v in value
                    if isinstance(v, str) and v]
        elif ps.kind == "project_out" and isinstance(value, str) and value:
            out += [(f"training raster of the project ({ps.name})", r)
                    for r in project_rasters(value)]
    return out


def job_outputs(job: Job) -> list[tuple[str, str, bool]]:
    """(label, path, is_folder) of every output of the job: its output fields plus what the job
    declares in ``extra_outputs()`` (e.g. files written beside a model)."""
    out = []
    for f, ps in param_fields(type(job)):
        value = getattr(job, f.name)
        if ps.kind in OUT_KINDS and isinstance(value, str) and value:
            out.append((f"{ps.label} ({ps.name})", value, ps.kind in FOLDER_KINDS))
    extra = getattr(job, "extra_outputs", None)
    if extra is not None:
        out += [(label, str(path), bool(folder)) for label, path, folder in extra()]
    return out


def project_rasters(path: str) -> list[str]:
    """The raster paths listed in a labeling project (GeoPackage ``dlt_rasters``); [] when the
    file is not one (standard library only)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".gpkg":
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT path FROM dlt_rasters").fetchall()
    except sqlite3.Error:
        return []
    return [str(r[0]) for r in rows if r and r[0]]


def _same(a: str, b: str) -> bool:
    try:
        pa, pb = Path(a), Path(b)
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    except OSError:
        return False


def _existing_parent(path: Path) -> Path:
    p = path.absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_problem(label: str, path: str, is_folder: bool) -> str | None:
    """Why ``path`` cannot be written, as a sentence with the fix, or None. Probes the nearest
    existing folder by creating (and removing) a file, so it holds for root and read-only file
    systems alike."""
    p = Path(path)
    if p.exists():
        if is_folder and not p.is_dir():
            return (f"{label} {p} is an existing file, not a folder: choose a folder name.")
        if not is_folder and p.is_dir():
            return (f"{label} {p} is an existing folder: choose a file name inside it.")
    folder = p if (is_folder and p.is_dir()) else _existing_parent(p)
    if not folder.is_dir():
        return (f"{label} {p} cannot be created: {folder} is a file, not a folder. "
                "Choose another location.")
    probe = folder / f".dltrainer-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return (f"{label} {p} cannot be written: the folder {folder} is not writable "
                f"({exc.strerror}). Choose a folder you can write to.")
    return None


def output_problems(job: Job) -> list[str]:
    """Clashes between outputs and inputs / other outputs, and outputs that cannot be written,
    each as a sentence with the fix (cheap, standard library only)."""
    problems: list[str] = []
    inputs = job_inputs(job)
    outputs = job_outputs(job)
    for i, (label, path, _folder) in enumerate(outputs):
        for in_label, in_path in inputs:
            if _same(path, in_path):
                problems.append(f"{label} {path} is also the {in_label}: it would be "
                                "overwritten. Choose another output name.")
        for other_label, other, _ in outputs[i + 1:]:
            if _same(path, other):
                problems.append(f"{label} and {other_label} are the same file {path}: one would "
                                "overwrite the other. Give them different names.")
    problems += format_problems(job)
    problems += model_problems(job)
    if not problems:
        for label, path, is_folder in outputs:
            problem = writable_problem(label, path, is_folder)
            if problem:
                problems.append(problem)
    return problems


def filter_suffixes(file_filter: str) -> tuple[str, ...]:
    """The lower-case file name endings of a Qt file filter (``"GeoTIFF (*.tif *.tiff)"`` →
    ``(".tif", ".tiff")``); () when it names none."""
    import re

    return tuple(m.lower() for m in re.findall(r"\*(\.[\w.]+)", file_filter))


def is_labeling_project(path: str | Path) -> bool:
    """True when ``path`` is a GeoPackage holding a labeling project (``dlt_*`` tables);
    standard library only."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                              "name LIKE 'dlt\\_%' ESCAPE '\\'").fetchall()
    except sqlite3.Error:
        return False
    return bool(rows)


def format_problems(job: Job) -> list[str]:
    """File outputs whose name does not end in the format the job writes (a GeoPackage named
    ``.tif`` would replace a raster), and outputs that are an existing labeling project
    (writing them would replace the labels)."""
    out = []
    for f, ps in param_fields(type(job)):
        value = getattr(job, f.name)
        if ps.kind not in OUT_KINDS or ps.kind in FOLDER_KINDS or not isinstance(value, str):
            continue
        path = _file_part(value)
        if not path or _is_uri(path):
            continue
        label = f"{ps.label} ({ps.name})"
        suffixes = filter_suffixes(ps.file_filter)
        if ps.kind not in ("model_out", "project_out") and suffixes and \
                not path.lower().endswith(suffixes):
            stem = Path(path).name.split(".")[0] or "output"
            out.append(f"{label} {path} does not end in {' or '.join(suffixes)}, the format "
                       f"written there: name it like {stem}{suffixes[0]}.")
        elif ps.kind != "project_out" and is_labeling_project(path):
            out.append(f"{label} {path} is a labeling project: writing there would replace "
                       "its labels. Choose another file name.")
    return out


def model_problems(job: Job) -> list[str]:
    """Model inputs that are not valid model files (read by content, whatever their name)."""
    from .modelfile import read_model_card

    out = []
    for f, ps in param_fields(type(job)):
        value = getattr(job, f.name)
        if ps.kind == "model_in" and isinstance(value, str) and value and Path(value).is_file():
            try:
                read_model_card(value, task=None)
            except UserError as exc:
                out.append(f"{ps.label} ({ps.name}): {exc}")
    return out


# -- locks ------------------------------------------------------------------------------------
def lock_path(output: str | Path) -> Path:
    p = Path(output)
    return p.with_name(f".{p.name}{LOCK_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return None if not path.exists() else {}


def lock_is_stale(info: dict) -> bool:
    """A lock is stale when its process (on this host) no longer runs."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        return not _pid_alive(int(info.get("pid", -1)))
    except (TypeError, ValueError):
        return True


class OutputLocks:
    """Lock every output of ``job`` for the time of a ``with`` block (see the module docstring).

    Raises :class:`UserError` naming the other run when an output is locked by a live one."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.held: list[Path] = []

    def __enter__(self) -> OutputLocks:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "kind": self.job.kind,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            for label, path, _ in job_outputs(self.job):
                self._acquire(label, Path(path), info)
        except BaseException:
            self.release()
            raise
        return self

    def _acquire(self, label: str, output: Path, info: dict) -> None:
        lock = lock_path(output)
        if lock in self.held:
            return
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = read_lock(lock)
                if other is None:
                    continue  # released meanwhile
                if lock_is_stale(other):
                    with contextlib.suppress(OSError):
                        lock.unlink()
                    continue
                raise UserError(
                    f"{label} {output} is being written by another run: "
                    f"{other.get('kind', 'a job')} (process {other.get('pid', '?')} on "
                    f"{other.get('host', '?')}, started {other.get('started', '?')}).",
                    f"Wait for that run to finish or choose another output name; if no such "
                    f"run exists, delete {lock}.") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
            self.held.append(lock)
            return
        raise UserError(f"Cannot lock {output} for writing.", f"Delete {lock} and try again.")

    def release(self) -> None:
        for lock in self.held:
            with contextlib.suppress(OSError):
                lock.unlink()
        self.held = []

    def __exit__(self, *exc) -> None:
        self.release()


# -- writing and failures -------------------------------------------------------------------
_WHY = {
    errno.ENOSPC: ("the disk is full", "Free disk space or choose a folder on another disk."),
    errno.EDQUOT: ("the disk quota is exceeded", "Free disk space or choose another folder."),
    errno.EFBIG: ("the file grew too large", "Choose a folder on another disk."),
    errno.EACCES: ("permission denied", "Choose a folder you can write to."),
    errno.EPERM: ("the operation is not permitted", "Choose a folder you can write to."),
    errno.EROFS: ("the disk is read-only", "Choose a folder you can write to."),
    errno.ENOENT: ("it does not exist (or was removed while the job ran)", "Check the path."),
    errno.EIO: ("an input/output error", "Check the disk or the network share."),
}


def io_user_error(exc: BaseException, outputs: list[str] | None = None,
                  inputs: list[str] | None = None) -> UserError | None:
    """A :class:`UserError` naming the file and why for an ``OSError`` (or a rasterio / GDAL
    I/O error) raised while a job ran; None when ``exc`` is not about a file. ``outputs`` and
    ``inputs``: the job's paths, used to name the file when the error itself does not (a
    failed write names the outputs, a failed read the inputs)."""
    candidates = list(outputs or []) + list(inputs or [])
    if isinstance(exc, UserError):
        return exc
    chain, seen = [], exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    code = next((e.errno for e in chain if isinstance(e, OSError)    # not GDAL's error numbers
                 and not type(e).__module__.startswith("rasterio")
                 and isinstance(e.errno, int) and e.errno in _WHY), None)
    low = text.lower()
    if code is None:
        code = (errno.ENOSPC if "no space left" in low else errno.EFBIG if "too large" in low
                else errno.EACCES if "permission denied" in low else None)
    name = next((e.filename for e in chain if getattr(e, "filename", None)), None)
    if not name:
        for path in candidates or []:
            if path and (path in text or Path(path).name in text):
                name = path
                break
    module = type(exc).__module__ or ""
    is_io = isinstance(exc, OSError) or module.startswith(("rasterio", "osgeo", "pyogrio",
                                                           "safetensors"))
    if not name and code is None and is_io:
        low = text.lower()
        guess = (outputs if "write" in low else inputs if "read" in low else None) or []
        if len(guess) == 1:
            name = guess[0]
        elif guess:
            name = "one of " + ", ".join(guess)
    if not is_io or (not name and code is None):
        return None
    if code is None and "read failed" in low:
        why, fix = ("the file is damaged or incomplete (its data cannot be read)",
                    "Check the file (open it in QGIS) or copy it again.")
    elif code is None and any(k in low for k in _IO_FAILURE + ("write",)):
        why, fix = _DISK_REFUSED
    else:
        why, fix = _WHY.get(code, (getattr(exc, "strerror", None) or text.strip() or
                                   type(exc).__name__, "Check that the file is complete "
                                   "and readable (open it in QGIS), or write to another "
                                   "disk."))
    where = f"{name}" if name else "an output file"
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and not name and outputs:
        where = "the outputs (" + ", ".join(outputs) + ")"
    verb = ("Reading" if name in (inputs or []) else "Writing" if name in (outputs or [])
            or code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "Reading or writing")
    return UserError(f"{verb} {where} failed: {why}. Nothing was overwritten; partial "
                     "outputs were removed.", fix)


_DISK_REFUSED = ("the disk refused the data (full, too small for the file, or failing)",
                 "Free disk space or choose a folder on another disk.")
_IO_FAILURE = ("too large", "no space", "io error", "i/o error", "writeproc", "seekproc",
               "write error", "short write", "disk full", "failed to write", "write failed")


@contextlib.contextmanager
def gdal_write_guard(path: str | Path) -> Iterator[None]:
    """Turn errors GDAL only signals (never raises), such as a block flushed to a full disk when
    a raster is closed, into a :class:`UserError` naming ``path``; wrap the writing and closing
    of a raster in it."""
    import logging

    errors: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if any(k in msg.lower() for k in _IO_FAILURE):
                errors.append(msg)

    logger = logging.getLogger("rasterio")
    handler, level = _Catch(logging.INFO), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if errors:
        low = " ".join(errors).lower()
        code = (errno.ENOSPC if "no space" in low else errno.EFBIG if "too large" in low
                else errno.EIO)
        why, fix = _WHY[code]
        if code == errno.EIO:
            why, fix = _DISK_REFUSED
        raise UserError(f"Writing {path} failed: {why}. Nothing was overwritten; partial "
                        "outputs were removed.", fix)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (mode ``mode``),
    on any failure it is removed and ``path`` keeps its previous content. OSErrors become a
    :class:`UserError` naming ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        err = io_user_error(exc, [str(target)]) or UserError(f"Writing {target} failed: {exc}.")
        raise err from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()
