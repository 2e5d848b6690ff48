"""Web layers in the dock: the resolution they are read at, their units, and what the question before a download
says (the build's figures, the layer's attribution and terms).

A web layer has no pixel size of its own. Auto means: an XYZ layer's finest zoom (the engine's default), unless
the tile size is in metres and a coarser read still gives the model its input size (fewer downloads); a WMS or
WMTS at the map canvas's current scale, which is what the analyst sees.
"""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
)
from qgis.gui import QgsMapCanvas

from ..engine.answers import SurveyAnswer
from ..engine.settings import Area, TilingSettings, area_bounds
from ..engine.sources import web as web_grid
from ..results.sources import LayerSource

MODEL_INPUT_PX = 224  # the pixels a tile is resized to for the default models


def units(crs: QgsCoordinateReferenceSystem) -> tuple[str, int]:
    """The abbreviation of the CRS's map units, and the decimals a resolution needs in them."""
    unit = crs.mapUnits()
    return QgsUnitTypes.toAbbreviatedString(unit), 8 if unit == QgsUnitTypes.DistanceDegrees else 3


def area_rectangle(area: Area) -> QgsRectangle:
    """The bounds of an area (a box, or GeoJSON polygons), in its CRS."""
    bounds = area_bounds(area)
    return QgsRectangle(*bounds) if bounds is not None else QgsRectangle()


def units_per_metre(crs: QgsCoordinateReferenceSystem, point: QgsPointXY) -> float:
    """How many of the CRS's units make a metre on the ground at ``point`` (east-west, on the ellipsoid)."""
    measure = QgsDistanceArea()
    measure.setSourceCrs(crs, QgsProject.instance().transformContext())
    measure.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
    step = 1e-4 if crs.mapUnits() == QgsUnitTypes.DistanceDegrees else 1.0
    metres = measure.measureLine(point, QgsPointXY(point.x() + step, point.y()))
    return step / metres if metres > 0 else 1.0


def canvas_resolution(canvas: QgsMapCanvas, crs: QgsCoordinateReferenceSystem) -> float | None:
    """The size of one of the canvas's pixels now, in ``crs`` units."""
    settings = canvas.mapSettings()
    width = settings.outputSize().width()
    if width <= 0:
        return None
    transform = QgsCoordinateTransform(settings.destinationCrs(), crs, QgsProject.instance())
    box = transform.transformBoundingBox(canvas.extent())
    return box.width() / width if box.width() > 0 else None


def default_resolution(source: LayerSource, layer: QgsRasterLayer, area: Area, tiling: TilingSettings,
                       canvas: QgsMapCanvas | None) -> float | None:
    """Auto (see the module): the resolution to read ``layer`` at over ``area`` (its CRS); None: the engine's."""
    if source.is_xyz:
        if tiling.tile_units != "m":
            return None
        _, top, tile_px = web_grid.xyz_levels(source.name)
        native = web_grid.level_resolution(top, tile_px)
        centre = area_rectangle(area).center()
        needed = tiling.tile_size / MODEL_INPUT_PX * units_per_metre(layer.crs(), centre)
        return max(native, needed)
    return canvas_resolution(canvas, layer.crs()) if canvas is not None else None


def figures(survey: SurveyAnswer, crs: QgsCoordinateReferenceSystem) -> list[str]:
    """What a build would read and cost, as lines of the question before downloading."""
    unit, decimals = units(crs)
    lines = [survey.summary() + "."]
    if survey.extent:
        xmin, ymin, xmax, ymax = survey.extent
        places = 6 if decimals > 3 else 1
        lines.append(f"Area: {xmax - xmin:,.{places}f} × {ymax - ymin:,.{places}f} {unit} ({survey.width:,} × "
                     f"{survey.height:,} pixels, {survey.crs or crs.authid()}).")
    if survey.resolution:
        zoom = f", zoom level {survey.zoom}" if survey.zoom is not None else ""
        lines.append(f"Read at {survey.resolution:.{decimals}g} {unit} a pixel{zoom}.")
    lines.append("Downloaded imagery is kept in the cache: building again downloads nothing.")
    return lines


def terms(layer: QgsRasterLayer) -> list[str]:
    """The layer's attribution and terms of use, as QGIS knows them (the layer's, then its service's)."""
    found: list[str] = []
    metadata = [layer.metadata()]
    provider = layer.dataProvider()
    if provider is not None and hasattr(provider, "layerMetadata"):
        metadata.append(provider.layerMetadata())
    said = [layer.attribution()] + [text for m in metadata for text in (*m.rights(), *m.licenses())]
    for text in said:
        text = " ".join(str(text or "").split())
        if text and text not in found:
            found.append(text)
    return found
