"""The Export Training Chips dialog: builds an ``export_chips`` job, shows the sampler's pre-flight
summary live (computed by a ``sample_summary`` job in a worker process) and runs the export in the
background."""

from __future__ import annotations

import html
import json
from pathlib import Path

from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..core.sampling.jobs import FORMAT_LABELS, ExportChipsJob, SampleSummaryJob
from ..core.wording import for_dialog
from . import messages
from .job_dialog_support import (
    add_job_file_buttons,
    ask_load_job,
    ask_save_job,
    browse_file,
    browse_folder,
    checked_problems,
    counted,
    double_spin,
    file_row,
    fit_to_screen,
    form_group,
    guard_wheel,
    int_spin,
    labeling_tool_project,
    lay_out_dialog,
    on_change,
    problem_label,
    remember_job,
    remembered_job,
    scrolled,
    show_problems,
    show_value,
    single_shot_timer,
    widget_value,
)
from .task import JobManager

SETTINGS_KEY = "deep_learning_trainer/export_chips/job"
SUMMARY_DELAY_MS = 500
# fields that change the pre-flight summary (the others only change how chips are written)
_SUMMARY_FIELDS = ("project", "format", "patch_size", "stride", "split", "shuffle", "seed",
                   "feature_patch_percentage", "background_patch_ratio", "pad_small_features",
                   "box_size", "max_nodata", "blocked_split", "block_size", "buffer_patches")


