"""The Labeling Tool's active-learning loop (the group "Label here next"): Suggest areas to label,
go to the Next suggestion, Skip it, and Fine-tune the model with the new labels in one click.

- **Suggest…** runs the ``suggest_labels`` job (:mod:`...core.suggest_labels`) in a worker with
  the model last used (asked for the first time) and shows the project's ``label_suggestions``
  layer: open suggestions outlined in orange with their rank, done ones green, skipped grey.
- **Next** zooms the map to the open suggestion of the lowest rank after the current one.
- A label drawn inside an open suggestion marks it done (the label layers' ``featureAdded``);
  **Skip** marks the current one skipped (later runs avoid skipped places).
- **Fine-tune** starts the family's training with the train dialog's last settings, this project,
  INIT_MODEL the model the suggestions came from and new output names beside it (never replacing
  a file), in the Training Model window.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsPalLayerSettings,
    QgsProject,
    QgsRendererCategory,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject
from qgis.PyQt.QtGui import QColor, QFont
from qgis.PyQt.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QPushButton

from ...core.errors import UserError
from ...core.job_fields import MODEL_FILTER
from ...core.suggest_labels import LAYER, SuggestLabelsJob
from ...core.vector_output import has_layer
from .. import messages
from ..job_dialog_support import remember_value, remembered_job, remembered_value
from . import layers as ql

MODEL_KEY = "deep_learning_trainer/suggest_labels/model"
COLOURS = {"open": "#ff7f00", "done": "#33a02c", "skipped": "#9e9e9e"}


class SuggestionLoop(QObject):
    """The buttons and state of the loop for one :class:`.dock.LabelingDock`."""

    def __init__(self, dock) -> None:
        super().__init__(dock)
        self.dock = dock
        self.current: int | None = None    # feature id of the suggestion shown last
        self.task = None
        self.box = QGroupBox("Label here next")
        self.row = QHBoxLayout(self.box)
        self.suggest_button = QPushButton("Suggest…")
        self.suggest_button.setToolTip("Score the project's rasters with a trained model and "
                                       "suggest where labels would help it most (outside "
                                       "labels and validation areas).")
        self.next_button = QPushButton("Next")
        self.next_button.setToolTip("Zoom to the next open suggestion; labels drawn inside it "
                                    "mark it done.")
        self.skip_button = QPushButton("Skip")
        self.skip_button.setToolTip("Mark the current suggestion skipped (not suggested again).")
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.setToolTip("Train again from the model of the suggestions with the "
                                        "new labels and the train dialog's last settings.")
        self.suggest_button.clicked.connect(lambda: self.suggest())
        self.next_button.clicked.connect(lambda: self.next())
        self.skip_button.clicked.connect(lambda: self.skip())
        self.finetune_button.clicked.connect(lambda: self.fine_tune())
        for b in self.buttons():
            self.row.addWidget(b)

    def buttons(self) -> list[QPushButton]:
        return [self.suggest_button, self.next_button, self.skip_button, self.finetune_button]

    def set_enabled(self, has_project: bool) -> None:
        for b in self.buttons():
            b.setEnabled(has_project)

    @property
    def model(self) -> str:
        """The model the suggestions come from (the last one used, remembered)."""
        return str(remembered_value(MODEL_KEY) or "")

    # -- suggest ---------------------------------------------------------------------------
    def suggest(self, model: str | None = None, count: int | None = None):
        """Run Suggest Areas to Label on the dock's project in the background; the task.
        Asks for the model when none was used before (``model`` given: that one)."""
        project = self.dock.project
        if project is None or self.dock.plugin is None or not self.dock.save_edits():
            return None
        model = model or self.model
        if not model or not Path(model).is_file():
            model, _ = QFileDialog.getOpenFileName(self.dock, "Model to suggest with",
                                                   str(project.path.parent), MODEL_FILTER)
            if not model:
                return None
        job = SuggestLabelsJob(project=str(project.path), model=model,
                               **({"count": count} if count else {}))
        problems = job.problems()
        if problems:
            messages.show_error(self.dock.iface, " ".join(problems))
            return None
        remember_value(MODEL_KEY, model)
        self.task = self.dock.plugin.jobs.start(job, f"Suggesting areas to label in "
                                                     f"{project.name}")
        self.task.succeeded.connect(self._suggested)
        self.suggest_button.setEnabled(False)
        for signal in (self.task.succeeded, self.task.failed, self.task.cancelled):
            signal.connect(lambda *_: self.suggest_button.setEnabled(
                self.dock.project is not None))
        return self.task

    def _suggested(self, result: dict) -> None:
        layer = self.layer(create=True)
        if layer is None:
            return
        layer.dataProvider().reloadData()
        layer.triggerRepaint()
        self.current = None
        top = (result.get("top") or [{}])[0]
        messages.show_success(self.dock.iface, f"{result.get('suggestions', 0)} suggestions "
                              f"(best: {top.get('reason', '')}); Next goes there.")

    # -- the layer -------------------------------------------------------------------------
    def layer(self, create: bool = False) -> QgsVectorLayer | None:
        """The map layer of the project's ``label_suggestions`` (added, styled, when ``create``
        and the project has the layer)."""
        project = self.dock.project
        if project is None:
            return None
        qproject = QgsProject.instance()
        for lyr in qproject.mapLayers().values():
            if isinstance(lyr, QgsVectorLayer) and ql._same_source(lyr, project.path, LAYER):
                return lyr
        if not create or not has_layer(project.path, LAYER):   # none yet: no OGR warning
            return None
        lyr = QgsVectorLayer(f"{project.path}|layername={LAYER}", "Label suggestions", "ogr")
        if not lyr.isValid():
            return None
        style_suggestions(lyr)
        qproject.addMapLayer(lyr, False)
        ql.project_group(qproject, project.name).insertLayer(0, lyr)
        return lyr

    def open_suggestions(self) -> list:
        """The open suggestions, by rank (features of the layer)."""
        layer = self.layer(create=True)
        if layer is None:
            return []
        feats = [f for f in layer.getFeatures(QgsFeatureRequest())
                 if str(f["status"]) == "open"]
        return sorted(feats, key=lambda f: int(f["rank"] or 0))

    # -- next / skip / done ----------------------------------------------------------------
    def next(self):
        """Zoom to the open suggestion after the current one (by rank; the first after the
        last); the feature, or None when none is open."""
        feats = self.open_suggestions()
        if not feats:
            messages.show_success(self.dock.iface, "No open suggestion: Suggest… finds "
                                  "new ones.")
            self.current = None
            return None
        ranks = [int(f["rank"] or 0) for f in feats]
        now = next((int(f["rank"] or 0) for f in feats if f.id() == self.current), None)
        later = [f for f, r in zip(feats, ranks) if now is None or r > now]
        feat = (later or feats)[0]
        self.current = feat.id()
        self._zoom(feat)
        messages.show_info(self.dock.iface, f"Label here: suggestion {feat['rank']} "
                           f"({len(feats)} open): {feat['reason']}")
        return feat

    def _zoom(self, feat) -> None:
        layer = self.layer()
        canvas = self.dock.iface.mapCanvas()
        ct = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(),
                                    QgsProject.instance())
        extent = ct.transformBoundingBox(feat.geometry().boundingBox())
        extent.scale(1.5)   # some context around the square
        canvas.setExtent(extent)
        canvas.refresh()

    def set_status(self, fid: int, status: str) -> bool:
        """Write ``status`` of suggestion ``fid`` straight into the project (no edit session)."""
        layer = self.layer()
        if layer is None:
            return False
        idx = layer.fields().indexOf("status")
        done = layer.dataProvider().changeAttributeValues({fid: {idx: status}})
        layer.triggerRepaint()
        return bool(done)

    def skip(self) -> None:
        """Mark the current suggestion skipped and go to the next one."""
        if self.current is not None:
            self.set_status(self.current, "skipped")
        self.next()

    def label_added(self, layer: QgsVectorLayer, fid: int) -> None:
        """A label was drawn: the open suggestions it falls in are done."""
        suggestions = self.layer()
        if suggestions is None or sip.isdeleted(suggestions):
            return
        geometry = layer.getFeature(fid).geometry()
        if geometry is None or geometry.isEmpty():
            return
        if layer.crs() != suggestions.crs():
            geometry.transform(QgsCoordinateTransform(layer.crs(), suggestions.crs(),
                                                      QgsProject.instance()))
        request = QgsFeatureRequest().setFilterRect(geometry.boundingBox())
        for feat in suggestions.getFeatures(request):
            if str(feat["status"]) == "open" and feat.geometry().intersects(geometry):
                self.set_status(feat.id(), "done")

    # -- fine-tune -------------------------------------------------------------------------
    def fine_tune(self):
        """Train the suggestions' model's family again from that model with this project and
        the train dialog's last settings; the task (None when something is missing)."""
        from ...core.families import family
        from ...core.jobs import job_class
        from ...core.modelfile import read_model_card
        from ..training_dialog_parts import start_training, training_window

        project, model = self.dock.project, self.model
        if project is None or self.dock.plugin is None or not self.dock.save_edits():
            return None
        if not model or not Path(model).is_file():
            messages.show_error(self.dock.iface, "No model to fine-tune yet.",
                                "Train a model, then use Suggest… with it.")
            return None
        try:
            fam = family(read_model_card(model).get("task", ""))
            if fam is None:
                raise UserError("The model's family cannot be trained here.", "Train a model.")
            job = fine_tune_job(job_class(fam.train_kind), str(project.path), model)
            problems = job.problems()
            if problems:
                raise UserError(" ".join(problems), "Open the train dialog and fix it there.")
            task = start_training(self.dock.plugin, job)
        except UserError as exc:
            messages.show_error(self.dock.iface, exc.message, exc.fix)
            return None
        remember_value(MODEL_KEY, job.output_model)   # the next round suggests with it
        window = training_window(self.dock.plugin, task, job)
        window.show()
        self.task = task
        return task


