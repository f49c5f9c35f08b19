"""Hyperparameter search for every family's training job: TRIALS short runs of the one training
engine, chosen by Optuna, within a time budget; the best trial's model is the output model.

The search space comes from the job's own parameters (:func:`search_space`): the learning rate
(log-uniform from a tenth to ten times the job's value, inside the field's range), and where the
family has them, its LOSS and ARCHITECTURE choices and PATCH_SIZE (half, same, double). The
first trial is the job as given, so the search never ends with a model worse than the defaults
would give in the same time. Each trial gets an equal share of the budget; when its first batches
show that its epochs cannot finish in that share, it runs again with the epochs that do, so every
trial's learning-rate schedule ends (a short trial is a complete short training, not a cut one).
Trials are ranked by the family's validation metric (``TrainingTask.best_metric``, maximised or
minimised by ``best_mode``).

The search in the DSTL U-Net pipeline (Hyperopt's tree-structured Parzen estimator over learning
rate and architecture) and ENVI's randomised training parameters are the models; the sampler here
is Optuna's TPE (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization") seeded with
SEED, the pruner Optuna's median rule (a trial whose score after an epoch is worse than the
median of earlier trials at that epoch stops: Golovin et al. 2017, "Google Vizier").

Every trial writes its models and logs under ``<log folder>/search/trial_<n>``; the table of
trials (``search/trials.csv``, ``search/trials.md``) and a plot (``search/trials.png``) sit
beside them. Nothing is deleted: a trial folder is the user's to inspect.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import time
from pathlib import Path

from ..errors import UserError
from ..jobs import JobContext
from ..params import param_fields

#: Parameters a search may vary, where the job has them (in this order).
SEARCHED = ("learning_rate", "loss", "architecture", "patch_size")
#: Batches timed at the start of a trial to see whether its epochs fit its share of the budget.
CALIBRATION_BATCHES = 3
#: Share of a trial's time kept for validation and model writing when fitting its epochs.
TIME_MARGIN = 1.25
#: Trials that complete before the median rule may stop another (Optuna's default is 5; a
#: search on a CPU runs about ten trials, so two is the earliest comparison that means anything).
PRUNER_STARTUP_TRIALS = 2


@dataclasses.dataclass
class Dimension:
    """One searched parameter: ``field`` with ``low``/``high`` (log-uniform float) or
    ``choices`` (categorical)."""

    field: str
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0


def search_space(job) -> list[Dimension]:
    """The dimensions searched for ``job`` (see the module's text); a parameter whose spec has
    a single choice is not searched. The job's own values, as they resolve
    (``job.concrete_choice``), are always inside the space."""
    specs = {f.name: ps for f, ps in param_fields(type(job))}
    out: list[Dimension] = []
    for name in SEARCHED:
        ps, value = specs.get(name), getattr(job, name, None)
        if ps is None or value is None:
            continue
        if name == "learning_rate":
            low = max(value / 10, ps.minimum or 1e-7)
            high = min(value * 10, ps.maximum or 1.0)
            out.append(Dimension(name, low=low, high=max(high, low)))
        elif name == "patch_size":
            low, high = ps.minimum or 32, ps.maximum or 4096
            sizes = tuple(sorted({s for s in (value // 2, value, value * 2)
                                  if low <= s <= high and s % 32 == 0} | {value}))
            if len(sizes) > 1:
                out.append(Dimension(name, choices=sizes))
        elif ps.choices:   # each meaning once: an auto choice is the one it resolves to
            choices = tuple(dict.fromkeys(job.concrete_choice(name, c) for c in ps.choices))
            if len(choices) > 1:
                out.append(Dimension(name, choices=choices))
    return out


class TrialContext(JobContext):
    """The context a trial runs in: forwards logs and progress to the search's context (epochs
    renumbered across trials so the overall progress only goes up), reports each epoch's score
    to Optuna, and asks the engine to stop when the trial is pruned, its time is up or the user
    cancels (the engine then keeps the best model so far)."""

    def __init__(self, parent: JobContext, trial, number: int, trials: int, metric: str,
                 deadline: float, epochs: int = 0) -> None:
        super().__init__()
        self.parent, self.trial, self.number, self.trials = parent, trial, number, trials
        self.metric, self.deadline, self.epochs = metric, deadline, epochs
        self.pruned, self.timed_out, self.reports = False, False, 0
        self.fitted_epochs = 0        # > 0: the trial's epochs do not fit its time; rerun so
        self._first_batch: float | None = None

    @property
    def cancelled(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
        return self.parent.cancelled or self.pruned or self.timed_out or bool(self.fitted_epochs)

    def _calibrate(self, event: dict) -> None:
        """After :data:`CALIBRATION_BATCHES` batches of the first epoch, the seconds per batch
        tell whether ``epochs`` epochs fit before the deadline; when not, ``fitted_epochs``
        says how many do (at least 1), and the trial stops to run again that long, so its
        learning-rate schedule ends within its time, as a full run's does."""
        if not self.epochs or str(event.get("message", "")) != "epoch 1":
            return
        if event["step"] == 1:
            self._first_batch = time.monotonic()
        elif event["step"] == 1 + CALIBRATION_BATCHES and self._first_batch is not None:
            per_batch = (time.monotonic() - self._first_batch) / CALIBRATION_BATCHES
            epoch_seconds = per_batch * event["total"] * TIME_MARGIN
            left = self.deadline - self._first_batch
            if epoch_seconds * self.epochs > left:
                self.fitted_epochs = max(1, int(left // epoch_seconds))
            self.epochs = 0   # once per trial

    def emit(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "log":
            self.parent.emit({**event, "message": f"trial {self.number}: {event['message']}"})
        elif kind == "progress" and event.get("phase") in ("epoch", "batch"):
            self._progress(event)

    def _progress(self, event: dict) -> None:
        if event["phase"] == "epoch":
            score = event.get("metrics", {}).get(self.metric)
            if isinstance(score, (int, float)) and math.isfinite(score):
                self.trial.report(float(score), self.reports)
                self.reports += 1
                if self.trial.should_prune():
                    self.pruned = True
            total = int(event["total"])
            self.parent.emit({**event, "step": (self.number - 1) * total + event["step"],
                              "total": self.trials * total,
                              "message": f"trial {self.number}/{self.trials}, "
                                         + str(event.get("message", ""))})
        else:
            self._calibrate(event)
            self.parent.emit({**event, "message": f"trial {self.number}/{self.trials}, "
                                                  + str(event.get("message", ""))})


def run_search(job, ctx: JobContext, train) -> dict:
    """Search ``job``'s hyperparameters with ``job.trials`` trials in ``job.search_minutes``
    minutes; ``train(trial_job, trial_ctx) → result`` runs one trial (the family's training).

    Returns the best trial's result, with its model copied to OUTPUT_MODEL (and its last model
    to OUTPUT_LAST_MODEL when set) and ``search``: the table, plot, best parameters and the
    first (as-given) trial's score. Raises UserError when Optuna is missing or no trial
    finished an epoch within the budget.
    """
    try:
        import optuna
    except ImportError:
        raise UserError("The hyperparameter search needs the Optuna library, which this Python "
                        "environment lacks.",
                        "Install it (pip install optuna) or set TRIALS to 0.") from None
    from ..families import make_task

    task = make_task(job.kind)
    metric, mode = task.best_metric, task.best_mode
    space = search_space(job)
    folder = Path(job.resolved_log_folder()) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    budget = job.search_minutes * 60
    started = time.monotonic()
    per_trial = budget / job.trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if mode == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=job.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=1))
    study.enqueue_trial({d.field: job.concrete_choice(d.field, getattr(job, d.field))
                         for d in space})
    ctx.log(f"Hyperparameter search: {job.trials} trials in {job.search_minutes:g} minutes "
            f"(about {per_trial / 60:.1f} minutes each) over "
            + (", ".join(_describe(d) for d in space) or "the seed only")
            + f"; ranked by {metric} ({'higher' if mode == 'max' else 'lower'} is better).")
    rows: list[dict] = []
    results: dict[int, dict] = {}

    def objective(trial) -> float:
        number = trial.number + 1
        values = {d.field: (trial.suggest_float(d.field, d.low, d.high, log=True) if not
                            d.choices else trial.suggest_categorical(d.field, list(d.choices)))
                  for d in space}
        here = folder / f"trial_{number}"
        trial_job = dataclasses.replace(
            job, trials=0, resume_from="", log_folder=str(here / "logs"),
            output_model=str(here / "model.dltmodel.safetensors"),
            output_last_model=str(here / "model_last.dltmodel.safetensors")
            if job.output_last_model else "",
            seed=job.seed + trial.number, **values)
        deadline = min(time.monotonic() + per_trial, started + budget)
        t0 = time.monotonic()
        tctx = TrialContext(ctx, trial, number, job.trials, metric, deadline, trial_job.epochs)
        result = train(trial_job, tctx)
        if tctx.fitted_epochs and not ctx.cancelled:
            ctx.log(f"Trial {number}: {trial_job.epochs} epochs do not fit its "
                    f"{per_trial / 60:.1f} minutes; it runs {tctx.fitted_epochs} instead.")
            trial_job = dataclasses.replace(trial_job, epochs=tctx.fitted_epochs)
            tctx = TrialContext(ctx, trial, number, job.trials, metric, deadline)
            result = train(trial_job, tctx)
        score = result.get("best_score")
        state = ("pruned" if tctx.pruned else "cancelled" if ctx.cancelled
                 else "time up" if tctx.timed_out else "complete")
        rows.append({"trial": number, "state": state, metric: score,
                     "epochs": result.get("epochs_run"), "minutes": (time.monotonic() - t0) / 60,
                     **values})
        ctx.log(f"Trial {number}: {metric} {_fmt(score)} ({state}; "
                + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()) + ")")
        if ctx.cancelled:
            study.stop()
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise optuna.TrialPruned()
        results[number] = result
        return float(score)

    study.optimize(objective, n_trials=job.trials, timeout=budget,
                   callbacks=[lambda s, t: s.stop() if ctx.cancelled else None])
    if not results:
        raise UserError(f"No trial of the search finished an epoch in {job.search_minutes:g} "
                        "minutes.", "Give the search more time (SEARCH_MINUTES) or fewer "
                        "trials (TRIALS).")
    best = (max if mode == "max" else min)(results, key=lambda n: results[n]["best_score"])
    _adopt(results[best], job)
    table, plot = write_trials(folder, rows, metric, mode, best)
    ctx.artifact("search_table", str(table))
    first = rows[0].get(metric) if rows else None
    ctx.log(f"Best trial: {best} ({metric} {_fmt(results[best]['best_score'])}; the job as "
            f"given: {_fmt(first)}); its model is {job.output_model}.")
    search = {"trials": len(rows), "best_trial": best, "table": str(table),
              "plot": str(plot) if plot else None, "first_score": first,
              "best_params": {k: v for k, v in rows[best - 1].items() if k in
                              {d.field for d in space}},
              "seconds": round(time.monotonic() - started, 1)}
    return {**results[best], "output_model": job.output_model,
            "output_last_model": job.output_last_model or None, "search": search}


