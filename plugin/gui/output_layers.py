"""Classification outputs on the map, styled with the model's class colours.

``classes`` everywhere is the model card's list of ``{"id", "name", "color"}`` (0 = background).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

CLASS_FIELD = "class_id"


def _sorted(classes: list[dict]) -> list[dict]:
    return sorted(classes, key=lambda c: int(c["id"]))


def paletted_renderer(layer: QgsRasterLayer, classes: list[dict],
                      band: int = 1) -> QgsPalettedRasterRenderer:
    """A paletted renderer drawing each class id with its colour and name; the background
    (class 0) is transparent, so the imagery shows through it."""
    items = []
    for c in _sorted(classes):
        color = QColor(c["color"])
        if int(c["id"]) == 0:
            color.setAlpha(0)
        items.append(QgsPalettedRasterRenderer.Class(int(c["id"]), color,
                                                     f"{c['id']} {c['name']}"))
    return QgsPalettedRasterRenderer(layer.dataProvider(), band, items)


def style_probabilities(layer: QgsRasterLayer, classes: list[dict]) -> QgsRasterLayer:
    """The probability of the first feature class (band after the background), 0–255, from
    transparent to that class's colour: where the model is sure, the colour is strong."""
    ordered = _sorted(classes)
    index = next((i for i, c in enumerate(ordered) if int(c["id"]) != 0), 0)
    band = min(index + 1, max(layer.bandCount(), 1))
    color = QColor(ordered[index]["color"]) if ordered else QColor("#ff0000")
    clear = QColor(color)
    clear.setAlpha(0)
    ramp = QgsColorRampShader(0, 255)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(0, clear, "0 %"),
                               QgsColorRampShader.ColorRampItem(255, color, "100 %")])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(0)
    renderer.setClassificationMax(255)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return layer


#: Colours of the value ramp, low to high (viridis at 0, ¼, ½, ¾, 1).
VALUE_RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


def style_values(layer: QgsRasterLayer) -> QgsRasterLayer:
    """A value raster (Predict Values) with a colour ramp (:data:`VALUE_RAMP`) from its band's
    minimum to its maximum (its nodata transparent)."""
    from qgis.core import QgsRasterBandStats

    stats = layer.dataProvider().bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max)
    low, high = stats.minimumValue, stats.maximumValue
    if not high > low:
        high = low + 1.0
    ramp = QgsColorRampShader(low, high)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    steps = len(VALUE_RAMP) - 1
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(low + (high - low) * i / steps, QColor(color),
                                         f"{low + (high - low) * i / steps:.4g}")
        for i, color in enumerate(VALUE_RAMP)])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return layer


def add_value_raster(path: str, name: str = "", project: QgsProject | None = None
                     ) -> QgsRasterLayer | None:
    """Add a value raster (Predict Values) to the map with :func:`style_values`; None when it
    cannot be opened."""
    project = project or QgsProject.instance()
    layer = QgsRasterLayer(str(path), name or Path(path).stem)
    if not layer.isValid():
        return None
    project.addMapLayer(style_values(layer))
    return layer


def style_class_raster(layer: QgsRasterLayer, classes: list[dict]) -> QgsRasterLayer:
    layer.setRenderer(paletted_renderer(layer, classes))
    layer.triggerRepaint()
    return layer


def categorized_renderer(classes: list[dict], field: str = CLASS_FIELD,
                         opacity: float = 0.6) -> QgsCategorizedSymbolRenderer:
    """Polygons filled with their class colour (outline a darker shade), by ``field``."""
    categories = []
    for c in _sorted(classes):
        if int(c["id"]) == 0:  # polygons are never background: no legend entry for it
            continue
        color = QColor(c["color"])
        symbol = QgsFillSymbol.createSimple({
            "color": f"{color.red()},{color.green()},{color.blue()},255",
            "outline_color": color.darker(140).name(), "outline_width": "0.3"})
        symbol.setOpacity(opacity)
        categories.append(QgsRendererCategory(int(c["id"]), symbol, f"{c['id']} {c['name']}"))
    return QgsCategorizedSymbolRenderer(field, categories)


def style_polygons(layer: QgsVectorLayer, classes: list[dict]) -> QgsVectorLayer:
    names = layer.fields().names()
    field = CLASS_FIELD if CLASS_FIELD in names else next(
        (n for n in ("class", "value", "DN") if n in names), CLASS_FIELD)
    layer.setRenderer(categorized_renderer(classes, field))
    layer.triggerRepaint()
    return layer


