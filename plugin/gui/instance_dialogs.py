"""Dialogs of the instance segmentation tools (Train Instance Segmentation, Segment Objects):
the form builder of :mod:`.classification_dialogs` on the jobs' parameter specs, so they share
the file rows, the reason label, the device list, the remembered last job, the Training Model
window and the class-coloured output layer."""

from __future__ import annotations

from ..core.instances.jobs import SegmentObjectsJob, TrainInstanceSegmentationJob
from .classification_dialogs import JobFormDialog, open_form, project_or_labeling_tool


def open_train_instance_segmentation(plugin, project_path: str | None = None) -> JobFormDialog:
    return open_form(TrainInstanceSegmentationJob, plugin, "project",
                     project_or_labeling_tool(plugin, project_path))


def open_segment_objects(plugin, model_path: str | None = None) -> JobFormDialog:
    return open_form(SegmentObjectsJob, plugin, "model", model_path)
