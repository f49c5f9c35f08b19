"""Pixel segmentation training data: label rasters from the labeling project (with per-job solid
distance overrides) or a chips folder, the sample plan, the class table and loss weights.

The epochs themselves run in the one training engine (``plugin/core/training/engine.py``) with
:class:`.task.PixelSegmentationTask`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext


@dataclass
class TrainSetup:
    """What the engine trains on (after the label rasters and the plan are made)."""

    sources: list
    plan: object
    classes: list[dict]                  # [{id, name, color}] incl. 0 background
    blur: dict[int, float]
    config: object
    pool: list = field(default_factory=list)  # every train candidate, when subsampling is on

    def epoch_patches(self, epoch: int) -> list:
        """Training patches of ``epoch``: the plan's for epoch 0; later epochs draw the feature
        and background patches again from the pool with the sampler's counting rule."""
        from ..sampling.plan import epoch_patches

        return epoch_patches(self.plan, self.pool, self.config, epoch)

    @property
    def num_outputs(self) -> int:
        return max(c["id"] for c in self.classes) + 1


# -- preparation --------------------------------------------------------------------------------
def _per_class(value, classes: list, name: str) -> dict[int, float]:
    """SOLID/BLUR override: {id: px} or a list (one per class, by id) → {id: px}."""
    from ..perclass import parse_per_class

    value = parse_per_class(value, name)
    if not value:
        return {}
    ids = [c.id for c in sorted(classes, key=lambda c: c.id)]
    if isinstance(value, dict):
        out = {int(k): float(v) for k, v in value.items()}
    else:
        if len(value) not in (1, len(ids)):
            raise UserError(f"{name} lists {len(value)} values for {len(ids)} classes.",
                            "Give one value per class (by class id) or a single value for all.")
        vals = list(value) * (len(ids) if len(value) == 1 else 1)
        out = dict(zip(ids, map(float, vals)))
    unknown = sorted(set(out) - set(ids))
    if unknown:
        raise UserError(f"{name} names class id(s) {unknown} that the project does not have.",
                        f"Use the class ids {ids}.")
    return out


def prepare(job, ctx: JobContext, log_folder: Path) -> TrainSetup:
    """Label rasters, sample plan and class table of ``job``."""
    from ..labeling.project import LabelingProject
    from ..sampling import SamplingConfig, sources_from_project
    from ..sampling.plan import plan_training

    if Path(job.project).is_dir():  # an exported segmentation chips folder
        from ..labeling.project import LabelClass
        from ..sampling.sources import read_manifest, sources_from_chips_folder

        sources = sources_from_chips_folder(job.project)
        pclasses = [LabelClass(c["id"], c["name"], c.get("color") or "#808080")
                    for c in read_manifest(job.project).get("classes", []) if c["id"] > 0]
        if job.solid_distances:
            ctx.log("Solid distances do not apply to a chips folder: its masks are already "
                    "burned.", "warning")
        blur = _per_class(job.blur_distances, pclasses, "BLUR_DISTANCES")
    else:
        project = LabelingProject.open(job.project)
        pclasses = sorted(project.classes(), key=lambda c: c.id)
        if not pclasses:
            raise UserError("The labeling project has no classes.",
                            "Add classes and draw labels with the Labeling Tool.")
        solid = _per_class(job.solid_distances, pclasses, "SOLID_DISTANCES")
        blur = {c.id: c.blur_distance for c in pclasses}
        blur.update(_per_class(job.blur_distances, pclasses, "BLUR_DISTANCES"))
        project_path = job.project
        changed = {cid: v for cid, v in solid.items()
                   if abs(v - next(c.solid_distance for c in pclasses if c.id == cid)) > 1e-9}
        if changed:  # burn with the job's solid distances: a private copy of the project
            project_path = str(log_folder / "project_solid_override.gpkg")
            shutil.copyfile(job.project, project_path)
            copy = LabelingProject.open(project_path)
            for cid, v in changed.items():
                copy.update_class(cid, solid_distance=v)
            ctx.log(f"Solid distances for this run: {changed} (the project is unchanged).")
        ctx.progress("prepare", 0, 3, "Building label rasters")
        sources = sources_from_project(project_path, str(log_folder / "label_rasters"), ctx)
    if not pclasses:
        raise UserError("The training data has no classes.",
                        "Add classes and draw labels with the Labeling Tool.")
    config = SamplingConfig(patch_size=job.patch_size, split=job.split, shuffle=job.shuffle,
                            seed=job.seed, feature_patch_percentage=job.feature_patch_percentage,
                            background_patch_ratio=job.background_patch_ratio)
    ctx.progress("prepare", 1, 3, "Planning patches")
    names = {c.id: c.name for c in pclasses}
    plan, pool = plan_training(sources, config, ctx, "Draw more labels, lower the patch size or "
                               "raise the split.", class_names=names)
    classes = [{"id": 0, "name": "background", "color": "#000000"}]
    classes += [{"id": c.id, "name": c.name, "color": c.color} for c in pclasses]
    return TrainSetup(sources, plan, classes, {k: v for k, v in blur.items() if v > 0}, config,
                      pool)


def _loss_weights(patches, num_outputs: int, loss_weight: float) -> np.ndarray:
    """Cross-entropy class weights: background 1, feature classes ``(bg/feat) ** loss_weight``
    (pixel shares in the training patches, capped to 1–50): 0 = equal, 1 = balanced."""
    bg = sum(p.class_pixels.get(0, 0) for p in patches)
    feat = sum(n for p in patches for c, n in p.class_pixels.items() if c)
    w = np.ones(num_outputs, np.float32)
    if loss_weight > 0 and feat > 0 and bg > 0:
        w[1:] = float(np.clip((bg / feat) ** loss_weight, 1.0, 50.0))
    return w
