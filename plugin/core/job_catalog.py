"""Imports every module that defines a job, so that each registers itself (one line per module;
the model families' job modules come from the family table)."""

from . import (
    basic_jobs,  # noqa: F401
    onnx_export,  # noqa: F401  (Export Model to ONNX, every family)
    suggest_labels,  # noqa: F401  (Suggest Areas to Label, every family that suggests)
)
from .families import import_job_modules
from .labeling import jobs as _labeling_jobs  # noqa: F401
from .sampling import jobs as _sampling_jobs  # noqa: F401

import_job_modules()   # each model family's jobs (plugin/core/families.py)