def layer_uri(path: str, layer: str | None = None) -> str:
    """What QGIS opens for an output: ``path``, or ``path|layername=layer`` for a layer of a
    GeoPackage (a GeoPackage of the user may hold other layers before ours)."""
    return f"{path}|layername={layer}" if layer and str(path).lower().endswith(".gpkg") else path


def _add_to_group(project: QgsProject, group: QgsLayerTreeGroup, layer, style, added: list,
                  visible: bool = True) -> None:
    """Style ``layer`` (``style(layer)``), add it to ``project`` inside ``group`` and to
    ``added``, when it could be opened."""
    if not layer.isValid():
        return
    style(layer)
    project.addMapLayer(layer, False)
    group.addLayer(layer).setItemVisibilityChecked(visible)
    added.append(layer)


def add_classification(result: dict, classes: list[dict], name: str = "",
                       project: QgsProject | None = None) -> list:
    """Add the class raster, probabilities and polygons of a Classify Pixels ``result`` to the
    map in one group, styled with ``classes``; returns the layers added."""
    project = project or QgsProject.instance()
    name = name or Path(result["output"]).stem
    group: QgsLayerTreeGroup = project.layerTreeRoot().insertGroup(0, name)
    added: list = []
    vector = result.get("output_vector")
    if vector and Path(vector).exists():
        uri = layer_uri(vector, result.get("output_vector_layer"))
        _add_to_group(project, group, QgsVectorLayer(uri, f"{name} polygons", "ogr"),
                      lambda layer: style_polygons(layer, classes), added)
    _add_to_group(project, group, QgsRasterLayer(str(result["output"]), f"{name} classes"),
                  lambda layer: style_class_raster(layer, classes), added)
    probs = result.get("output_probabilities")
    if probs and Path(probs).exists():
        _add_to_group(project, group, QgsRasterLayer(str(probs), f"{name} probabilities"),
                      lambda layer: style_probabilities(layer, classes), added, visible=False)
    return added


def box_renderer(classes: list[dict], field: str = CLASS_FIELD) -> QgsCategorizedSymbolRenderer:
    """Detection boxes: no fill, the outline in the class colour, by ``field``."""
    categories = []
    for c in _sorted(classes):
        color = QColor(c["color"])
        symbol = QgsFillSymbol.createSimple({
            "color": "0,0,0,0", "outline_color": color.name(), "outline_width": "0.6"})
        categories.append(QgsRendererCategory(int(c["id"]), symbol, f"{c['id']} {c['name']}"))
    return QgsCategorizedSymbolRenderer(field, categories)


def score_labels(layer: QgsVectorLayer, enabled: bool = False) -> None:
    """Label each box with its score (two decimals); off unless ``enabled``."""
    from qgis.core import QgsPalLayerSettings, QgsVectorLayerSimpleLabeling

    settings = QgsPalLayerSettings()
    settings.fieldName = "format_number(\"score\", 2)"
    settings.isExpression = True
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(enabled)


def add_detections(result: dict, classes: list[dict], name: str = "",
                   project: QgsProject | None = None, show_scores: bool = False) -> list:
    """Add the boxes (and centre points) of a Detect Objects ``result`` to the map in one group,
    outlined in the class colours, with the score as a label option; returns the layers."""
    project = project or QgsProject.instance()
    name = name or Path(result["output"]).stem
    group: QgsLayerTreeGroup = project.layerTreeRoot().insertGroup(0, name)
    added: list = []
    layer_name = result.get("output_layer")
    points = result.get("output_points")
    if points and Path(points).exists():
        _add_to_group(project, group,
                      QgsVectorLayer(layer_uri(points, layer_name), f"{name} centres", "ogr"),
                      lambda layer: style_points(layer, classes), added)

    def boxes(layer) -> None:
        style_boxes(layer, classes)
        score_labels(layer, show_scores)
    _add_to_group(project, group, QgsVectorLayer(layer_uri(str(result["output"]), layer_name),
                                                 f"{name} boxes", "ogr"), boxes, added)
    return added


def name_renderer(classes: list[dict], field: str = "class",
                  opacity: float = 0.6) -> QgsCategorizedSymbolRenderer:
    """Features coloured by the class *name* in ``field`` (grid cells, classified chips);
    ``background`` cells drawn as hollow grey outlines."""
    categories = []
    for c in list(classes) + [{"name": "background", "color": ""}]:
        if c.get("color"):
            color = QColor(c["color"])
            symbol = QgsFillSymbol.createSimple({
                "color": f"{color.red()},{color.green()},{color.blue()},255",
                "outline_color": color.darker(140).name(), "outline_width": "0.3"})
            symbol.setOpacity(opacity)
        else:
            symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": "128,128,128",
                                                 "outline_width": "0.2"})
        categories.append(QgsRendererCategory(c["name"], symbol, c["name"]))
    return QgsCategorizedSymbolRenderer(field, categories)