def fine_tune_job(job_cls, project: str, model: str):
    """The train job of ``job_cls`` with its dialog's last settings, ``project``, INIT_MODEL
    ``model`` and outputs ``<model stem>_ft<N>…`` beside it with the first N that names no
    existing file (nothing is replaced); no resume, no search, the default log folder."""
    job = remembered_job(f"deep_learning_trainer/{job_cls.kind}/last_job", job_cls())
    base = Path(model)
    stem = base.name.split(".")[0]
    rest = base.name[len(stem):] or ".dltmodel.safetensors"
    n = 1
    while any(base.with_name(f"{stem}_ft{n}{tail}{rest}").exists() for tail in ("", "_last")) \
            or base.with_name(f"{stem}_ft{n}_logs").exists():
        n += 1
    job.project, job.init_model, job.resume_from = project, model, ""
    job.output_model = str(base.with_name(f"{stem}_ft{n}{rest}"))
    job.output_last_model = str(base.with_name(f"{stem}_ft{n}_last{rest}"))
    job.log_folder = ""
    if hasattr(job, "trials"):
        job.trials = 0
    return job


def style_suggestions(layer: QgsVectorLayer) -> None:
    """Outlines by status (open orange, done green, skipped grey) and the rank as a label (bold,
    black with a white halo: readable on dark and bright imagery alike)."""
    cats = []
    for status, colour in COLOURS.items():
        symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": colour,
                                             "outline_width": "0.8"})
        cats.append(QgsRendererCategory(status, symbol, status))
    layer.setRenderer(QgsCategorizedSymbolRenderer("status", cats))
    pal = QgsPalLayerSettings()
    pal.fieldName = "rank"
    pal.placement = QgsPalLayerSettings.OverPoint
    text = QgsTextFormat()
    font = QFont(text.font())
    font.setBold(True)
    text.setFont(font)
    text.setSize(12)
    text.setColor(QColor("#000000"))
    halo = QgsTextBufferSettings()
    halo.setEnabled(True)
    halo.setSize(1.2)
    halo.setColor(QColor("#ffffff"))
    text.setBuffer(halo)
    pal.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(pal))
    layer.setLabelsEnabled(True)
