"""What every training job shares: its model outputs, fine-tune / resume inputs, log folder and
the one training engine it runs in.

Each family's train job (pixel segmentation, object detection, grid model, chip classifier)
derives from :class:`TrainingJob`, which declares the fields every trainer has with the same
meaning (SEED, PATIENCE, NUM_WORKERS, RESUME_FROM, DEVICE, OUTPUT_LAST_MODEL, LOG_FOLDER); the
family declares its own fields in its own order, and those of ``trailing_fields`` come last in
dialogs, Processing and job files. Nothing heavy at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..job_fields import device_field
from ..jobs import Job, JobContext
from . import fields as trainer
from .logfolder import is_training_log
from .start_weights import START_RANDOM, pretrained_choice, start_problems, upgrade_legacy


@dataclass
class TrainingJob(Job):
    """Base of the train jobs. Subclasses are dataclasses with at least the fields
    ``output_model``, ``output_last_model``, ``init_model``, ``resume_from`` and
    ``log_folder`` (paths, ``""`` when unset).

    Class attributes a subclass may set:

    * ``input_files``: ``(field, PARAMETER)`` pairs of further optional input files that must
      exist when given (a weights file, say).
    * ``chips_folder_kinds``: how the error names the chips folders PROJECT accepts; empty
      when PROJECT takes only a labeling project.
    """

    input_files: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Settings earlier versions had instead of START_WEIGHTS (field → Processing name, from
    #: :data:`.start_weights.LEGACY_CHOICES` / ``LEGACY_FILES``): still read from job files and
    #: Processing calls (:meth:`upgrade_params`).
    legacy_params: ClassVar[dict[str, str]] = {}
    chips_folder_kinds: ClassVar[str] = ""
    #: Shown after the family's own fields, in this order (:func:`..params.param_fields`).
    trailing_fields: ClassVar[tuple[str, ...]] = (
        "seed", "patience", "trials", "search_minutes", "num_workers", "resume_from", "device",
        "output_model", "output_last_model", "save_optimizer", "log_folder",
        "preview_raster", "preview_extent_file", "preview_seconds")

    seed: int = trainer.seed_field()
    patience: int = trainer.patience_field()
    trials: int = trainer.trials_field()
    search_minutes: float = trainer.search_minutes_field()
    num_workers: int = trainer.num_workers_field()
    resume_from: str = trainer.resume_from_field()
    device: str = device_field("training")
    output_last_model: str = trainer.output_last_model_field()
    log_folder: str = trainer.log_folder_field()
    preview_raster: str = trainer.preview_raster_field()
    preview_extent_file: str = trainer.preview_extent_file_field()
    preview_seconds: float = trainer.preview_seconds_field()
    #: Overall progress of every family's training (:mod:`.progress`): the task's ``prepare``
    #: steps, then the engine's epochs (with their batches); other phases a task reports
    #: while preparing (label ``raster`` i/n, grid ``cells``) or testing leave it unchanged.
    progress_phases: ClassVar[tuple[tuple[str, float], ...]] = (("prepare", 0.05),
                                                                 ("epoch", 0.95))

    def problems(self) -> list[str]:
        """The base checks, the project, the model files, START_WEIGHTS and the log folder
        (each a sentence with its fix)."""
        return (super().problems() + self.project_problems() + self.model_problems()
                + self.start_problems() + self.log_folder_problems() + self.search_problems()
                + self.preview_problems())

    @classmethod
    def family_task(cls) -> str:
        """The model-file task of the family this job (or the train job it extends, for the
        pre-flight summaries) trains."""
        from ..families import family_of_kind

        fam = next((family_of_kind(c.kind) for c in cls.__mro__
                    if family_of_kind(getattr(c, "kind", ""))), None)
        return fam.task if fam is not None else ""

    def start_problems(self) -> list[str]:
        """START_WEIGHTS must be random, the family's pretrained choice or an existing file
        (:func:`.start_weights.start_problems`)."""
        if not hasattr(self, "start_weights"):
            return []
        return start_problems(self.start_weights, self.family_task())

    def with_absolute_paths(self, cwd: str | Path | None = None) -> TrainingJob:
        """The base's copy, START_WEIGHTS too when it names a file or folder relative to
        ``cwd`` or under ``~`` (a free-text field, unlike the file fields: a relative path
        passed the checks in QGIS and then was not found by the worker, which runs in another
        folder). Words (random, imagenet, a typo) stay as typed."""
        import dataclasses

        from ..outputs import absolute_path

        job = super().with_absolute_paths(cwd)
        start = getattr(job, "start_weights", "")
        words = (START_RANDOM, pretrained_choice(self.family_task()))
        if (start and start not in words and start == start.strip()
                and Path(absolute_path(start, cwd)).exists()):
            job = dataclasses.replace(job, start_weights=absolute_path(start, cwd))
        return job

    @classmethod
    def upgrade_params(cls, params: dict) -> dict:
        """The settings of :attr:`legacy_params` (ENCODER_WEIGHTS, WEIGHTS_FILE …) as
        START_WEIGHTS (:func:`.start_weights.upgrade_legacy`)."""
        legacy = {k: v for k, v in params.items() if k in cls.legacy_params}
        if not legacy:
            return params
        rest = {k: v for k, v in params.items() if k not in legacy}
        return {**upgrade_legacy(legacy, cls.family_task()), **rest}   # START_WEIGHTS wins

    def concrete_choice(self, name: str, value):
        """What the choice ``value`` of the enum setting ``name`` means for this job: a family
        resolves its ``auto`` choices that depend on other settings (pixel segmentation's LOSS);
        by default ``value`` itself. The search tries each meaning once."""
        return value

    def preview_problems(self) -> list[str]:
        """PREVIEW_RASTER, when given, must exist (the extent file may come later)."""
        if self.preview_raster and not Path(self.preview_raster).is_file():
            return [f"The preview raster {self.preview_raster} (PREVIEW_RASTER) does not "
                    "exist: choose a raster or clear it."]
        return []

    def search_problems(self) -> list[str]:
        """A search (TRIALS > 0) starts every trial afresh: it cannot resume a run."""
        if self.trials and self.resume_from:
            return ["A hyperparameter search (TRIALS) cannot resume a run (RESUME_FROM): clear "
                    "one of them."]
        return []

    def extra_outputs(self) -> list[tuple[str, str, bool]]:
        """The default log folder (``<output model>_logs``) when LOG_FOLDER is empty (a given
        LOG_FOLDER is checked as the output field it is)."""
        if self.output_model and not self.log_folder:
            return [("Log folder (LOG_FOLDER)", self.resolved_log_folder(), True)]
        return []

    def log_folder_problems(self) -> list[str]:
        """A log folder that holds files but none of a training log (:func:`is_training_log`:
        ``metrics.csv``, TensorBoard, the mark every run leaves first …) is refused: the run
        would mix its logs with, and replace, files the user keeps there."""
        if not self.output_model:
            return []
        folder = Path(self.resolved_log_folder())
        if not folder.is_dir():
            return []
        if any(folder.iterdir()) and not is_training_log(folder):
            return [f"The log folder {folder} (LOG_FOLDER) holds other files and no training "
                    "log: choose a new or empty folder, or a log folder of an earlier run."]
        return []

    def project_problems(self) -> list[str]:
        """PROJECT must be an existing labeling project, or (where the family reads one) a
        chips folder holding Export Training Chips' ``manifest.json``."""
        project = getattr(self, "project", "")
        if not project:
            return []
        p = Path(project)
        if p.is_dir() and self.chips_folder_kinds:
            if not (p / "manifest.json").is_file():
                return [f"The folder {project} is not a chips export (no manifest.json): "
                        f"choose a labeling project or {self.chips_folder_kinds}."]
            return []
        if not p.is_file():
            return [f"The labeling project {project} does not exist: check PROJECT."]
        return []

    def model_problems(self) -> list[str]:
        """OUTPUT_MODEL is required; INIT_MODEL, RESUME_FROM and :attr:`input_files` must
        exist; fine-tune and resume exclude each other. (Two outputs naming one file are
        refused by the shared output checks of :mod:`.outputs`.)"""
        out = []
        if not self.output_model:
            out.append("Output model (OUTPUT_MODEL) is required: choose a file name.")
        files = (("init_model", "INIT_MODEL"), ("resume_from", "RESUME_FROM"),
                 *self.input_files)
        for field, name in files:
            path = getattr(self, field)
            if path and not Path(path).is_file():
                out.append(f"The file {path} ({name}) does not exist: check the path.")
        if self.init_model and self.resume_from:
            out.append("Fine-tune (INIT_MODEL) and resume (RESUME_FROM) exclude each other: "
                       "clear one.")
        return out

    def resolved_log_folder(self) -> str:
        """LOG_FOLDER, or ``<output model stem>_logs`` next to the output model."""
        if self.log_folder:
            return self.log_folder
        p = Path(self.output_model)
        stem = p.name.split(".")[0] or "model"
        return str(p.with_name(f"{stem}_logs") if p.name else p / f"{stem}_logs")  # "/", "."

    def run(self, ctx: JobContext) -> dict:
        """Train in the one training engine with this family's task; a family whose training
        is more than one engine run (the chip classifier's two rounds and test report) names
        its own ``runner``, which drives the engine. With TRIALS, a hyperparameter search runs
        that many trainings (:mod:`.search`) and keeps the best."""
        if self.trials:
            from .search import run_search

            return run_search(self, ctx, lambda job, trial_ctx: job.train(trial_ctx))
        return self.train(ctx)

    def train(self, ctx: JobContext) -> dict:
        """One training run of this job (no search)."""
        if self.runner:
            return super().run(ctx)
        from ..families import make_task
        from .engine import run_training

        return run_training(self, make_task(self.kind), ctx)
