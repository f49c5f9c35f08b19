"""Imports every module that defines a job, so that each registers itself (one line per module)."""

from . import basic_jobs  # noqa: F401
from .classification import jobs as _classification_jobs  # noqa: F401
from .labeling import jobs as _labeling_jobs  # noqa: F401
from .sampling import jobs as _sampling_jobs  # noqa: F401
from .segmentation import jobs as _segmentation_jobs  # noqa: F401
