"""What the training dialogs (Train Object Detection, Train Pixel Segmentation, the generated
training forms) share: the best and last model output rows, asking before trained models are
replaced, starting the training job, TensorBoard, the Training Model window, and the live
pre-flight summary's sampling task."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QMessageBox, QWidget

from ..core.errors import UserError
from ..core.jobs import Job
from ..core.wording import plural as _plural
from . import messages
from .job_dialog_support import (
    MODEL_FILTER,
    MODEL_SUFFIX,
    JobDialog,
    browse_file,
    browse_save_file,
    file_row,
    main_window,
    spec_tooltip,
)

SUMMARY_WAITING = "The summary appears once the project and patch size are valid."


def model_output_row(parent: QWidget, edit: QLineEdit, title: str) -> QHBoxLayout:
    """``edit`` with a "…" button asking for a model file to write: ``.dltmodel.safetensors``
    is added to a name that does not end in ``.safetensors`` (the rule of the train jobs,
    :func:`~..core.segmentation.jobs.model_file_name`)."""
    return file_row(edit, lambda: browse_save_file(parent, edit, title, MODEL_FILTER,
                                                   MODEL_SUFFIX, ".safetensors"))


def start_weights_row(parent: QWidget, job_cls: type[Job]) -> tuple[QComboBox, QHBoxLayout]:
    """The START_WEIGHTS chooser of a train dialog (every family alike,
    :mod:`~..core.training.start_weights`): an editable list of random and the family's
    pretrained choice (imagenet or coco), where a weights file's path may be typed, beside a
    "…" button choosing one. Read it with ``combo.currentText()``, show a value with
    ``combo.setEditText``."""
    from ..core.params import param_fields
    from ..core.training.start_weights import START_RANDOM, pretrained_choice

    ps = next(p for f, p in param_fields(job_cls) if f.name == "start_weights")
    combo = QComboBox()
    combo.setEditable(True)
    combo.setInsertPolicy(QComboBox.NoInsert)   # Enter must not add a typed path to the list
    combo.setObjectName("start_weights")
    combo.addItems([START_RANDOM, pretrained_choice(job_cls.family_task())])
    combo.setToolTip(spec_tooltip(ps))
    return combo, file_row(combo, lambda: browse_file(parent, combo.lineEdit(), ps.label,
                                                      ps.file_filter),
                           tooltip="Choose a weights file")


def suggest_model_outputs(source: str, word: str, best: QLineEdit,
                          last: QLineEdit | None = None) -> bool:
    """Fill empty model outputs after ``source`` (a project, chips folder or vector file that
    exists): ``<source stem>_<word>.dltmodel.safetensors`` and ``…_<word>_last…`` (in the
    output folder of the settings when one is set). Call it when the user has chosen or left
    the source field, never per keystroke. Whether names were filled."""
    from . import settings

    path = Path(source.strip()) if source.strip() else None
    if path is None or not path.name or not path.exists() or best.text().strip():
        return False
    base = settings.output_base(path)
    best.setText(f"{base}_{word}{MODEL_SUFFIX}")
    if last is not None and not last.text().strip():
        last.setText(f"{base}_{word}_last{MODEL_SUFFIX}")
    return True


def confirm_replacing_models(parent: QWidget, job: Job) -> bool:
    """True unless the job's output models exist and the user declines to replace them."""
    return confirm_replacing(parent, [job.output_model, job.output_last_model],
                             "Replace models?", "as training writes new models")


def confirm_replacing(parent: QWidget, paths: Iterable[str], title: str = "Replace files?",
                      when: str = "by this run") -> bool:
    """True unless one of ``paths`` exists and the user declines to replace them."""
    existing = [p for p in paths if p and Path(p).exists()]
    return not existing or QMessageBox.question(
        parent, title, f"These files exist and will be replaced {when}:\n"
        + "\n".join(existing)) == QMessageBox.Yes


def start_training(plugin, job: Job):
    """Start training ``job`` with the plugin's job manager; the task. UserError without a
    plugin (the dialog was not opened from the menu)."""
    if plugin is None:
        raise UserError("Training needs the plugin's job manager.",
                        "Open the dialog from the Deep Learning menu.")
    return plugin.jobs.start(job, f"Training {Path(job.output_model).name}")


def open_tensorboard(plugin, log_folder: str | Path) -> None:
    """Open TensorBoard on ``log_folder``; a failure is shown in the message bar."""
    try:
        from .tensorboard import manager

        manager(plugin).open(log_folder)
    except UserError as exc:
        messages.show_error(getattr(plugin, "iface", None), exc.message, exc.fix)


def training_window(plugin, task, job: Job):
    """A Training Model window following ``task`` (not shown yet), kept in ``plugin.windows``
    so that plugin unload closes it and the menu can show it again."""
    from .training_window import WINDOW_PREFIX, TrainingWindow

    window = TrainingWindow(task, job, parent=main_window(plugin), plugin=plugin)
    windows = getattr(plugin, "windows", None)
    if isinstance(windows, dict):
        windows[f"{WINDOW_PREFIX}{id(window)}"] = window
    return window


