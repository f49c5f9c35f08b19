"""The training length in optimiser steps, shown before training and warned about when short;
the same rule for every family (the training engine logs :func:`length_lines`).
"""

from __future__ import annotations

import math

from ..wording import plural

MIN_STEPS = 300    # fewer optimiser steps than this get a warning before training


#: Fewest batches per epoch (automatic length): 12 × the default 25 epochs = 300 steps, the
#: MIN_STEPS a model needs (issue 9). A small project (about 0.2 megapixels) then trains in about
#: 300 × 1.7 s ≈ 9 minutes with the defaults (U-Net/ResNet-18, 8 × 128² px) on one thread of a
#: 2-core CPU, within the issue's 10 minutes; 20 took 500 steps (14 minutes) and learnt no more:
#: validation IoU peaked halfway (bench/learn_real_imagery.py).
MIN_STEPS_PER_EPOCH = 12


def training_length(job, train_area_px: float,
                    patch_size: int | None = None) -> tuple[int, int, str]:
    """(batches per epoch, total optimiser steps, warning or "") of ``job`` for a training area
    of ``train_area_px`` pixels. STEPS_PER_EPOCH 0 (automatic): random windows covering the
    training area about twice, at least MIN_STEPS_PER_EPOCH batches; MAX_PATCHES caps it.
    ``patch_size``: the window edge in px when the job's PATCH_SIZE is automatic (0)."""
    size = patch_size or job.patch_size
    per_epoch = job.steps_per_epoch or automatic_steps(
        train_area_px / size ** 2, job.batch_size, passes=2)
    if job.max_patches:
        per_epoch = min(per_epoch, max(1, math.ceil(job.max_patches / job.batch_size)))
    total = per_epoch * job.epochs
    return per_epoch, total, short_warning(total)


def least_batches(default_epochs: int) -> int:
    """Fewest batches per epoch of a family's automatic length: :data:`MIN_STEPS` over the
    family's default epochs (25 → :data:`MIN_STEPS_PER_EPOCH` 12, 35 → 9, 100 → 3), so its
    defaults train at least MIN_STEPS steps while fewer EPOCHS still shorten a run (and get
    the warning)."""
    return math.ceil(MIN_STEPS / max(int(default_epochs), 1))


def automatic_steps(samples: float, batch_size: int, passes: float = 1.0,
                    least: int = MIN_STEPS_PER_EPOCH) -> int:
    """Batches per epoch of the automatic length (every family): ``passes`` × ``samples``
    (chips, grid cells, patch-sized areas) in batches of ``batch_size``, at least ``least``
    (a family's :func:`least_batches`), so that a small project still gets a few hundred
    optimiser steps with the defaults."""
    return max(int(least), math.ceil(passes * samples / max(int(batch_size), 1)))


def length_summary(epochs: int, per_epoch: int, batch_size: int | None,
                   knobs: str = "EPOCHS or STEPS_PER_EPOCH") -> dict:
    """The training length for a pre-flight summary: {"epochs", "per_epoch", "total" (optimiser
    steps), "text" (the line the training log shows), "warning" ("" when long enough)}."""
    text, warning = length_lines(epochs, per_epoch, batch_size, knobs)
    return {"epochs": int(epochs), "per_epoch": int(per_epoch),
            "total": int(epochs) * int(per_epoch), "text": text, "warning": warning}


def short_warning(total: int, knobs: str = "EPOCHS or STEPS_PER_EPOCH") -> str:
    """The warning for a run of ``total`` optimiser steps below :data:`MIN_STEPS` ("" when
    long enough); ``knobs``: the job's parameters that lengthen it."""
    return (f"Only {total} training steps: models usually need a few hundred (raise {knobs})."
            if total < MIN_STEPS else "")


def length_lines(epochs: int, per_epoch: int, batch_size: int | None,
                 knobs: str = "EPOCHS or STEPS_PER_EPOCH") -> tuple[str, str]:
    """(the training length for the log, the warning or "") of a run of ``epochs`` × ``per_epoch``
    batches of ``batch_size`` samples: what the training engine shows before training, for
    every family."""
    total = epochs * per_epoch
    of = f" of {batch_size}" if batch_size else ""
    return (f"Training length: {plural(total, 'optimiser step')} ({plural(epochs, 'epoch')} × "
            f"{plural(per_epoch, 'batch', 'batches')}{of}).", short_warning(total, knobs))

