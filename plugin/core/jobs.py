"""Job descriptions: one dataclass per task type, shared by dialogs, Processing, CLI and engines.

A job is plain data (JSON-serialisable fields). Its module must import nothing heavy (no torch, no
QGIS) so that the QGIS process can build and save jobs; :meth:`Job.run` imports the engine lazily
and runs wherever the job is executed (worker process, CLI, server).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, ClassVar

from .errors import UserError, out_of_memory
from .params import check_value, param_fields

JOB_FILE_VERSION = 1
_REGISTRY: dict[str, type[Job]] = {}


def register_job(cls: type[Job]) -> type[Job]:
    """Class decorator: make ``cls`` known by its ``kind`` to job files, the CLI and the worker."""
    if not getattr(cls, "kind", ""):
        raise TypeError(f"{cls.__name__} needs a 'kind'")
    _REGISTRY[cls.kind] = cls
    return cls


def job_classes() -> dict[str, type[Job]]:
    """All registered job classes by kind. Every job module registers its classes when it is
    imported; entry points (CLI, worker, Processing, the plugin) import :mod:`.job_catalog`,
    which imports them all, so this module imports none (it closes no import circle)."""
    return dict(_REGISTRY)


def job_class(kind: str) -> type[Job]:
    classes = job_classes()
    if kind not in classes:
        raise UserError(f"Unknown job kind {kind!r}.",
                        f"Use one of: {', '.join(sorted(classes))}.")
    return classes[kind]


@dataclasses.dataclass
class Job:
    """Base of every job. Subclasses are dataclasses registered with :func:`register_job`."""

    kind: ClassVar[str] = ""
    #: ``"module:function"`` that runs the job, module relative to the job class's package,
    #: called as ``function(job, ctx)``: imported only when the job runs, so that job modules
    #: import nothing heavy. Jobs whose work is short override :meth:`run` instead.
    runner: ClassVar[str] = ""
    #: The fix when the GPU runs out of memory during ``run`` (every job: :meth:`execute`).
    memory_fix: ClassVar[str] = "Use fewer patches, tiles or chips per batch (BATCH_SIZE)."
    title: ClassVar[str] = ""
    #: ``(phase, weight)`` in run order: how phase events add up to one overall progress
    #: (:mod:`.progress`); empty: each phase's own share.
    progress_phases: ClassVar[tuple[tuple[str, float], ...]] = ()
    #: Defaults earlier versions had (field → value), for settings remembered before dialogs
    #: stored the defaults beside them: a remembered value equal to it was most likely left at
    #: the default, and follows the new one (``gui.job_dialog_support.remembered_job``).
    previous_defaults: ClassVar[dict[str, Any]] = {}

    # -- behaviour -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Problems that stop this job from running (cheap checks, no heavy imports).

        Each is a sentence naming the problem and the fix. Subclasses extend this.
        """
        from .outputs import output_problems

        out = []
        for f, ps in param_fields(type(self)):
            problem = check_value(ps, getattr(self, f.name))
            if problem:
                out.append(problem)
        return out + output_problems(self)

    def extra_outputs(self) -> list[tuple[str, str, bool]]:
        """(label, path, is_folder) of outputs the job writes beyond its output fields (files
        beside a model, a log folder): checked, locked and reported like the fields."""
        return []

    def with_absolute_paths(self, cwd: str | Path | None = None) -> Job:
        """A copy with every path made absolute against ``cwd`` (default: the current folder);
        call it before the job leaves the calling process."""
        from .outputs import absolute_paths

        return absolute_paths(self, cwd)

    def execute(self, ctx: JobContext) -> dict:
        """Validate, lock the outputs, run; file errors become :class:`UserError` naming the
        file. Runners (worker, CLI) call this rather than :meth:`run`."""
        import contextlib

        from .distributed import is_main
        from .outputs import OutputLocks, io_user_error, job_inputs, job_outputs

        self.validate()
        # several processes (torchrun) run one job: rank 0 holds the locks for all of them
        with OutputLocks(self) if is_main() else contextlib.nullcontext():
            try:
                with out_of_memory(f"running {self.title}", self.memory_fix):
                    return self.run(ctx)
            except (UserError, KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:
                err = io_user_error(exc, [p for _, p, _ in job_outputs(self)],
                                    [p for _, p in job_inputs(self)])
                if err is None:
                    raise
                raise err from exc

    def validate(self) -> None:
        """Raise :class:`UserError` listing every problem, if any."""
        problems = self.problems()
        if problems:
            raise UserError(" ".join(problems))

    def run(self, ctx: JobContext) -> dict:
        """Do the work, reporting through ``ctx``; return a JSON-serialisable result. By
        default calls the job's :attr:`runner`."""
        if not self.runner:   # pragma: no cover - a job without a runner overrides run
            raise NotImplementedError(f"{type(self).__name__} has no runner")
        import importlib

        module, _, function = self.runner.partition(":")
        package = type(self).__module__.rpartition(".")[0]
        return getattr(importlib.import_module(f".{module}", package), function)(self, ctx)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """``{"kind", "version", "params"}``, the params in :func:`.params.param_fields` order."""
        params = dataclasses.asdict(self)
        order = [f.name for f, _ in param_fields(type(self))]
        ordered = {name: params[name] for name in order if name in params}
        return {"kind": self.kind, "version": JOB_FILE_VERSION,
                "params": {**ordered, **{k: v for k, v in params.items() if k not in ordered}}}

    @classmethod
    def from_params(cls, params: dict) -> Job:
        """Build from a field → value mapping; unknown names and wrong types are user errors.
        Settings an older version had are first renamed (:meth:`upgrade_params`)."""
        params = cls.upgrade_params(params)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise UserError(f"Unknown setting(s) for a {cls.kind} job: {', '.join(unknown)}.",
                            f"Valid settings: {', '.join(sorted(known))}.")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in params.items():
            values[name] = _coerce(cls.kind, name, hints.get(name), value)
        return cls(**values)

    @classmethod
    def upgrade_params(cls, params: dict) -> dict:
        """``params`` (field → value) with the settings of an older version of this job given
        under their current names (job files and Processing calls written before a rename keep
        working); by default unchanged."""
        return params

    @staticmethod
    def from_dict(data: Any) -> Job:
        if not isinstance(data, dict) or "kind" not in data:
            raise UserError("This is not a job description: it has no 'kind'.",
                            "Save a job from a dialog or start from `dltrain template KIND`.")
        cls = job_class(data["kind"])
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise UserError("The job's 'params' must be a JSON object.")
        return cls.from_params(params)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def load(path: str | Path) -> Job:
        p = Path(path)
        if p.is_dir():
            raise UserError(f"{p} is a folder, not a job file.",
                            "Give the path of a job file (.json) inside it.")
        if not p.is_file():
            raise UserError(f"Job file {p} does not exist.", "Check the path.")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"Job file {p} is not valid JSON ({exc}).",
                            "Fix the file or save the job again from its dialog.") from None
        return Job.from_dict(data)


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number",
               str: "text", list: "a list", tuple: "a list", dict: "an object ({...})"}


