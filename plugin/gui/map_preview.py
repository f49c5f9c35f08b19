"""The model on the map while it trains (issue 20), the desktop's side: the "Preview on the map"
option of every train dialog, the canvas extent sent to the worker when the user pans, and the
one temporary layer updated in place with each preview (the core's side:
:mod:`..core.training.preview`).

- :class:`PreviewOption`: a check box (on by default when the project has a raster file) and
  the raster to preview (the first raster of the project by default).
- :class:`MapPreview`: one training run's preview. It writes the view file (the canvas extent
  in the raster's CRS and the canvas size), again 300 ms after the user stops panning; each
  ``preview`` artifact of the worker points the one layer at the new file (``setDataSource``:
  the same layer, styled again in the class colours as the final outputs are; a class raster
  at :data:`RASTER_OPACITY`, so the image shows through) and repaints it. Every slot only
  rewrites a small file or re-points one layer: nothing waits for the worker (the desktop's
  longest event-loop gap while previews come and go: bench/ui_stall.py). When training ends,
  the user keeps or removes the layer.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from qgis.core import (
    QgsCoordinateTransform,
    QgsDataProvider,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, QTimer
from qgis.PyQt.QtWidgets import QCheckBox, QHBoxLayout, QMessageBox, QWidget

from ..core.jobs import Job
from ..core.training.preview import LAYER, View, write_view
from . import messages
from .output_layers import layer_uri, style_boxes, style_by_name, style_class_raster

#: The pause after the last pan or zoom before the view file is written (ms).
DEBOUNCE_MS = 300
#: The opacity a class-raster preview starts with: the image and the labels under it show
#: through (a value the user sets in the layer's properties is kept from one epoch to the next).
RASTER_OPACITY = 0.65
#: The job fields the option fills (the generated train forms show no widget for them).
PREVIEW_FIELDS = ("preview_raster", "preview_extent_file", "preview_seconds")

_STYLES: dict[str, Callable] = {"classes": style_class_raster, "boxes": style_boxes,
                                "cells": style_by_name}


def raster_file(layer) -> str:
    """The file of a raster layer GDAL reads (the worker opens it with rasterio), or ""."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return ""
    path = layer.source().split("|")[0]
    return path if Path(path).is_file() else ""


class PreviewOption(QWidget):
    """"Preview on the map" and the raster it previews: ``checked()`` and ``layer()``.
    ``without``: the title of a family that draws no preview (the option is then off and
    disabled, its tooltip says so)."""

    def __init__(self, parent: QWidget | None = None, project: QgsProject | None = None,
                 without: str = "") -> None:
        super().__init__(parent)
        self.project = project or QgsProject.instance()
        self.check = QCheckBox("Preview on the map")
        self.check.setToolTip("After each validation (at most every 30 s and 5 % of the "
                              "training time) the model so far classifies the part of this "
                              "raster the map shows; one temporary layer shows it.")
        self.combo = QgsMapLayerComboBox()
        self.combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        if project is not None and project is not QgsProject.instance():
            self.combo.setProject(project)
        self.combo.setToolTip("The raster the preview classifies (a file on disk).")
        first = next((lay for lay in self.project.layerTreeRoot().layerOrder()
                      if raster_file(lay)), None)
        if first is not None:
            self.combo.setLayer(first)
        self.check.setChecked(first is not None)
        self.check.toggled.connect(self.combo.setEnabled)
        if without:
            self.check.setChecked(False)
            self.check.setEnabled(False)
            self.check.setToolTip(f"{without} models have no map preview while they train "
                                  "(apply the model to see its output on the map).")
        self.combo.setEnabled(self.check.isChecked())
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.check)
        row.addWidget(self.combo, 1)

    def checked(self) -> bool:
        return self.check.isChecked()

    def layer(self) -> QgsRasterLayer | None:
        """The raster to preview when the option is on and it is a file; else None."""
        layer = self.combo.currentLayer()
        return layer if self.check.isChecked() and raster_file(layer) else None