class ExportChipsDialog(QDialog):
    """Export Training Chips. ``jobs`` runs the summary and export jobs (a private manager if
    None); ``live_summary=False`` turns the live summary off (tests)."""

    def __init__(self, parent: QWidget | None = None, jobs: JobManager | None = None,
                 iface=None, live_summary: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("Deep Learning Trainer — Export Training Chips")
        self.jobs = jobs if jobs is not None else JobManager(iface, self)
        self.iface = iface
        self.live_summary = live_summary
        self.export_task = None
        self._summary_task = None
        self._summary_key = ""
        self._timer = single_shot_timer(self, SUMMARY_DELAY_MS, self.refresh_summary)
        self._build()
        self.set_job(self._remembered())
        self._changed()
        fit_to_screen(self, 1040, 680)

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        spec = {f: ps for f, ps in ((f.name, f.metadata["param"])
                                    for f in ExportChipsJob.__dataclass_fields__.values()
                                    if "param" in f.metadata)}
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("labeling project (.gpkg)")
        self.format_combo = QComboBox()
        for key, label in FORMAT_LABELS.items():
            self.format_combo.addItem(label, key)
        self.patch_spin = int_spin(8, 8192, 32, " px")
        self.stride_spin = int_spin(0, 8192, 32, " px", "patch size (no overlap)")
        self.split_slider = QSlider(Qt.Horizontal)
        self.split_slider.setRange(0, 100)
        self.split_slider.setTickInterval(10)
        self.split_slider.setTickPosition(QSlider.TicksBelow)
        self.split_label = QLabel()
        self.split_label.setMinimumWidth(190)
        split_row = QWidget()
        lay = QHBoxLayout(split_row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.split_slider, 1)
        lay.addWidget(self.split_label)
        self.shuffle_check = QCheckBox("Shuffle rasters")
        self.seed_spin = int_spin(0, 2**31 - 1)
        self.fpp_spin = double_spin(0, 1, step=0.05)
        self.bpr_spin = double_spin(0, 100, step=0.05)
        self.pad_check = QCheckBox("Pad small features")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("a new or empty folder")

        form = QFormLayout()
        form.addRow("Labeling project",
                    file_row(self.project_edit, self._browse_project, "Browse…"))
        form.addRow("Format", self.format_combo)
        form.addRow("Patch size", self.patch_spin)
        form.addRow("Stride", self.stride_spin)
        form.addRow("Training / validation", split_row)
        form.addRow("", self.shuffle_check)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Feature patch percentage", self.fpp_spin)
        form.addRow("Background patch ratio", self.bpr_spin)
        form.addRow("", self.pad_check)
        form.addRow("Output folder", file_row(self.output_edit, self._browse_output, "Browse…"))

        self.advanced_check = QCheckBox("Show advanced settings")
        self.advanced_check.setToolTip("Point box size, nodata limit, blocked split and the "
                                       "settings of feature chips and multi-label tags.")
        self.advanced, adv = form_group("Advanced")
        self.box_spin = double_spin(1, 4096, step=1, suffix=" px")
        self.nodata_spin = double_spin(0, 100, decimals=0, step=5, suffix=" %")
        self.blocked_check = QCheckBox("Spatially blocked split within each raster")
        self.block_spin = counted(int_spin(1, 1000), "patch")
        self.buffer_spin = counted(int_spin(0, 100), "patch")
        self.min_side_spin = int_spin(0, 8192, suffix=" px")
        self.max_side_spin = int_spin(1, 8192, suffix=" px")
        self.resize_spin = int_spin(0, 8192, suffix=" px")
        self.resize_spin.setSpecialValueText("no resize")
        self.fraction_spin = double_spin(0, 100, decimals=1, step=1, suffix=" %")
        self.overwrite_check = QCheckBox("Replace a previous export in the output folder")
        for label, widget in (("Box size for points", self.box_spin),
                              ("Skip patches with nodata over", self.nodata_spin),
                              ("", self.blocked_check), ("Block size", self.block_spin),
                              ("Buffer", self.buffer_spin),
                              ("Feature chips: min side", self.min_side_spin),
                              ("Feature chips: max side", self.max_side_spin),
                              ("Feature chips: resize to", self.resize_spin),
                              ("Multi-label: min class share", self.fraction_spin),
                              ("", self.overwrite_check)):
            adv.addRow(label, widget)
        self.advanced_check.toggled.connect(self._show_advanced)
        self._show_advanced(False)
        self.shuffle_check.setToolTip("Off: the same split every run. On: the split is drawn "
                                      "with the seed.")
        self.pad_check.setToolTip("Object boxes smaller than 25 px in x or y grow to 25 px "
                                  "around their centre.")
        self.seed_spin.setToolTip("The random seed of the shuffled split and of the patches "
                                  "drawn: the same seed gives the same chips.")
        self.nodata_spin.setToolTip("Patches whose share of nodata pixels is above this are "
                                    "skipped (0–100 %).")
        self.fraction_spin.setToolTip("A class becomes a tag of a chip when it covers at least "
                                      "this share of the chip (multi-label CSV only).")
        self.min_side_spin.setToolTip("Features smaller than this are skipped (feature chips "
                                      "only).")
        self.block_spin.setToolTip("Side of the blocks, in patches, that go wholly to training "
                                   "or validation (blocked split only).")
        self.buffer_spin.setToolTip("Patches left out between training and validation blocks, "
                                    "so that they do not share pixels (blocked split only).")
        self.overwrite_check.setToolTip("Allowed only for a folder that holds an earlier chip "
                                        "export (its manifest.json).")
        self.project_edit.setToolTip(spec["project"].help)
        self.output_edit.setToolTip("The chips, labels and manifest.json go here: a new or "
                                    "empty folder.")
        self.split_slider.setToolTip(spec["split"].help)
        self.blocked_check.setToolTip(spec["blocked_split"].help)
        for name, widget in (("patch_size", self.patch_spin), ("stride", self.stride_spin),
                             ("feature_patch_percentage", self.fpp_spin),
                             ("background_patch_ratio", self.bpr_spin),
                             ("box_size", self.box_spin), ("format", self.format_combo),
                             ("max_side", self.max_side_spin), ("resize", self.resize_spin)):
            if name in spec and spec[name].help:
                widget.setToolTip(spec[name].help)
        self.resize_spin.setToolTip("Feature chips are resized to this side (0: kept at their "
                                    "size; feature chips only).")
        self.box_spin.setToolTip("Side of the square box around each point label (object "
                                 "detection and feature chips).")
        self.format_combo.setToolTip("How the chips and their labels are written; "
                                     "docs/export_formats.md shows each layout.")

        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.RichText)
        self.summary_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.summary_label.setMinimumHeight(150)
        summary_box = QGroupBox("Pre-flight summary")
        QVBoxLayout(summary_box).addWidget(self.summary_label)

        self.problem_label = problem_label()

        columns = QHBoxLayout()
        left_widget = QWidget()
        left = QVBoxLayout(left_widget)
        left.setContentsMargins(0, 0, 6, 0)
        left.addLayout(form)
        left.addWidget(self.advanced_check)
        left.addWidget(self.advanced)
        left.addStretch(1)
        self.settings_area = scrolled(left_widget)
        self.settings_area.setMinimumWidth(left_widget.sizeHint().width() + 24)
        columns.addWidget(self.settings_area, 5)
        columns.addWidget(summary_box, 4)
        lay_out_dialog(self, columns, "Export", self.problem_label)
        add_job_file_buttons(self.buttons, self._save_job_file, self._load_job_file)

        on_change(self._changed, self.project_edit, self.output_edit, self.format_combo,
                  self.patch_spin, self.stride_spin, self.seed_spin, self.block_spin,
                  self.buffer_spin, self.min_side_spin, self.max_side_spin, self.resize_spin,
                  self.split_slider, self.fpp_spin, self.bpr_spin, self.box_spin,
                  self.nodata_spin, self.fraction_spin, self.shuffle_check, self.pad_check,
                  self.blocked_check, self.overwrite_check)

    def _show_advanced(self, on: bool) -> None:
        """Advanced settings show inside the scroll area: the dialog keeps its size."""
        self.advanced.setVisible(on)

    def _enable_applicable(self) -> None:
        """Settings that do not apply to the chosen format or split are disabled."""
        fmt = self.format_combo.currentData()
        detection, feature_chips = fmt in ("coco", "voc", "yolo"), fmt == "gbdx"
        self.pad_check.setEnabled(detection)
        self.box_spin.setEnabled(detection or feature_chips)
        for w in (self.min_side_spin, self.max_side_spin, self.resize_spin):
            w.setEnabled(feature_chips)
        self.fraction_spin.setEnabled(fmt == "multilabel_csv")
        blocked = self.blocked_check.isChecked()
        self.block_spin.setEnabled(blocked)
        self.buffer_spin.setEnabled(blocked)
        self.seed_spin.setEnabled(self.shuffle_check.isChecked() or self.fpp_spin.value() < 1
                                  or self.bpr_spin.value() > 0)

    # -- job ↔ widgets -------------------------------------------------------------------------
    def _fields(self) -> dict:
        """The job fields shown one to one by a widget (field name → widget)."""
        return dict(project=self.project_edit, format=self.format_combo,
                    patch_size=self.patch_spin, stride=self.stride_spin,
                    shuffle=self.shuffle_check, seed=self.seed_spin,
                    feature_patch_percentage=self.fpp_spin, background_patch_ratio=self.bpr_spin,
                    pad_small_features=self.pad_check, box_size=self.box_spin,
                    blocked_split=self.blocked_check, block_size=self.block_spin,
                    buffer_patches=self.buffer_spin, min_side=self.min_side_spin,
                    max_side=self.max_side_spin, resize=self.resize_spin,
                    output_folder=self.output_edit, overwrite=self.overwrite_check)

    def job(self) -> ExportChipsJob:
        """The job the widgets describe (percent boxes hold shares × 100)."""
        return ExportChipsJob(
            **{name: widget_value(w) for name, w in self._fields().items()},
            split=float(self.split_slider.value()),
            max_nodata=round(self.nodata_spin.value() / 100.0, 4),
            min_class_fraction=round(self.fraction_spin.value() / 100.0, 4))

    def set_job(self, job: ExportChipsJob) -> None:
        for name, widget in self._fields().items():
            show_value(widget, getattr(job, name))
        self.split_slider.setValue(int(round(job.split)))
        self.nodata_spin.setValue(job.max_nodata * 100.0)
        self.fraction_spin.setValue(job.min_class_fraction * 100.0)

    def _remembered(self) -> ExportChipsJob:
        return remembered_job(SETTINGS_KEY, ExportChipsJob())

    def remember(self) -> None:
        remember_job(SETTINGS_KEY, self.job())

    # -- validation ----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        job = self.job()
        out = checked_problems(job)
        folder = Path(job.output_folder) if job.output_folder else None
        if folder and folder.is_dir() and any(folder.iterdir()):
            if not job.overwrite:
                out.append(f"The output folder {folder.name} is not empty: choose a new or empty "
                           "folder, or tick Advanced ▸ Replace a previous export.")
            elif not (folder / "manifest.json").is_file():
                out.append(f"The output folder {folder.name} holds no previous chip export, so it "
                           "cannot be replaced: choose a new or empty folder.")
        return [for_dialog(p, type(job)) for p in out]

    def _changed(self, *_args) -> None:
        split = self.split_slider.value()
        self.split_label.setText(f"{split} % training / {100 - split} % validation")
        self._enable_applicable()
        show_problems(self.problem_label, self.ok_button, self.problems(), limit=2)
        key = json.dumps({k: getattr(self.job(), k) for k in _SUMMARY_FIELDS})
        if key != self._summary_key:
            self._summary_key = key
            self._timer.start()

    # -- live summary --------------------------------------------------------------------------
    def summary_job(self) -> SampleSummaryJob | None:
        job = self.job()
        if not job.project or not Path(job.project).is_file():
            return None
        params = {k: getattr(job, k) for k in _SUMMARY_FIELDS}
        summary = SampleSummaryJob(**params)
        return None if summary.problems() else summary

    def refresh_summary(self) -> None:
        """Start a summary job for the current settings (the previous one is cancelled)."""
        if not self.live_summary:
            return
        previous = self._summary_task
        if previous is not None and not sip.isdeleted(previous) and not previous.outcome:
            for signal in (previous.succeeded, previous.failed, previous.cancelled):
                try:
                    signal.disconnect()
                except TypeError:
                    pass
            previous.cancel()
        self._summary_task = None
        job = self.summary_job()
        if self.format_combo.currentData() == "gbdx":
            self.summary_label.setText(
                "One chip is cut around each label feature: features with a side over the "
                "maximum are skipped, smaller ones are zero-padded to it. The split is made by "
                "raster, or by feature within a single raster.")
            return
        if job is None:
            self.summary_label.setText("<i>Choose a labeling project with valid settings to see "
                                       "what will be exported.</i>")
            return
        self.summary_label.setText("<i>Computing the summary…</i>")
        task = self.jobs.start(job, "Sampling summary", notify=False)
        task.succeeded.connect(self.show_summary)
        task.failed.connect(lambda message, fix: self.show_summary_error(message, fix))
        self._summary_task = task

    def show_summary_error(self, message: str, fix: str) -> None:
        if sip.isdeleted(self):
            return
        self.summary_label.setText(f"<span style='color:#b00020'>{html.escape(message)}</span> "
                                   f"{html.escape(fix)}")

    def show_summary(self, summary: dict) -> None:
        if sip.isdeleted(self):
            return
        self.summary_label.setText(summary_html(summary))


    # -- actions -------------------------------------------------------------------------------
    def accept(self) -> None:
        problems = self.problems()
        if problems:
            self.problem_label.setText(" ".join(problems))
            return
        job = self.job()
        self.remember()
        task = self.jobs.start(job, "Exporting chips")
        iface = self.iface

        def done(result: dict) -> None:
            messages.show_success(iface, f"{result.get('count', 0)} chips written to "
                                         f"{result.get('output_folder', '')}.")

        task.succeeded.connect(done)
        self.export_task = task
        QDialog.accept(self)


    def _save_job_file(self) -> None:
        ask_save_job(self, self.job(), f"{ExportChipsJob.kind}.json")

    def _load_job_file(self) -> None:
        job = ask_load_job(self, ExportChipsJob, show_error=self._show_load_error)
        if job is not None:
            self.set_job(job)

    def _show_load_error(self, text: str) -> None:
        self.problem_label.setText(text)
        self.problem_label.show()

    def _browse_project(self) -> None:
        browse_file(self, self.project_edit, "Labeling project", "Labeling project (*.gpkg)")

    def _browse_output(self) -> None:
        browse_folder(self, self.output_edit, "Output folder")