def _coerce(kind: str, name: str, hint: Any, value: Any) -> Any:
    """Check a JSON value against a field's type hint, converting the harmless cases."""
    if hint is None or value is None:
        return value
    origin = typing.get_origin(hint) or hint
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(kind, name, args[0], value) if len(args) == 1 else value
    type_name = _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))
    bad = UserError(f"Setting {name!r} of the {kind} job is {value!r}, which is not "
                    f"{type_name}.", "Correct the job file.")
    if origin is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if origin is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if origin is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if origin is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        return list(value)
    if origin is dict and not isinstance(value, dict):
        raise bad
    return value


class JobContext:
    """What a running job reports to and asks of its runner.

    Runners (worker process, CLI, tests) subclass this and override :meth:`emit`.
    """

    def __init__(self) -> None:
        self._cancelled = False

    # events ----------------------------------------------------------------------------------
    def emit(self, event: dict) -> None:  # pragma: no cover - overridden
        pass

    def progress(self, phase: str, step: int, total: int, message: str = "",
                 **metrics: float) -> None:
        """Report ``step`` of ``total`` in ``phase`` (e.g. 'epoch', 'batch', 'tile')."""
        self.emit({"event": "progress", "phase": phase, "step": int(step), "total": int(total),
                   "message": message, "metrics": {k: _num(v) for k, v in metrics.items()}})

    def log(self, message: str, level: str = "info") -> None:
        """A message for the log (level: info, warning)."""
        self.emit({"event": "log", "level": level, "message": message})

    def artifact(self, name: str, path: str, **info: Any) -> None:
        """Announce an output file as soon as it exists (e.g. a best model); ``info``: more
        JSON values about it (a map preview's ``epoch``)."""
        self.emit({"event": "artifact", "name": name, "path": str(path), **info})

    # cancellation ----------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the user asked to stop (call it at safe points)."""
        from .errors import JobCancelled

        if self._cancelled:
            raise JobCancelled()


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


class RecordingContext(JobContext):
    """Keeps every event in a list: for tests and in-process runs."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def emit(self, event: dict) -> None:
        self.events.append(event)