def style_boxes(layer: QgsVectorLayer, classes: list[dict]) -> QgsVectorLayer:
    """Detection boxes outlined in their class colour (by ``class_id``)."""
    layer.setRenderer(box_renderer([c for c in classes if int(c["id"]) != 0]))
    score_labels(layer, False)
    layer.triggerRepaint()
    return layer


def style_points(layer: QgsVectorLayer, classes: list[dict]) -> QgsVectorLayer:
    """Box centres as dots in their class colour (by ``class_id``)."""
    from qgis.core import QgsMarkerSymbol

    cats = [QgsRendererCategory(int(c["id"]), QgsMarkerSymbol.createSimple(
        {"color": QColor(c["color"]).name(), "size": "1.6"}), f"{c['id']} {c['name']}")
        for c in _sorted(classes) if int(c["id"]) != 0]
    layer.setRenderer(QgsCategorizedSymbolRenderer(CLASS_FIELD, cats))
    layer.triggerRepaint()
    return layer


def style_by_name(layer: QgsVectorLayer, classes: list[dict]) -> QgsVectorLayer:
    """Grid cells or classified chips filled by their ``class`` name in the class colours
    (polygon layers; a table or points keep QGIS's default)."""
    if layer.geometryType() == 2 and "class" in layer.fields().names():
        layer.setRenderer(name_renderer(classes))
        layer.triggerRepaint()
    return layer


#: The map outputs of each family's classify job: job kind → {Processing output name: how that
#: layer is styled, ``style(layer, classes)`` with the model card's classes}. Processing loads
#: these outputs on completion (:mod:`..processing.job_algorithm`); a family's new classify kind
#: adds its row here (``tests/test_processing.py`` checks every family has one).
MAP_OUTPUTS: dict[str, dict[str, Callable]] = {
    "classify_pixels": {"OUTPUT": lambda layer, classes: style_class_raster(layer, classes),
                        "OUTPUT_PROBABILITIES": lambda layer, classes:
                            style_probabilities(layer, classes),
                        "OUTPUT_VECTOR": lambda layer, classes: style_polygons(layer, classes)},
    "detect_objects": {"OUTPUT": lambda layer, classes: style_boxes(layer, classes),
                       "OUTPUT_POINTS": lambda layer, classes: style_points(layer, classes)},
    "segment_objects": {"OUTPUT": lambda layer, classes: style_polygons(layer, classes)},
    "classify_grid": {"OUTPUT": lambda layer, classes: style_by_name(layer, classes)},
    "classify_chips": {"OUTPUT": lambda layer, classes: style_by_name(layer, classes)},
    "predict_values": {"OUTPUT": lambda layer, classes: style_values(layer)},
}


def model_classes(model: str) -> list[dict]:
    """The classes of the model card of ``model`` (any family), each with a colour (the
    card's, else one of a fixed palette); [] when the file is no readable model."""
    from ..core.errors import UserError
    from ..core.modelfile import read_model_card

    try:
        classes = read_model_card(model, task=None).get("classes") or []
    except UserError:
        return []
    return [dict(c, color=c.get("color") or PALETTE[i % len(PALETTE)])
            for i, c in enumerate(classes)]


#: Colours of classes whose card has none (Tableau 10).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def output_styler(job, name: str) -> Callable[[object], object] | None:
    """How to style the output ``name`` (a Processing name) of ``job`` once QGIS loads it:
    the model's class colours for a map output of a classify job (:data:`MAP_OUTPUTS`); None
    for an output that is no map layer."""
    style = MAP_OUTPUTS.get(getattr(job, "kind", ""), {}).get(name)
    if style is None or not getattr(job, "model", ""):
        return None
    classes = model_classes(job.model)
    return lambda layer: style(layer, classes)


def add_class_layer(path: str, classes: list[dict], name: str = "",
                    project: QgsProject | None = None,
                    layer_name: str | None = None) -> QgsVectorLayer | None:
    """Add a vector output with a ``class`` field (Classify Grid, Classify Chips; its layer
    ``layer_name`` in a GeoPackage) to the map, styled by class name with the model's colours,
    or one with a ``class_id`` field only (Segment Objects) styled by class id; None when it
    cannot be opened."""
    project = project or QgsProject.instance()
    layer = QgsVectorLayer(layer_uri(str(path), layer_name), name or Path(path).stem, "ogr")
    if not layer.isValid():
        return None
    if "class" in layer.fields().names():
        style_by_name(layer, classes)
    else:
        style_polygons(layer, classes)
    project.addMapLayer(layer)
    return layer
