"""Search results as a styled memory layer in the raster's CRS: build, find again, zoom, export."""

from __future__ import annotations

import math
from typing import Any

from qgis.core import (
    QgsColorRampShader,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFillSymbol,
    QgsGeometry,
    QgsGraduatedSymbolRenderer,
    QgsPalLayerSettings,
    QgsPointXY,
    QgsProject,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsTextFormat,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from ..engine.answers import SearchAnswer

RESULTS_PROPERTY = "clip_search/results_of"
QUERY_PROPERTY = "clip_search/query"
FIELDS = (
    ("rank", QVariant.Int),
    ("score", QVariant.Double),
    ("relative", QVariant.Double),
    ("query", QVariant.String),
    ("tile_count", QVariant.Int),
    ("area", QVariant.Double),
    ("area_units", QVariant.String),
)
# light yellow to deep red: best results read darkest
RAMP = ("#fee08b", "#fdae61", "#f46d43", "#d73027", "#a50026")
EXPORT_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile"}


def polygon_geometry(geometry: dict[str, Any]) -> QgsGeometry:
    """A GeoJSON Polygon / MultiPolygon dict as a QgsGeometry (no GDAL round trip needed)."""

    def rings(polygon: list[list[list[float]]]) -> list[list[QgsPointXY]]:
        return [[QgsPointXY(float(x), float(y)) for x, y, *_ in ring] for ring in polygon]

    if geometry.get("type") == "Polygon":
        return QgsGeometry.fromPolygonXY(rings(geometry["coordinates"]))
    if geometry.get("type") == "MultiPolygon":
        return QgsGeometry.fromMultiPolygonXY([rings(p) for p in geometry["coordinates"]])
    raise ValueError(f"Not a polygon geometry: {geometry.get('type')}")


FILE_FIELD = "file"  # results of a collection: the file (sheet) each lies on


def has_files(regions: list[dict[str, Any]]) -> bool:
    """Whether the results come from a collection, so each says which file it lies on."""
    return any(region.get(FILE_FIELD) for region in regions)


def result_fields(files: bool = False) -> list[QgsField]:
    """The fields of every results layer (dock and Processing alike); ``files``: with the collection's file."""
    return [QgsField(name, kind) for name, kind in FIELDS] + ([QgsField(FILE_FIELD, QVariant.String)] if files else [])


def region_attributes(region: dict[str, Any], query: str, files: bool = False) -> list[Any]:
    return [
        int(region["rank"]),
        float(region["score"]),
        None if region.get("relative") is None else float(region["relative"]),
        query,
        int(region["tile_count"]),
        float(region["area"]),
        str(region["area_units"]),
    ] + ([str(region.get(FILE_FIELD) or "")] if files else [])


def layer_name(title: str, random_weights: bool) -> str:
    """A results layer's name: what was searched, shortened, and a warning when the model is a random one."""
    short = title if len(title) <= 40 else title[:39] + "…"
    return f"CLIP: {short}" + (" [random weights]" if random_weights else "")


def file_stem(name: str) -> str:
    """A file name (without extension) from a layer name: letters, digits, spaces, dashes and underscores."""
    kept = "".join(c if c.isalnum() or c in " -_" else " " for c in name)
    return "_".join(kept.split())[:80] or "clip_search_results"


def build_results_layer(
    result: SearchAnswer, crs: QgsCoordinateReferenceSystem, raster_id: str, title: str | None = None
) -> QgsVectorLayer:
    """A memory polygon layer of a search's regions, styled, tagged with the raster it belongs to, named after
    ``title`` (default: the search's label).

    Its CRS is exactly the raster's as QGIS holds it, also when QGIS has none for it (a raster without
    georeference): such a raster is drawn untransformed, and so are its results, right on top of it. (A memory
    layer made without a CRS would get EPSG:4326 and land elsewhere.)"""
    options = QgsVectorLayer.LayerOptions()
    options.skipCrsValidation = True  # never ask the user for a CRS: the raster's is set below
    regions, query = result.regions, result.query
    layer = QgsVectorLayer("Polygon", layer_name(title or query, result.random_weights), "memory", options)
    layer.setCrs(crs)
    provider = layer.dataProvider()
    files = has_files(regions)
    provider.addAttributes(result_fields(files))
    layer.updateFields()
    features = []
    for region in regions:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(polygon_geometry(region["geometry"]))
        feature.setAttributes(region_attributes(region, query, files))
        features.append(feature)
    provider.addFeatures(features)
    layer.updateExtents()
    layer.setCustomProperty(RESULTS_PROPERTY, raster_id)
    layer.setCustomProperty(QUERY_PROPERTY, query)
    style_results(layer, [float(r["score"]) for r in regions])
    return layer


def style_results(layer: QgsVectorLayer, scores: list[float]) -> None:
    """Score-graded translucent fill with a solid outline, and the rank as a label."""
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    steps = len(RAMP) if high > low else 1
    width = (high - low) / steps if high > low else 1.0
    ranges = []
    for i in range(steps):
        lo = low + i * width
        hi = high if i == steps - 1 else lo + width
        colour = QColor(RAMP[i if steps > 1 else -1])
        fill = QColor(colour)
        fill.setAlpha(90)
        symbol = QgsFillSymbol.createSimple(
            {
                "color": fill.name(QColor.HexArgb),
                "outline_color": colour.name(),
                "outline_width": "0.6",
            }
        )
        ranges.append(QgsRendererRange(lo, hi, symbol, f"{lo:.3f} – {hi:.3f}"))
    layer.setRenderer(QgsGraduatedSymbolRenderer("score", ranges))
    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    text = QgsTextFormat()
    text.setSize(10)
    text.buffer().setEnabled(True)
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def owned_layers(project: QgsProject, mark: str, raster_id: str | None = None) -> list[Any]:
    """The project's layers that carry the custom property ``mark`` (of one raster when ``raster_id`` is
    given): our result layers (RESULTS_PROPERTY) or heatmaps (HEATMAP_PROPERTY)."""
    found = []
    for layer in project.mapLayers().values():
        owner = layer.customProperty(mark)
        if owner is not None and (raster_id is None or owner == raster_id):
            found.append(layer)
    return found


def results_layers(project: QgsProject, raster_id: str | None = None) -> list[QgsVectorLayer]:
    """The project's result layers (of one raster when ``raster_id`` is given)."""
    return owned_layers(project, RESULTS_PROPERTY, raster_id)


def add_owned_layer(project: QgsProject, layer: Any, mark: str, replace: bool) -> Any:
    """Add ``layer`` (marked with ``mark``), first removing its raster's earlier layers of that mark when
    ``replace``."""
    if replace:
        for old in owned_layers(project, mark, layer.customProperty(mark)):
            project.removeMapLayer(old.id())
    project.addMapLayer(layer)
    return layer


def add_results_layer(project: QgsProject, layer: QgsVectorLayer, replace: bool) -> QgsVectorLayer:
    """Add the layer, first removing the raster's earlier result layers when ``replace``."""
    return add_owned_layer(project, layer, RESULTS_PROPERTY, replace)


HEATMAP_PROPERTY = "clip_search/heatmap_of"
HEATMAP_LEVELS = (1.0, 2.0, 3.0)  # relative score: standard deviations above the index's mean


def heatmap_name(title: str) -> str:
    return f"heatmap: {title}"[:120]


def heatmap_layer(path: str, title: str, raster_id: str) -> QgsRasterLayer:
    """The engine's heatmap GeoTIFF as a styled layer (see :func:`style_heatmap`), tagged with its raster."""
    layer = QgsRasterLayer(path, heatmap_name(title), "gdal")
    style_heatmap(layer)
    layer.setCustomProperty(HEATMAP_PROPERTY, raster_id)
    layer.setCustomProperty(QUERY_PROPERTY, title)
    return layer


def style_heatmap(layer: QgsRasterLayer) -> None:
    """Band 1 (relative score) in a colour ramp from one standard deviation above the index's mean (not drawn
    below: about five places in six) to 3 or the best score."""
    if not layer.isValid():
        return
    stats = layer.dataProvider().bandStatistics(1, QgsRasterBandStats.Max)
    best = float(stats.maximumValue)
    top = max(HEATMAP_LEVELS[-1], best) if math.isfinite(best) else HEATMAP_LEVELS[-1]
    shader = QgsColorRampShader(HEATMAP_LEVELS[0], top)
    shader.setColorRampType(QgsColorRampShader.Interpolated)
    # pale and see-through at one standard deviation, opaque red at the top: the imagery stays readable
    stops = (HEATMAP_LEVELS[0], HEATMAP_LEVELS[1], HEATMAP_LEVELS[2], top)
    colours = (("#ffffb2", 40), ("#fecc5c", 130), ("#fd8d3c", 190), ("#e31a1c", 230))
    items = []
    for value, (name, alpha) in zip(stops, colours, strict=True):
        colour = QColor(name)
        colour.setAlpha(alpha)
        items.append(QgsColorRampShader.ColorRampItem(value, colour, f"{value:.1f} σ"))
    shader.setColorRampItemList(items)
    shader.setClip(True)  # below the lowest level: not drawn
    raster_shader = QgsRasterShader()
    raster_shader.setRasterShaderFunction(shader)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, raster_shader)
    renderer.setClassificationMin(HEATMAP_LEVELS[0])
    renderer.setClassificationMax(top)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def is_heatmap(layer: Any) -> bool:
    return layer.customProperty(HEATMAP_PROPERTY) is not None


def add_heatmap_layer(project: QgsProject, layer: QgsRasterLayer, replace: bool) -> QgsRasterLayer:
    """Add a heatmap layer, first removing the raster's earlier heatmaps when ``replace``."""
    return add_owned_layer(project, layer, HEATMAP_PROPERTY, replace)


def feature_id_of_rank(layer: QgsVectorLayer, rank: int) -> int | None:
    for feature in layer.getFeatures():
        if feature["rank"] == rank:
            return int(feature.id())
    return None


def export_layer(layer: QgsVectorLayer, path: str) -> str:
    """Write the layer with QGIS's own writer (format from the extension); returns an error or ''."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    driver = EXPORT_DRIVERS.get(suffix)
    if driver is None:
        return f"Choose a .gpkg, .geojson or .shp file name (got {path})."
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.fileEncoding = "UTF-8"
    options.layerName = "clip_search_results"
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, QgsProject.instance().transformContext(), options)
    code, message = result[0], result[1]
    return "" if code == QgsVectorFileWriter.NoError else f"Could not write {path}: {message}"
