"""Imports every module that defines a job, so that each registers itself (one line per module)."""

from . import basic_jobs  # noqa: F401
