"""Train Object Detection: the one training engine runs :class:`.task.ObjectDetectionTask`."""

from __future__ import annotations

from ..jobs import JobContext


def train_object_detection(job, ctx: JobContext) -> dict:
    """Run a TrainObjectDetectionJob in the shared training engine."""
    from ..training.engine import run_training
    from .task import ObjectDetectionTask

    return run_training(job, ObjectDetectionTask(), ctx)