class MapPreview(QObject):
    """One training run's preview of ``raster`` (a raster layer of ``project``) on ``canvas``.

    ``job_for(job)``: the job with the preview fields set; connect ``handle_event`` to the
    task's events and ``finish`` to its end. ``ask(title, text) → bool`` asks whether to keep
    the layer (a message box by default)."""

    def __init__(self, canvas, raster: QgsRasterLayer, project: QgsProject | None = None,
                 name: str = "Training preview", parent: QObject | None = None,
                 ask: Callable[[str, str], bool] | None = None) -> None:
        super().__init__(parent)
        self.canvas, self.raster = canvas, raster
        self.project = project or QgsProject.instance()
        self.name = name
        self.ask = ask or _ask
        self.folder = Path(tempfile.mkdtemp(prefix="dltrainer_preview_"))
        self.view_file = self.folder / "view.json"
        self.layer: QgsMapLayer | None = None
        self.epoch = 0
        self.slot_seconds: list[float] = []    # how long each event slot took (tests)
        self._removed = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.send_view)
        if canvas is not None:
            canvas.extentsChanged.connect(self._timer.start)
        self.project.layerWillBeRemoved[str].connect(self._layer_removed)
        self.send_view()

    def job_for(self, job: Job) -> Job:
        """A copy of ``job`` previewing :attr:`raster` with this run's view file."""
        import dataclasses

        return dataclasses.replace(job, preview_raster=raster_file(self.raster),
                                   preview_extent_file=str(self.view_file))

    # -- the view -------------------------------------------------------------------------------
    def current_view(self) -> View:
        """The canvas extent in the raster's CRS and the canvas size (the whole raster without
        a canvas)."""
        if self.canvas is None or sip.isdeleted(self.raster):
            return View()
        extent = self.canvas.extent()
        source = self.canvas.mapSettings().destinationCrs()
        if source.isValid() and self.raster.crs().isValid() and source != self.raster.crs():
            extent = QgsCoordinateTransform(source, self.raster.crs(),
                                            self.project).transformBoundingBox(extent)
        return View((extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                     extent.yMaximum()), self.canvas.width(), self.canvas.height())

    def send_view(self) -> None:
        """Write the view file (the worker reads it at its next preview)."""
        try:
            write_view(self.view_file, self.current_view())
        except Exception as exc:  # noqa: BLE001 - a failed transform or write: keep the last
            messages.log(f"The map preview keeps its last extent ({exc}).", "warning")

    # -- the layer ------------------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        """Show a ``preview`` artifact: the one layer re-pointed at its file."""
        import time

        if event.get("event") != "artifact" or event.get("name") != "preview":
            return
        started = time.perf_counter()
        try:
            self.show(str(event.get("path", "")), int(event.get("epoch") or 0),
                      str(event.get("style") or ""), list(event.get("classes") or []))
        finally:
            self.slot_seconds.append(time.perf_counter() - started)

    def show(self, path: str, epoch: int, style: str, classes: list[dict]) -> None:
        """Point the preview layer at ``path`` (the first time: add it on top of the map)."""
        if self._removed or not path or not Path(path).is_file():
            return
        vector = path.lower().endswith(".gpkg")
        uri = layer_uri(path, LAYER) if vector else path
        title = f"{self.name} (epoch {epoch})"
        opacity = RASTER_OPACITY
        if self.layer is None or sip.isdeleted(self.layer):
            self.layer = (QgsVectorLayer(uri, title, "ogr") if vector
                          else QgsRasterLayer(uri, title, "gdal"))
            if not self.layer.isValid():
                self.layer = None
                return
            self.project.addMapLayer(self.layer, False)
            self.project.layerTreeRoot().insertLayer(0, self.layer)
        else:
            if isinstance(self.layer, QgsRasterLayer) and self.layer.renderer() is not None:
                opacity = self.layer.renderer().opacity()   # the user's, if changed
            self.layer.setDataSource(uri, title, self.layer.providerType(),
                                     QgsDataProvider.ProviderOptions())
        self.epoch = epoch
        style_fn = _STYLES.get(style) or (style_by_name if vector else style_class_raster)
        if classes:
            style_fn(self.layer, classes)
        if isinstance(self.layer, QgsRasterLayer) and self.layer.renderer() is not None:
            self.layer.renderer().setOpacity(opacity)
        self.layer.triggerRepaint()

    def _layer_removed(self, layer_id: str) -> None:
        if self.layer is not None and not sip.isdeleted(self.layer) and \
                layer_id == self.layer.id():
            self._removed, self.layer = True, None   # the user removed it: not added again

    # -- the end --------------------------------------------------------------------------------
    def finish(self, *_args) -> None:
        """Training ended: stop following the canvas; keep or remove the layer as the user
        says (its file stays in the log folder)."""
        self._timer.stop()
        if self.canvas is not None and not sip.isdeleted(self.canvas):
            try:
                self.canvas.extentsChanged.disconnect(self._timer.start)
            except TypeError:
                pass
        layer = self.layer
        if layer is not None and not sip.isdeleted(layer) and not self.ask(
                "Map preview", f"Keep the preview layer “{layer.name()}” on the map?"):
            self.project.removeMapLayer(layer.id())
            self.layer = None
        try:
            self.project.layerWillBeRemoved[str].disconnect(self._layer_removed)
        except TypeError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def _ask(title: str, text: str) -> bool:
    return QMessageBox.question(None, title, text) == QMessageBox.Yes


def start_preview(plugin, option: PreviewOption | None, job: Job
                  ) -> tuple[Job, MapPreview | None]:
    """(the job to run, its :class:`MapPreview` or None) for a train dialog's ``option``
    (on the map canvas of ``plugin.iface``, in the option's project)."""
    layer = option.layer() if option is not None else None
    iface = getattr(plugin, "iface", None)
    if layer is None or not hasattr(job, "preview_raster"):
        return job, None
    canvas = iface.mapCanvas() if iface is not None else None
    preview = MapPreview(canvas, layer, option.project,
                         f"Training preview — {Path(job.output_model).name.split('.')[0]}")
    return preview.job_for(job), preview
