"""The Labeling Tool dock: a labeling project, its rasters and classes, the active class, counts,
building label rasters, the Train drop-down and the active-learning loop (:mod:`.suggestions`).

Drawing is done with QGIS's own editing tools on the project's label layers: the active class is
the default value of ``class_id``, so new features need no typing (the form is suppressed; the
class stays editable through a drop-down in the attribute form and table).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsColorDialog, QgsDockWidget, QgsProjectionSelectionDialog
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import UserError
from ...core.labeling.grid import read_grid
from ...core.labeling.project import ROLES, LabelingProject, TrainingRaster
from .. import messages
from . import layers as ql
from .suggestions import SuggestionLoop

DOCK_KEY = "labeling"
_NAME, _SOLID, _BLUR, _COUNT = 1, 2, 3, 4


def _swatch(color: str) -> QIcon:
    pix = QPixmap(16, 16)
    pix.fill(QColor(color))
    return QIcon(pix)


class LabelingDock(QgsDockWidget):
    """The Labeling Tool. ``plugin`` (optional) runs jobs and opens the train dialogs."""

    def __init__(self, iface, plugin=None, parent: QWidget | None = None) -> None:
        super().__init__("Labeling Tool", parent)
        self.setObjectName("DeepLearningTrainerLabelingDock")
        self.iface = iface
        self.plugin = plugin
        self.project: LabelingProject | None = None
        self.layers: dict[str, QgsVectorLayer] = {}
        self.active_class: int | None = None
        self.last_task = None
        self._refreshing = False
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(150)
        self._refresh_timer.timeout.connect(self.refresh_counts)
        self._build_ui()
        self._update_enabled()
        QgsProject.instance().readProject.connect(self._restore_from_qgis_project)
        QgsProject.instance().cleared.connect(self._project_cleared)
        self.destroyed.connect(self._refresh_timer.stop)
        self._restore_from_qgis_project()

    # -- UI ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        body = QWidget(self)
        box = QVBoxLayout(body)
        top = QHBoxLayout()
        self.project_label = QLabel("No labeling project")
        self.project_label.setWordWrap(True)
        self.new_button = QPushButton("New…")
        self.new_button.setToolTip("Create a labeling project (a GeoPackage)")
        self.open_button = QPushButton("Open…")
        self.new_button.clicked.connect(self._ask_new_project)
        self.open_button.clicked.connect(self._ask_open_project)
        top.addWidget(self.project_label, 1)
        top.addWidget(self.new_button)
        top.addWidget(self.open_button)
        box.addLayout(top)

        rasters = QGroupBox("Training rasters")
        rbox = QVBoxLayout(rasters)
        self.raster_table = QTableWidget(0, 3)
        self.raster_table.setHorizontalHeaderLabels(["Raster", "Role", "Labels"])
        self.raster_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.raster_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.raster_table.verticalHeader().hide()
        header = self.raster_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.raster_table.setMaximumHeight(130)
        self.raster_table.doubleClicked.connect(lambda _i: self.zoom_to_raster())
        rbox.addWidget(self.raster_table)
        rbuttons = QHBoxLayout()
        self.add_map_button = QPushButton("From map")  # a push button sizes for its arrow
        self.add_map_button.setToolTip("Add a raster layer of the map to the project")
        self.add_map_menu = QMenu(self.add_map_button)
        self.add_map_menu.aboutToShow.connect(self._fill_map_menu)
        self.add_map_button.setMenu(self.add_map_menu)
        self.add_files_button = QPushButton("Files…")
        self.add_files_button.setToolTip("Add raster files to the project")
        self.add_files_button.clicked.connect(self._ask_add_files)
        self.remove_raster_button = QPushButton("Remove")
        self.remove_raster_button.setToolTip("Remove from the project (its labels stay)")
        self.remove_raster_button.clicked.connect(lambda: self.remove_raster())
        self.zoom_button = QPushButton("Zoom to")
        self.zoom_button.clicked.connect(lambda: self.zoom_to_raster())
        for w in (self.add_map_button, self.add_files_button, self.remove_raster_button,
                  self.zoom_button):
            rbuttons.addWidget(w)
        rbuttons.addStretch(1)
        rbox.addLayout(rbuttons)
        box.addWidget(rasters)

        classes = QGroupBox("Classes (click one: new labels get it)")
        cbox = QVBoxLayout(classes)
        self.class_table = QTableWidget(0, 5)
        self.class_table.setHorizontalHeaderLabels(["", "Class", "Solid px", "Blur px", "Labels"])
        self.class_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.class_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.class_table.setEditTriggers(QAbstractItemView.DoubleClicked |
                                         QAbstractItemView.EditKeyPressed)
        self.class_table.verticalHeader().hide()
        ch = self.class_table.horizontalHeader()
        ch.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        ch.setSectionResizeMode(_NAME, QHeaderView.Stretch)
        for column in (_SOLID, _BLUR, _COUNT):
            ch.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        self.class_table.itemSelectionChanged.connect(self._class_selected)
        self.class_table.itemChanged.connect(self._class_edited)
        self.class_table.cellDoubleClicked.connect(self._class_double_clicked)
        cbox.addWidget(self.class_table)
        self.active_label = QLabel("Active class: none")
        cbox.addWidget(self.active_label)
        cbuttons = QHBoxLayout()
        self.add_class_button = QPushButton("Add")
        self.add_class_button.clicked.connect(lambda: self.add_class())
        self.color_button = QPushButton("Colour…")
        self.color_button.clicked.connect(lambda: self._ask_recolor())
        self.up_button = QPushButton("▲")
        self.up_button.setToolTip("Move up")
        self.up_button.clicked.connect(lambda: self.move_class(-1))
        self.down_button = QPushButton("▼")
        self.down_button.setToolTip("Move down")
        self.down_button.clicked.connect(lambda: self.move_class(1))
        self.delete_class_button = QPushButton("Delete")
        self.delete_class_button.clicked.connect(lambda: self.delete_class())
        for w in (self.add_class_button, self.color_button, self.up_button, self.down_button,
                  self.delete_class_button):
            cbuttons.addWidget(w)
        cbuttons.addStretch(1)
        cbox.addLayout(cbuttons)
        box.addWidget(classes, 1)

        actions = QHBoxLayout()
        self.build_button = QPushButton("Build label rasters")
        self.build_button.clicked.connect(lambda: self.build_label_rasters())
        self.train_button = QToolButton()
        self.train_button.setText("Train")
        self.train_button.setPopupMode(QToolButton.InstantPopup)
        self.train_menu = QMenu(self.train_button)
        self.train_button.setMenu(self.train_menu)
        self._fill_train_menu()
        actions.addWidget(self.build_button)
        actions.addWidget(self.train_button)
        actions.addStretch(1)
        box.addLayout(actions)
        self.suggestions = SuggestionLoop(self)   # active learning: where to label next
        box.addWidget(self.suggestions.box)
        body.setMinimumWidth(380)
        self.setWidget(body)

    def _update_enabled(self) -> None:
        has = self.project is not None
        for w in (self.raster_table, self.add_map_button, self.add_files_button,
                  self.remove_raster_button, self.zoom_button, self.class_table,
                  self.add_class_button, self.color_button, self.up_button, self.down_button,
                  self.delete_class_button, self.build_button, self.train_button,
                  *self.suggestions.buttons()):
            w.setEnabled(has)

    def _error(self, exc: Exception) -> None:
        if isinstance(exc, UserError):
            messages.show_error(self.iface, exc.message, exc.fix)
        else:
            messages.log(traceback.format_exc(), "warning")
            messages.show_error(self.iface, f"Labeling Tool: {exc}",
                                "This is a bug; the log (Deep Learning Trainer tab) has details.")

    def _guard(self, fn: Callable, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the user sees a message, never a traceback
            self._error(exc)
            return None

    # -- project -------------------------------------------------------------------------------
    def new_project(self, path: str | Path, crs: str) -> LabelingProject:
        """Create a labeling project at ``path`` in ``crs`` and open it."""
        project = LabelingProject.create(path, crs)
        return self.open_project(project.path)

    def open_project(self, path: str | Path) -> LabelingProject:
        """Open a labeling project: its layers into the map (group named after it), styled."""
        project = LabelingProject.open(path)
        self._disconnect_layers()
        self.project = project
        qproject = QgsProject.instance()
        empty = not qproject.mapLayers()
        self.layers = ql.label_layers(project, qproject)
        if empty or not qproject.crs().isValid():  # a new QGIS project: show the labels' CRS
            crs = ql.qgis_crs(project.crs)
            if crs.isValid():
                qproject.setCrs(crs)
        group = ql.project_group(QgsProject.instance(), project.name)
        for raster in project.rasters():
            ql.raster_layer(raster, QgsProject.instance(), group)
        for layer in self.layers.values():
            for signal in (layer.featureAdded, layer.featuresDeleted, layer.attributeValueChanged,
                           layer.afterCommitChanges, layer.afterRollBack, layer.geometryChanged):
                signal.connect(self._schedule_refresh)
            layer.featureAdded.connect(self._feature_added)
        QgsProject.instance().writeEntry(*ql.PROJECT_ENTRY, str(project.path))
        self.project_label.setText(f"<b>{project.name}</b><br><small>{project.path}</small>")
        classes = project.classes()
        self.active_class = None
        self.refresh()
        if classes:
            self.set_active_class(classes[0].id)
        self.suggestions.current = None
        self.suggestions.layer(create=True)   # the project's suggestions, when it has some
        self._update_enabled()
        return project

    def _disconnect_layers(self) -> None:
        for layer in self.layers.values():
            if sip.isdeleted(layer):
                continue
            for signal in (layer.featureAdded, layer.featuresDeleted, layer.attributeValueChanged,
                           layer.afterCommitChanges, layer.afterRollBack, layer.geometryChanged):
                try:
                    signal.disconnect(self._schedule_refresh)
                except TypeError:
                    pass
            try:
                layer.featureAdded.disconnect(self._feature_added)
            except TypeError:
                pass
        self.layers = {}

    def _restore_from_qgis_project(self, *_args) -> None:
        path, ok = QgsProject.instance().readEntry(*ql.PROJECT_ENTRY, "")
        if ok and path and Path(path).is_file() and (
                self.project is None or Path(path) != self.project.path):
            self._guard(self.open_project, path)

    def _project_cleared(self, *_args) -> None:
        self._disconnect_layers()
        self.project = None
        self.project_label.setText("No labeling project")
        self.raster_table.setRowCount(0)
        self.class_table.setRowCount(0)
        self._update_enabled()

    def _ask_new_project(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "New labeling project", "",
                                              "Labeling project (*.gpkg)")
        if not path:
            return
        if not path.lower().endswith(".gpkg"):
            path += ".gpkg"
        crs = self._default_crs()
        dialog = QgsProjectionSelectionDialog(self)
        dialog.setCrs(crs)
        dialog.setMessage("Coordinate reference system of the label layers")
        if dialog.exec_():
            crs = dialog.crs()
        authid = crs.authid()
        self._guard(self.new_project, path,
                    authid if authid.upper().startswith("EPSG:") else crs.toWkt())

    def _default_crs(self) -> QgsCoordinateReferenceSystem:
        layer = self.iface.activeLayer() if self.iface is not None else None
        if isinstance(layer, QgsRasterLayer) and layer.crs().isValid():
            return layer.crs()
        return QgsProject.instance().crs()

    def _ask_open_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open labeling project", "",
                                              "Labeling project (*.gpkg)")
        if path:
            self._guard(self.open_project, path)

    # -- refresh -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read classes and rasters; restyle the layers; update counts."""
        if self.project is None:
            return
        classes = self.project.classes()
        rasters = self.project.rasters()
        ql.style_layers(self.layers, classes, rasters)
        if self.active_class is not None and all(c.id != self.active_class for c in classes):
            self.active_class = None
        ql.set_default_class(self.layers, self.active_class)
        self._refreshing = True
        try:
            self.class_table.setRowCount(len(classes))
            for row, c in enumerate(classes):
                swatch = QTableWidgetItem(_swatch(c.color), "")
                swatch.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                swatch.setData(Qt.UserRole, c.id)
                swatch.setToolTip(f"{c.color} (double-click to change)")
                self.class_table.setItem(row, 0, swatch)
                self.class_table.setItem(row, _NAME, QTableWidgetItem(c.name))
                self.class_table.setItem(row, _SOLID, QTableWidgetItem(f"{c.solid_distance:g}"))
                self.class_table.setItem(row, _BLUR, QTableWidgetItem(f"{c.blur_distance:g}"))
                count = QTableWidgetItem("0")
                count.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                self.class_table.setItem(row, _COUNT, count)
                if c.id == self.active_class:
                    self.class_table.selectRow(row)
            self.raster_table.setRowCount(len(rasters))
            for row, r in enumerate(rasters):
                item = QTableWidgetItem(r.name)
                item.setData(Qt.UserRole, r.id)
                item.setToolTip(r.path)
                self.raster_table.setItem(row, 0, item)
                role = QComboBox()
                role.addItems(ROLES)
                role.setCurrentText(r.role)
                role.currentTextChanged.connect(
                    lambda text, rid=r.id: self._guard(self.project.set_raster_role, rid, text))
                self.raster_table.setCellWidget(row, 1, role)
                self.raster_table.setItem(row, 2, QTableWidgetItem("0"))
        finally:
            self._refreshing = False
        self._show_active()
        self.refresh_counts()

    def _schedule_refresh(self, *args) -> None:
        self._refresh_timer.start()

    def refresh_counts(self) -> dict:
        """Update the label counts per class and per raster; returns them."""
        if self.project is None or not self.layers:
            return {}
        by_class = ql.counts_by_class(self.layers)
        rasters = self.project.rasters()
        by_raster = ql.counts_by_raster(self.layers, rasters, QgsProject.instance())
        self._refreshing = True
        try:
            for row in range(self.class_table.rowCount()):
                cid = self.class_table.item(row, 0).data(Qt.UserRole)
                self.class_table.item(row, _COUNT).setText(str(by_class.get(cid, 0)))
            for row in range(self.raster_table.rowCount()):
                rid = self.raster_table.item(row, 0).data(Qt.UserRole)
                self.raster_table.item(row, 2).setText(str(by_raster.get(rid, 0)))
        finally:
            self._refreshing = False
        return {"classes": by_class, "rasters": by_raster}

    # -- classes -------------------------------------------------------------------------------
    def _selected_class(self) -> int | None:
        rows = {i.row() for i in self.class_table.selectedItems()}
        if not rows:
            return self.active_class
        return self.class_table.item(min(rows), 0).data(Qt.UserRole)

    def _class_selected(self) -> None:
        if self._refreshing:
            return
        cid = self._selected_class()
        if cid is not None and cid != self.active_class:
            self.set_active_class(cid)

    def set_active_class(self, class_id: int | None) -> None:
        """New labels get ``class_id`` (the default value of the layers' ``class_id``)."""
        self.active_class = class_id
        ql.set_default_class(self.layers, class_id)
        self._show_active()

    def _show_active(self) -> None:
        name = "none"
        if self.project is not None and self.active_class is not None:
            c = next((c for c in self.project.classes() if c.id == self.active_class), None)
            name = c.name if c else "none"
        self.active_label.setText(f"Active class: <b>{name}</b>")

    def _feature_added(self, fid: int) -> None:
        """A feature added without a class (e.g. pasted or made by code) gets the active one;
        a label inside an open suggestion marks it done."""
        layer = self.sender()
        if isinstance(layer, QgsVectorLayer):
            self.suggestions.label_added(layer, fid)
        if self.active_class is None or not isinstance(layer, QgsVectorLayer):
            return
        idx = layer.fields().indexOf("class_id")
        feat = layer.getFeature(fid)
        if ql.as_int(feat.attribute(idx)) is None:
            layer.changeAttributeValue(fid, idx, self.active_class)

    def add_class(self, name: str | None = None, color: str | None = None,
                  solid_distance: float = 0, blur_distance: float = 0):
        """Add a class (a free 'Class N' name by default) and make it active."""
        if self.project is None:
            return None
        if name is None:
            taken = {c.name for c in self.project.classes()}
            n = len(taken) + 1
            while f"Class {n}" in taken:
                n += 1
            name = f"Class {n}"
        c = self._guard(self.project.add_class, name, color, solid_distance, blur_distance)
        if c is not None:
            self.active_class = c.id
            self.refresh()
        return c

    def update_class(self, class_id: int, **changes) -> None:
        """Rename / recolour / change distances: labels keep their class, styling follows."""
        if self.project is None:
            return
        self._guard(self.project.update_class, class_id, *[changes.get(k) for k in (
            "name", "color", "solid_distance", "blur_distance")])
        self.refresh()

    def _class_edited(self, item: QTableWidgetItem) -> None:
        if self._refreshing or self.project is None:
            return
        cid = self.class_table.item(item.row(), 0).data(Qt.UserRole)
        text = item.text().strip()
        if item.column() == _NAME:
            self.update_class(cid, name=text)
        elif item.column() in (_SOLID, _BLUR):
            try:
                value = float(text.replace(",", "."))
            except ValueError:
                messages.show_error(self.iface, f"{text!r} is not a number of pixels.",
                                    "Type a number such as 0, 1.5 or 3.")
                self.refresh()
                return
            key = "solid_distance" if item.column() == _SOLID else "blur_distance"
            self.update_class(cid, **{key: value})

    def _class_double_clicked(self, row: int, column: int) -> None:
        if column == 0:
            self._ask_recolor(self.class_table.item(row, 0).data(Qt.UserRole))

    def _ask_recolor(self, class_id: int | None = None) -> None:
        cid = class_id or self._selected_class()
        if cid is None or self.project is None:
            return
        current = QColor(self.project.class_by_id(cid).color)
        color = QgsColorDialog.getColor(current, self, "Class colour", False)
        if color.isValid():
            self.update_class(cid, color=color.name())

    def move_class(self, step: int, class_id: int | None = None) -> None:
        cid = class_id or self._selected_class()
        if cid is None or self.project is None:
            return
        self._guard(self.project.move_class, cid, step)
        self.refresh()

    def delete_class(self, class_id: int | None = None,
                     confirm: Callable[[str], bool] | None = None) -> bool:
        """Delete a class; when labels use it, ``confirm`` (default: a question box) decides.

        Its labels are deleted with it and the classes above move down one id (label rasters use
        ids 1..N). Pending label edits must be saved first.
        """
        cid = class_id or self._selected_class()
        if cid is None or self.project is None:
            return False
        name = self.project.class_by_id(cid).name
        if any(layer.isEditable() and layer.isModified() for layer in self.layers.values()):
            messages.show_error(self.iface, f"Cannot delete class {name!r} while label edits "
                                "are unsaved.", "Save (or roll back) the label layers first.")
            return False
        used = ql.counts_by_class(self.layers).get(cid, 0)
        if used:
            ask = confirm or self._confirm
            if not ask(f"Class {name!r} is used by {used} label(s). Delete the class and these "
                       "labels?"):
                return False
        editing = [key for key, layer in self.layers.items() if layer.isEditable()]
        for key in editing:
            self.layers[key].rollBack()
        ok = self._guard(self.project.delete_class, cid, True) is not None
        for layer in self.layers.values():
            layer.dataProvider().reloadData()
            layer.reload()
        for key in editing:
            self.layers[key].startEditing()
        if self.active_class == cid:
            self.active_class = None
        elif self.active_class is not None and self.active_class > cid:
            self.active_class -= 1
        self.refresh()
        return ok

    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Delete class", text,
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    # -- rasters -------------------------------------------------------------------------------
    def add_raster(self, path: str | Path, role: str = "auto") -> TrainingRaster | None:
        if self.project is None:
            return None
        raster = self._guard(self.project.add_raster, path, role)
        if raster is not None:
            group = ql.project_group(QgsProject.instance(), self.project.name)
            ql.raster_layer(raster, QgsProject.instance(), group)
            self.refresh()
        return raster

    def _fill_map_menu(self) -> None:
        self.add_map_menu.clear()
        layers = [lyr for lyr in QgsProject.instance().mapLayers().values()
                  if lyr.type() == QgsMapLayer.RasterLayer and lyr.providerType() == "gdal"]
        if not layers:
            action = self.add_map_menu.addAction("No raster layer in the map")
            action.setEnabled(False)
        for lyr in sorted(layers, key=lambda x: x.name().lower()):
            source = lyr.source()
            self.add_map_menu.addAction(lyr.name(),
                                        lambda _checked=False, s=source: self.add_raster(s))

    def _ask_add_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add training rasters", "",
                                                "Rasters (*.tif *.tiff *.img *.jp2 *.vrt *.png "
                                                "*.jpg);;All files (*)")
        for path in paths:
            self.add_raster(path)

    def _selected_raster(self) -> TrainingRaster | None:
        rows = {i.row() for i in self.raster_table.selectedItems()}
        if not rows or self.project is None:
            return None
        rid = self.raster_table.item(min(rows), 0).data(Qt.UserRole)
        return next((r for r in self.project.rasters() if r.id == rid), None)

    def remove_raster(self, raster_id: int | None = None) -> None:
        """Remove a raster from the project; its labels stay."""
        if self.project is None:
            return
        raster = (self.project.raster_by_id(raster_id) if raster_id is not None
                  else self._selected_raster())
        if raster is None:
            return
        self._guard(self.project.remove_raster, raster.id)
        self.refresh()

    def zoom_to_raster(self, raster_id: int | None = None) -> None:
        raster = (self.project.raster_by_id(raster_id) if raster_id is not None
                  else self._selected_raster()) if self.project else None
        if raster is None or self.iface is None:
            return
        try:
            grid = read_grid(raster.path)
        except UserError as exc:
            self._error(exc)
            return
        canvas = self.iface.mapCanvas()
        src = QgsCoordinateReferenceSystem.fromWkt(grid.crs_wkt)
        ct = QgsCoordinateTransform(src, canvas.mapSettings().destinationCrs(),
                                    QgsProject.instance())
        extent = ct.transformBoundingBox(QgsRectangle(*grid.bounds))
        canvas.setExtent(extent)
        canvas.refresh()

    # -- jobs ----------------------------------------------------------------------------------
    def output_folder(self) -> Path:
        assert self.project is not None
        return self.project.path.parent / f"{self.project.name}_label_rasters"

    def save_edits(self) -> bool:
        """Save pending label edits (the layers stay editable); False when saving failed."""
        for layer in self.layers.values():
            if layer.isEditable() and layer.isModified():
                if not layer.commitChanges(False):
                    messages.show_error(self.iface, f"Could not save {layer.name()}: "
                                        f"{'; '.join(layer.commitErrors())}",
                                        "Fix the edits or roll them back.")
                    return False
        return True

    def build_label_rasters(self, folder: str | Path | None = None):
        """Save edits, then run the ``build_label_rasters`` job in the background."""
        from ...core.labeling.jobs import BuildLabelRastersJob

        if self.project is None or self.plugin is None or not self.save_edits():
            return None
        job = BuildLabelRastersJob(project=str(self.project.path),
                                   output_folder=str(folder or self.output_folder()))
        problems = job.problems()
        if problems:
            messages.show_error(self.iface, " ".join(problems))
            return None
        task = self.plugin.jobs.start(job, f"Building label rasters of {self.project.name}")
        task.succeeded.connect(self._built)
        self.build_button.setEnabled(False)
        for signal in (task.succeeded, task.failed, task.cancelled):
            signal.connect(lambda *_: self.build_button.setEnabled(self.project is not None))
        self.last_task = task
        return task

    def _built(self, result: dict) -> None:
        if self.project is None:
            return
        group = ql.project_group(QgsProject.instance(), self.project.name)
        for path in result.get("label_rasters", []):
            existing = [lyr for lyr in QgsProject.instance().mapLayers().values()
                        if isinstance(lyr, QgsRasterLayer) and ql._same_source(lyr, Path(path))]
            if existing:
                existing[0].dataProvider().reloadData()
                existing[0].triggerRepaint()
                continue
            layer = QgsRasterLayer(path, Path(path).stem)
            if layer.isValid():
                classes = [QgsPalettedRasterRenderer.Class(c.id, QColor(c.color), c.name)
                           for c in sorted(self.project.classes(), key=lambda c: c.id)]
                layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
                layer.renderer().setOpacity(0.7)
                QgsProject.instance().addMapLayer(layer, False)
                # above the images, below the label layers; hidden until the user looks
                node = group.insertLayer(len(self.layers), layer)
                node.setItemVisibilityChecked(False)
                node.setExpanded(False)
        warnings = sum(len(r.get("warnings", [])) for r in result.get("reports", []))
        text = f"{len(result.get('label_rasters', []))} label raster(s) in {self.output_folder()}"
        if warnings:
            text += f" ({warnings} warning(s): see the log)"
        messages.show_success(self.iface, text)

    def _fill_train_menu(self) -> None:
        from ..tools import TOOLS

        self.train_menu.clear()
        tools = [t for t in TOOLS if t.menu == "Train"]
        if not tools:
            action = self.train_menu.addAction("No training dialog installed")
            action.setEnabled(False)
        for tool in tools:
            self.train_menu.addAction(tool.label.rstrip("…"),
                                      lambda _checked=False, t=tool: self.open_train_dialog(t))

    def open_train_dialog(self, tool) -> None:
        """Open a train dialog pre-filled with this project (``plugin.labeling_project``)."""
        if self.plugin is None or self.project is None:
            return
        if not self.save_edits():
            return
        self.plugin.labeling_project = str(self.project.path)
        self.plugin.open_tool(tool)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._refresh_timer.stop()
        super().closeEvent(event)


def open_labeling_tool(plugin) -> LabelingDock:
    """Show the Labeling Tool (one per QGIS window), creating it the first time."""
    dock = plugin.windows.get(DOCK_KEY)
    if dock is None or sip.isdeleted(dock):
        dock = LabelingDock(plugin.iface, plugin, plugin.iface.mainWindow())
        plugin.iface.addDockWidget(Qt.RightDockWidgetArea, dock)
        plugin.windows[DOCK_KEY] = dock
    dock.show()
    dock.raise_()
    return dock