class TrainingDialog(JobDialog):
    """A training dialog: OK asks before replacing existing output models, then trains in the
    background with TensorBoard (``self.tensorboard_check``) and the Training Model window
    (unless ``self.background_check``)."""

    #: a background run keeps a hidden Training Model window (the menu can show it later)
    keeps_background_window = False
    #: "Preview on the map" (:func:`.map_preview.PreviewOption`), set by the dialog's layout
    preview_option = None
    map_preview = None

    def confirm(self, job: Job) -> bool:
        return confirm_replacing_models(self, job)

    def preview_row(self, project=None, kind: str = "") -> QWidget:
        """The "Preview on the map" option (:class:`.map_preview.PreviewOption`) for the
        dialog's layout, kept as :attr:`preview_option`; off and disabled when the family
        training job ``kind`` draws no preview (the family table's ``previews``)."""
        from ..core.families import family_of_kind
        from .map_preview import PreviewOption

        fam = family_of_kind(kind) if kind else None
        self.preview_option = PreviewOption(self, project,
                                            fam.title if fam and not fam.previews else "")
        return self.preview_option

    def start(self, job: Job):
        """Start training ``job``; TensorBoard and the Training Model window as chosen."""
        from .map_preview import start_preview
        from .tensorboard import remember_log_folder

        job, self.map_preview = start_preview(self.plugin, self.preview_option, job)
        self.task = start_training(self.plugin, job)
        if self.map_preview is not None:   # kept alive by the task until it ends
            self.task.map_preview = self.map_preview
            self.task.event.connect(self.map_preview.handle_event)
            for signal in (self.task.succeeded, self.task.failed, self.task.cancelled):
                signal.connect(self.map_preview.finish)
        log_folder = job.resolved_log_folder()
        remember_log_folder(log_folder)  # the TensorBoard… picker starts there
        if self.tensorboard_check.isChecked():
            open_tensorboard(self.plugin, log_folder)
        background = self.background_check.isChecked()
        if self.keeps_background_window or not background:
            self.window = training_window(self.plugin, self.task, job)
            if not background:
                self.window.show()
        return self.task

    # -- live pre-flight summary (``summary_job()`` shown in summary_status and summary_view) --
    summary_fields: tuple[str, ...] = ()   # the job fields the summary depends on
    summary_title = "Sampling summary"     # the name of its task
    _summary_key = ""
    _summary_task = None

    def _summary_changed(self, job: Job) -> bool:
        """Whether ``job``'s :attr:`summary_fields` differ from the last ones (now noted)."""
        key = summary_key(job, self.summary_fields)
        if key == self._summary_key:
            return False
        self._summary_key = key
        return True

    def _show_summary_waiting(self) -> None:
        self.summary_status.setText(SUMMARY_WAITING)
        self.summary_view.clear()

    def summary_ready(self, job: Job) -> bool:
        """Whether the summary job's values can be sampled (else the summary waits)."""
        source = getattr(job, "project", "") or getattr(job, "input", "")
        return (bool(source) and not job.problems()
                and getattr(job, "patch_size", 32) % 32 == 0)

    def _schedule_summary(self) -> None:
        """Sample again (once typing pauses) when the values the summary depends on changed."""
        job = self.summary_job()
        if not self._summary_changed(job):
            return
        self.summary, self.summary_error = None, ""
        if not self.summary_ready(job):
            # the job may become valid through a field the summary does not read (the
            # output model a reopened dialog clears, then names): check again on every change
            self._summary_key = None
            self._show_summary_waiting()
            return
        self.summary_status.setText("Sampling…")
        if self.live_summary:
            self._timer.start()

    def _summary_done(self, key: str, state: str, value) -> None:
        if sip.isdeleted(self) or key != self._summary_key:
            return
        if state == "ready":
            self.set_summary(value)
        else:
            self.set_summary(None, value)

    def _start_summary(self) -> None:
        """Run the summary job (the one running is cancelled); ``_summary_done(key, state,
        value)`` follows, with the key of the values it was run for."""
        key = self._summary_key
        self._summary_task = start_summary(
            self.jobs, self._summary_task, self.summary_job(), self.summary_title,
            lambda state, value: self._summary_done(key, state, value))


