"""Errors that reach users: a one-line cause and the fix, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, wrong setting).

    ``message`` names the problem, ``fix`` says what to do about it.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} {self.fix}".strip() if self.fix else self.message

    def to_dict(self) -> dict:
        return {"type": "UserError", "message": self.message, "fix": self.fix}


class JobCancelled(Exception):
    """Raised at a safe point after the user asked to stop; finished work is kept."""


class WorkerError(Exception):
    """The worker process failed unexpectedly (crash, killed, internal error)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@contextlib.contextmanager
def out_of_memory(doing: str, fix: str) -> Iterator[None]:
    """Inside the block, torch's out-of-memory error (``torch.OutOfMemoryError``, recognised by
    its name so that this module never imports torch) becomes ``UserError("The GPU ran out of
    memory while <doing>.", fix)``; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if type(exc).__name__ != "OutOfMemoryError":
            raise
        raise UserError(f"The GPU ran out of memory while {doing}.", fix) from None
