"""The QGIS side of a labeling project: its label layers in a layer-tree group, styled by class,
with a class drop-down in the form and the active class as the default of new features.

Edits go through the layers (QGIS's editing: undo, save, rollback); class and raster metadata are
written with :class:`~plugin.core.labeling.project.LabelingProject` (sqlite3, no rasterio).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDefaultValue,
    QgsEditFormConfig,
    QgsEditorWidgetSetup,
    QgsFeatureRequest,
    QgsGeometry,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsRendererCategory,
    QgsSymbol,
    QgsValueMapFieldFormatter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

from ...core.errors import UserError
from ...core.labeling.grid import read_grid
from ...core.labeling.project import LAYERS, LabelClass, LabelingProject, TrainingRaster
from .. import messages

LAYER_TITLES = {"polygons": "Label polygons", "points": "Label points", "lines": "Label lines"}
NO_CLASS_COLOR = "#9e9e9e"
PROJECT_ENTRY = ("dltrainer", "labeling_project")  # QgsProject entry: the open labeling project
ALL_RASTERS = "(all rasters)"  # the empty raster_id entry of the form's drop-down
_STYLE_KEY = "dltrainer/saved_style"  # layer property: what the style saved in the file shows


def qgis_crs(crs: str) -> QgsCoordinateReferenceSystem:
    """The QGIS CRS of a labeling project's CRS text ('EPSG:code' or WKT)."""
    if crs.upper().startswith("EPSG:"):
        return QgsCoordinateReferenceSystem(crs)
    return QgsCoordinateReferenceSystem.fromWkt(crs)


def as_int(value) -> int | None:
    """An attribute value as int; None for NULL / empty / not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _same_source(layer: QgsMapLayer, path: Path, table: str | None = None) -> bool:
    source, _, options = layer.source().partition("|")
    try:
        same = Path(source).resolve() == path.resolve()
    except OSError:
        return False
    return same and (table is None or f"layername={table}" in options)


def project_group(qproject: QgsProject, name: str) -> QgsLayerTreeGroup:
    """The layer-tree group named after the labeling project (created at the top if missing)."""
    root = qproject.layerTreeRoot()
    group = root.findGroup(name)
    return group if group is not None else root.insertGroup(0, name)


def label_layers(project: LabelingProject, qproject: QgsProject) -> dict[str, QgsVectorLayer]:
    """The project's three label layers, reusing those already in ``qproject`` (e.g. a saved QGIS
    project) and adding the others to the project's group."""
    group = project_group(qproject, project.name)
    layers: dict[str, QgsVectorLayer] = {}
    for key, table in LAYERS.items():
        found = [lyr for lyr in qproject.mapLayers().values()
                 if isinstance(lyr, QgsVectorLayer) and _same_source(lyr, project.path, table)]
        if found:
            layers[key] = found[0]
            continue
        layer = QgsVectorLayer(project.layer_uri(key), LAYER_TITLES[key], "ogr")
        if not layer.isValid():
            raise RuntimeError(f"QGIS cannot open {project.layer_uri(key)}")
        qproject.addMapLayer(layer, False)
        group.insertLayer(list(LAYERS).index(key), layer)
        layers[key] = layer
    return layers


def raster_layer(raster: TrainingRaster, qproject: QgsProject,
                 group: QgsLayerTreeGroup | None = None) -> QgsRasterLayer | None:
    """The map layer showing ``raster`` (added to ``group`` when not in the project yet)."""
    for lyr in qproject.mapLayers().values():
        if isinstance(lyr, QgsRasterLayer) and _same_source(lyr, Path(raster.path)):
            return lyr
    if group is None:
        return None
    layer = QgsRasterLayer(raster.path, raster.name)
    if not layer.isValid():
        return None
    qproject.addMapLayer(layer, False)
    group.addLayer(layer)
    return layer


def _symbol(key: str, color: str) -> QgsSymbol:
    geometry = {"polygons": QgsWkbTypes.PolygonGeometry, "points": QgsWkbTypes.PointGeometry,
                "lines": QgsWkbTypes.LineGeometry}[key]
    symbol = QgsSymbol.defaultSymbol(geometry)
    qcolor = QColor(color)
    symbol.setColor(qcolor)
    layer = symbol.symbolLayer(0)
    if key == "polygons":
        fill = QColor(qcolor)
        fill.setAlpha(90)
        layer.setFillColor(fill)
        layer.setStrokeColor(qcolor)
        layer.setStrokeWidth(0.6)
    elif key == "points":
        layer.setSize(3.0)
        layer.setStrokeColor(QColor("#202020"))
    else:
        layer.setWidth(0.9)
    return symbol


def raster_choices(rasters: list[TrainingRaster]) -> list[dict]:
    """ValueMap entries of the ``raster_id`` drop-down: '(all rasters)' (NULL) first, then each
    raster by name (its id added when names repeat)."""
    names = [r.name for r in rasters]
    entries = [{ALL_RASTERS: QgsValueMapFieldFormatter.NULL_VALUE}]
    for r in rasters:
        entries.append({r.name if names.count(r.name) == 1 else f"{r.name} (#{r.id})": r.id})
    return entries