def summary_html(summary: dict, classes: list | None = None) -> str:
    """The pre-flight summary of a sampling (a ``sample_summary`` result) as a compact
    rich-text table: patches and pixels per class per split, then the warnings; ``classes``
    (labeling project classes) give the colours. Shared by the train dialogs."""
    names = {int(k): v for k, v in (summary.get("class_names") or {}).items()}
    colors = {}
    for c in classes or []:
        names.setdefault(c.id, c.name)
        colors[c.id] = c.color
    patches = summary.get("patches", {})
    pixels = {s: {int(k): v for k, v in (summary.get("pixels", {}).get(s) or {}).items()}
              for s in ("train", "validation")}
    rows = ["<tr><th></th><th align='right'>Training</th><th align='right'>Validation</th></tr>"]
    for key, label in (("feature", "Feature patches"), ("background", "Background patches"),
                       ("total", "Patches")):
        t = patches.get("train", {}).get(key, 0)
        v = patches.get("validation", {}).get(key, 0)
        bold = ("<b>", "</b>") if key == "total" else ("", "")
        rows.append(f"<tr><td>{bold[0]}{label}{bold[1]}</td><td align='right'>{bold[0]}{t:,}"
                    f"{bold[1]}</td><td align='right'>{bold[0]}{v:,}{bold[1]}</td></tr>")
    ids = sorted(set(pixels["train"]) | set(pixels["validation"]) | set(names))
    if ids:
        rows.append("<tr><td colspan='3'><i>Pixels per class</i></td></tr>")
    for cid in ids:
        name = "background" if cid == 0 else names.get(cid, f"class {cid}")
        swatch = (f"<span style='color:{colors[cid]}'>■</span> " if cid in colors else "")
        t, v = pixels["train"].get(cid, 0), pixels["validation"].get(cid, 0)
        style = " style='color:#b00020'" if cid and (not t or not v) else ""
        rows.append(f"<tr{style}><td>{swatch}{html.escape(name)}</td>"
                    f"<td align='right'>{t:,}</td><td align='right'>{v:,}</td></tr>")
    return _summary_page(rows, f"Patches of {summary.get('patch_size', '?')} px from "
                               f"{_plural(len(summary.get('sources', [])), 'raster')}.",
                         summary.get("warnings") or [], summary.get("length"))


def _summary_page(rows: list[str], note: str, warnings: list[str],
                  length: dict | None = None) -> str:
    """A pre-flight summary's table ``rows`` (HTML ``<tr>``), a grey ``note`` under it, the
    training ``length`` (``training.length.length_summary``: its text) and the ``warnings`` in
    amber."""
    text = f"<table cellspacing='0' cellpadding='2' width='100%'>{''.join(rows)}</table>"
    text += f"<p style='color:#555'>{html.escape(note)}</p>"
    if length:
        text += f"<p><b>{html.escape(length.get('text', ''))}</b></p>"
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        text += (f"<p style='color:#a05a00'><b>Warnings</b></p>"
                 f"<ul style='color:#a05a00'>{items}</ul>")
    return text


def rows_summary_html(summary: dict) -> str:
    """A pre-flight summary given as ``rows`` ([label, training, validation]), a ``note``, the
    training ``length`` and ``warnings`` (``instance_summary``, ``regression_summary``) as
    rich text."""
    rows = ["<tr><th></th><th align='right'>Training</th><th align='right'>Validation</th></tr>"]
    for label, train, validation in summary.get("rows", []):
        cells = "".join(f"<td align='right'>{v:,}</td>" if isinstance(v, int) else
                        f"<td align='right'>{html.escape(str(v))}</td>"
                        for v in (train, validation))
        rows.append(f"<tr><td>{html.escape(str(label))}</td>{cells}</tr>")
    return _summary_page(rows, summary.get("note", ""), summary.get("warnings") or [],
                         summary.get("length"))


def chip_summary_html(summary: dict) -> str:
    """The pre-flight summary of a chip classifier (a ``chip_summary`` result) as rich text:
    chips per class in the training, validation and test sets, then the warnings."""
    chips = summary.get("chips", {})
    splits = ("train", "validation", "test")
    rows = ["<tr><th></th>" + "".join(f"<th align='right'>{label}</th>" for label in
                                      ("Training", "Validation", "Test")) + "</tr>"]
    for name in summary.get("classes", []):
        counts = [chips.get(s, {}).get(name, 0) for s in splits]
        style = " style='color:#b00020'" if not counts[0] or not counts[1] else ""
        rows.append(f"<tr{style}><td>{html.escape(name)}</td>"
                    + "".join(f"<td align='right'>{n:,}</td>" for n in counts) + "</tr>")
    totals = summary.get("totals", {})
    rows.append("<tr><td><b>Chips</b></td>" + "".join(
        f"<td align='right'><b>{totals.get(s, 0):,}</b></td>" for s in splits) + "</tr>")
    return _summary_page(rows, f"Chips of up to {summary.get('max_side', '?')} px "
                               f"({summary.get('layout', '?')} layout).",
                         summary.get("warnings") or [], summary.get("length"))


# -- live pre-flight summary -------------------------------------------------------------------
def summary_key(job: Job, fields: Iterable[str]) -> str:
    """The values of ``fields`` that the summary depends on, as one comparable text."""
    return json.dumps({f: getattr(job, f) for f in fields}, sort_keys=True)


def start_summary(jobs, previous, job: Job, title: str,
                  done: Callable[[str, object], None]):
    """Cancel the ``previous`` summary task (when still there) and run ``job``; ``done`` gets
    ("ready", result) or ("failed", "message fix"). The new task."""
    if previous is not None and not sip.isdeleted(previous):
        previous.cancel()
    task = jobs.start(job, title, notify=False)
    task.succeeded.connect(lambda result: done("ready", result))
    task.failed.connect(lambda message, fix: done("failed", f"{message} {fix}".strip()))
    return task
