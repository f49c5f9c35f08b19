"""``dltrain``: run Deep Learning Trainer jobs headless (in-process), e.g. on a GPU server.

    dltrain run JOB.json [--set name=value ...]   run a job file
            [--processes N]                       ... in N processes (torch.distributed)
    dltrain template KIND [-o JOB.json]           write a job file with default settings
    dltrain kinds                                 list the job kinds
    dltrain env                                   print the environment report
    dltrain demo [--output DIR]                   run the main job on the bundled sample
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from .core import (
    distributed,
    job_catalog,  # noqa: F401  (registers every job class)
)
from .core.errors import JobCancelled, UserError
from .core.jobs import Job, JobContext, job_class, job_classes


class ConsoleContext(JobContext):
    """Prints progress to stderr (or JSON lines with --json); Ctrl+C asks the job to stop."""

    def __init__(self, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json
        self._last = 0.0
        self.rank = distributed.rank()

    def emit(self, event: dict) -> None:
        if self.rank and event.get("event") != "log":
            return   # several processes: rank 0 reports progress
        if self.as_json:
            print(json.dumps(event), flush=True)
            return
        kind = event.get("event")
        if kind == "progress":
            now = time.monotonic()
            last_step = event["step"] >= event["total"]
            if now - self._last < 0.5 and not last_step and not event.get("metrics"):
                return
            self._last = now
            metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in event.get("metrics", {}).items())
            print(f"[{event['phase']} {event['step']}/{event['total']}] "
                  f"{event.get('message', '')} {metrics}".rstrip(), file=sys.stderr, flush=True)
        elif kind == "log":
            print(f"{event['level']}: {event['message']}", file=sys.stderr, flush=True)
        elif kind == "artifact":
            print(f"wrote {event['name']}: {event['path']}", file=sys.stderr, flush=True)


def _parse_set(values: list[str]) -> dict:
    out = {}
    for item in values:
        if "=" not in item:
            raise UserError(f"--set {item!r} is not name=value.", "Write e.g. --set epochs=5.")
        name, raw = item.split("=", 1)
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


def _without_processes(argv: list[str]) -> list[str]:
    """The command line without its --processes option (what each process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


def run_job(job: Job, as_json: bool = False) -> dict:
    """Validate and run ``job`` in this process, Ctrl+C cancelling it at a safe point.

    Raises :class:`JobCancelled` (its ``result``: what the job kept) when it was cancelled, even
    if the job itself returned normally after stopping early."""
    job = job.with_absolute_paths()
    ctx = ConsoleContext(as_json)
    previous = signal.signal(signal.SIGINT, lambda *_: ctx.cancel())
    try:
        result = job.execute(ctx)
    finally:
        signal.signal(signal.SIGINT, previous)
        distributed.teardown()
    if ctx.cancelled:
        err = JobCancelled()
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dltrain", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a job file")
    p_run.add_argument("job_file")
    p_run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="override a setting of the job (JSON value)")
    p_run.add_argument("--json", action="store_true", help="print events as JSON lines")
    p_run.add_argument("--processes", type=int, default=0, metavar="N",
                       help="run in N processes on this machine (torchrun; one per GPU on "
                            "CUDA, gloo on the CPU); jobs that support it share the work")
    p_tpl = sub.add_parser("template", help="write a job file with default settings")
    p_tpl.add_argument("kind")
    p_tpl.add_argument("-o", "--output", help="file to write (default: stdout)")
    sub.add_parser("kinds", help="list the job kinds")
    sub.add_parser("env", help="print the environment report")
    p_demo = sub.add_parser("demo", help="run the main job on the bundled sample")
    p_demo.add_argument("--output", default="demo_output", help="folder for the outputs")
    args = parser.parse_args(argv)
    try:
        if args.command == "kinds":
            for kind, cls in sorted(job_classes().items()):
                print(f"{kind:32s} {cls.title}")
            return 0
        if args.command == "template":
            job = job_class(args.kind)()
            text = json.dumps(job.to_dict(), indent=2)
            if args.output:
                job.save(args.output)
                print(f"wrote {args.output}", file=sys.stderr)
            else:
                print(text)
            return 0
        if args.command == "demo":
            from .core.demo import run_demo

            ctx = ConsoleContext()
            result = run_demo(args.output, ctx)
            print(json.dumps(result, indent=2, default=str))
            print(f"demo outputs are in {args.output}", file=sys.stderr)
            return 0
        if args.command == "env":
            job = job_class("environment_report")()
        else:
            job = Job.load(args.job_file)
            if args.set:
                merged = {**job.to_dict()["params"], **_parse_set(args.set)}
                job = type(job).from_params(merged)
            if args.processes and not distributed.active():
                # bad input (with the --set values applied) stops before N processes start
                job.validate()
                distributed.check_processes(args.processes, getattr(job, "device", "cpu"))
                return distributed.launch(_without_processes(argv if argv is not None
                                                             else sys.argv[1:]), args.processes)
        result = run_job(job, as_json=getattr(args, "json", False))
        print(json.dumps({"event": "result", "result": result}, indent=None if
                         getattr(args, "json", False) else 2, default=str))
        return 0
    except UserError as exc:
        distributed.record_failure(exc)
        print(f"error: {exc.message}" + (f"\nfix: {exc.fix}" if exc.fix else ""), file=sys.stderr)
        return 2
    except JobCancelled as exc:
        kept = getattr(exc, "result", None)
        if kept:
            print(json.dumps({"event": "cancelled", "result": kept}, default=str))
        print("cancelled: stopped at your request; finished work was kept", file=sys.stderr)
        return 130
    except Exception as exc:
        distributed.record_failure(exc)   # a rank's unexpected error: its launcher says why
        raise


if __name__ == "__main__":
    sys.exit(main())