def style_layers(layers: dict[str, QgsVectorLayer], classes: list[LabelClass],
                 rasters: list[TrainingRaster] | None = None) -> None:
    """Categorized renderer by ``class_id`` in class colours, drop-downs (ValueMap) of the
    classes and of the rasters (``raster_id``, empty: all rasters) in the form, and a form that
    does not pop up when drawing (the active class is the default). When it changed, the style is
    saved as each layer's default style in the GeoPackage (``layer_styles``), so that the layers
    are coloured by class wherever the file is opened."""
    value_map = [{c.name: c.id} for c in classes]
    for key, layer in layers.items():
        categories = [QgsRendererCategory(c.id, _symbol(key, c.color), c.name) for c in classes]
        # labels without a (known) class stay visible, in grey
        categories.append(QgsRendererCategory("", _symbol(key, NO_CLASS_COLOR), "(no class)"))
        layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))
        idx = layer.fields().indexOf("class_id")
        layer.setEditorWidgetSetup(idx, QgsEditorWidgetSetup("ValueMap", {"map": value_map}))
        layer.setFieldAlias(idx, "Class")
        rid = layer.fields().indexOf("raster_id")
        if rid >= 0:
            layer.setFieldAlias(rid, "Raster")
            if rasters is not None:
                layer.setEditorWidgetSetup(rid, QgsEditorWidgetSetup(
                    "ValueMap", {"map": raster_choices(rasters)}))
        config = layer.editFormConfig()
        config.setSuppress(QgsEditFormConfig.SuppressOn)
        layer.setEditFormConfig(config)
        layer.triggerRepaint()
        layer.emitStyleChanged()
        shown = repr((classes, rasters))
        if layer.customProperty(_STYLE_KEY) != shown and not save_default_style(layer):
            layer.setCustomProperty(_STYLE_KEY, shown)


def save_default_style(layer: QgsVectorLayer) -> str:
    """Save ``layer``'s style as its default style in its GeoPackage; '' or the error text.

    Without the Labeling Tool there is no active class: the saved style has no default class
    and lets the feature form (with its class drop-down) open when a label is drawn."""
    form = layer.editFormConfig()
    idx = layer.fields().indexOf("class_id")
    default = layer.defaultValueDefinition(idx)
    plain = layer.editFormConfig()
    plain.setSuppress(QgsEditFormConfig.SuppressDefault)
    layer.setEditFormConfig(plain)
    layer.setDefaultValueDefinition(idx, QgsDefaultValue())
    try:
        return _save_style(layer)
    finally:
        layer.setEditFormConfig(form)
        layer.setDefaultValueDefinition(idx, default)


def _save_style(layer: QgsVectorLayer) -> str:
    table = layer.source().partition("layername=")[2].split("|")[0] or layer.name()
    # replace, not overwrite: QGIS asks the user (a modal box) before overwriting a saved style
    related, ids, names, _descriptions, _none = layer.listStylesInDatabase()
    error = ""
    for style_id, name in list(zip(ids, names))[:max(related, 0)]:
        if name == table and not error:
            deleted, error = layer.deleteStyleFromDatabase(style_id)
            error = "" if deleted else error or "cannot replace the saved style"
    if not error:
        error = layer.saveStyleToDatabase(table, "Deep Learning Trainer: coloured by class",
                                          True, "")
    if error:
        messages.log(f"Could not save the style of {layer.name()} in its GeoPackage: {error}",
                     "warning")
    return error


def set_default_class(layers: dict[str, QgsVectorLayer], class_id: int | None) -> None:
    """New features of the label layers get ``class_id`` (None: no default)."""
    for layer in layers.values():
        idx = layer.fields().indexOf("class_id")
        layer.setDefaultValueDefinition(
            idx, QgsDefaultValue(str(int(class_id)) if class_id else ""))


def counts_by_class(layers: dict[str, QgsVectorLayer]) -> dict[int, int]:
    """Labels per class id, counting unsaved edits too."""
    counts: dict[int, int] = {}
    for layer in layers.values():
        idx = layer.fields().indexOf("class_id")
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        request.setSubsetOfAttributes([idx])
        for feat in layer.getFeatures(request):
            key = as_int(feat.attribute(idx)) or 0
            counts[key] = counts.get(key, 0) + 1
    return counts


def counts_by_raster(layers: dict[str, QgsVectorLayer], rasters: list[TrainingRaster],
                     qproject: QgsProject) -> dict[int, int]:
    """Labels overlapping each raster (by raster id), counting unsaved edits too."""
    out: dict[int, int] = {}
    present = {r.id for r in rasters}
    for raster in rasters:
        try:
            grid = read_grid(raster.path)
        except UserError:
            out[raster.id] = 0
            continue
        n = 0
        for layer in layers.values():
            src = QgsCoordinateReferenceSystem.fromWkt(grid.crs_wkt)
            ct = QgsCoordinateTransform(src, layer.crs(), qproject)
            footprint = QgsGeometry.fromRect(QgsRectangle(*grid.bounds))
            try:
                footprint.transform(ct)
            except Exception:  # noqa: BLE001 - a raster far outside the layer's CRS
                continue
            request = QgsFeatureRequest().setFilterRect(footprint.boundingBox())
            engine = QgsGeometry.createGeometryEngine(footprint.constGet())
            engine.prepareGeometry()
            ridx = layer.fields().indexOf("raster_id")
            for feat in layer.getFeatures(request):
                rid = as_int(feat.attribute(ridx)) if ridx >= 0 else None
                if rid is not None and rid in present and rid != raster.id:
                    continue
                if engine.intersects(feat.geometry().constGet()):
                    n += 1
        out[raster.id] = n
    return out
