"""Entry point of the worker process: ``python -m <package>.core.worker JOB_FILE``.

Protocol: one JSON object per line on stdout (``progress``, ``log``, ``artifact``, then exactly one
of ``result``, ``error`` or ``cancelled``). Anything else the job or its libraries print goes to
stderr. A line ``cancel`` on stdin, or stdin closing, asks the job to stop at its next safe point.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback

from . import job_catalog  # noqa: F401  (registers every job class)
from .errors import JobCancelled, UserError
from .jobs import Job, JobContext


class StreamContext(JobContext):
    """Writes events as JSON lines to the protocol stream."""

    def __init__(self, stream) -> None:
        super().__init__()
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: dict) -> None:
        line = json.dumps(event, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _watch_stdin(ctx: JobContext) -> None:
    for line in sys.stdin:
        if line.strip() == "cancel":
            ctx.cancel()
    ctx.cancel()  # the parent went away: stop too


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Keep fd 1 for the protocol; route every other write (libraries, prints) to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    ctx = StreamContext(protocol)
    threading.Thread(target=_watch_stdin, args=(ctx,), daemon=True).start()
    try:
        if len(argv) != 1:
            raise UserError("The worker needs exactly one argument: the job file.")
        job = Job.load(argv[0])
        result = job.execute(ctx)
        if ctx.cancelled:
            ctx.emit({"event": "cancelled", "result": result})
        else:
            ctx.emit({"event": "result", "result": result})
        return 0
    except JobCancelled:
        ctx.emit({"event": "cancelled", "result": None})
        return 0
    except UserError as exc:
        ctx.emit({"event": "error", "error": exc.to_dict()})
        return 1
    except MemoryError:
        ctx.emit({"event": "error", "error": {
            "type": "MemoryError", "message": "The worker ran out of memory.",
            "fix": "Use a smaller patch size or batch size."}})
        return 1
    except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing escapes
        ctx.emit({"event": "error", "error": {
            "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}",
            "fix": "This is a bug or an unexpected environment problem; the log has details.",
            "traceback": traceback.format_exc()}})
        return 1


if __name__ == "__main__":
    sys.exit(main())