def summary_html(summary: dict) -> str:
    """The pre-flight summary as a small HTML report."""
    names = {str(k): v for k, v in summary.get("class_names", {}).items()}
    p = summary.get("patches", {})
    rows = "".join(
        f"<tr><td>{split.capitalize()}</td><td align='right'>{p.get(split, {}).get('feature', 0)}"
        f"</td><td align='right'>{p.get(split, {}).get('background', 0)}</td>"
        f"<td align='right'><b>{p.get(split, {}).get('total', 0)}</b></td></tr>"
        for split in ("train", "validation"))
    out = ("<table cellspacing='0' cellpadding='3'><tr><th align='left'>Patches</th>"
           "<th>feature</th><th>background</th><th>total</th></tr>" + rows + "</table>")
    pixels, per_class = summary.get("pixels", {}), summary.get("patches_per_class", {})
    ids = sorted({int(k) for split in pixels.values() for k in split} | {int(k) for k in names})
    if ids:
        out += ("<table cellspacing='0' cellpadding='3'><tr><th align='left'>Class</th>"
                "<th>train px</th><th>val px</th><th>patches</th></tr>")
        for cid in ids:
            name = "background" if cid == 0 else names.get(str(cid), str(cid))
            tr = pixels.get("train", {}).get(str(cid), pixels.get("train", {}).get(cid, 0))
            va = pixels.get("validation", {}).get(str(cid),
                                                  pixels.get("validation", {}).get(cid, 0))
            pt = per_class.get("train", {}).get(str(cid), 0)
            pv = per_class.get("validation", {}).get(str(cid), 0)
            patches = "" if cid == 0 else f"{pt} / {pv}"
            out += (f"<tr><td>{html.escape(name)}</td><td align='right'>{tr:,}</td>"
                    f"<td align='right'>{va:,}</td><td align='right'>{patches}</td></tr>")
        out += "</table>"
    warnings = summary.get("warnings", [])
    if warnings:
        out += "".join(f"<p style='color:#a15c00'>⚠ {html.escape(w)}</p>" for w in warnings)
    else:
        out += "<p style='color:#1b7f3b'>No problem found.</p>"
    return out


def open_export_chips(plugin) -> ExportChipsDialog:
    """Menu entry: show the dialog (kept on the plugin so it is not garbage-collected)."""
    iface = getattr(plugin, "iface", None)
    parent = iface.mainWindow() if iface is not None else None
    dialog = ExportChipsDialog(parent, getattr(plugin, "jobs", None), iface)
    project = labeling_tool_project(plugin)
    if project:
        dialog.project_edit.setText(project)
    plugin._export_chips_dialog = dialog
    guard_wheel(dialog)
    dialog.show()
    return dialog