def _adopt(result: dict, job) -> None:
    """Copy the best trial's models to the job's outputs (through a temporary file, so an
    interrupted copy never leaves half a model under the user's name)."""
    pairs = [(result.get("output_model"), job.output_model)]
    if job.output_last_model:
        pairs.append((result.get("output_last_model"), job.output_last_model))
    for source, target in pairs:
        if not source or not Path(source).is_file():
            continue
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(f"{target}.partial")
        shutil.copyfile(source, partial)
        partial.replace(target)


def write_trials(folder: Path, rows: list[dict], metric: str, mode: str,
                 best: int) -> tuple[Path, Path | None]:
    """``trials.csv`` and ``trials.md`` (one row per trial: number, state, score, epochs,
    minutes, parameters; the best marked) and ``trials.png`` (score per trial with the best so
    far) in ``folder``. Returns (markdown table, plot or None when matplotlib is missing)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(folder / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        mark = " **(best)**" if r["trial"] == best else ""
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + mark + " |")
    table = folder / "trials.md"
    table.write_text("# Hyperparameter search\n\n" + "\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return table, None
    scored = [(r["trial"], r[metric]) for r in rows
              if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if scored:
        xs, ys = zip(*scored)
        ax.scatter(xs, ys, label="trial")
        pick = max if mode == "max" else min
        ax.step(xs, [pick(ys[:i + 1]) for i in range(len(ys))], where="post",
                label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    plot = folder / "trials.png"
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    return table, plot


def _describe(d: Dimension) -> str:
    if d.choices:
        return f"{d.field} in {', '.join(map(str, d.choices))}"
    return f"{d.field} {d.low:.2g}–{d.high:.2g}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
