"""The chosen result drawn as an outline over the imagery, and zooming to it with the land around it.

QGIS draws a selected feature filled with the selection colour, which hides exactly the imagery the analyst
wants to look at; the dock's choice of result is therefore not a QGIS selection but an outline on the
canvas: a light halo under a dark line, readable on bright and on dark imagery.
"""

from __future__ import annotations

from qgis.core import QgsCoordinateTransform, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer, QgsWkbTypes
from qgis.gui import QgsMapCanvas, QgsRubberBand
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor

CONTEXT = 3.0  # the view around a chosen result is this many times its size: the region and its surroundings
HALO, LINE = ("#ffffff", 5), ("#00bcd4", 2)


class ResultHighlight:
    """An outline (no fill) of one result region on the map canvas."""

    def __init__(self, canvas: QgsMapCanvas) -> None:
        self.canvas = canvas
        self.bands: list[QgsRubberBand] = []
        for colour, width in (HALO, LINE):
            band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
            band.setStrokeColor(QColor(colour))
            band.setFillColor(QColor(0, 0, 0, 0))
            band.setWidth(width)
            self.bands.append(band)
        self.layer_id: str | None = None
        self.fid: int | None = None

    def show(self, layer: QgsVectorLayer, fid: int) -> None:
        geometry = layer.getFeature(fid).geometry()
        for band in self.bands:
            band.setToGeometry(geometry, layer)  # transformed from the layer's CRS to the canvas's
            band.show()
        self.layer_id, self.fid = layer.id(), fid

    def clear(self) -> None:
        for band in self.bands:
            band.reset(QgsWkbTypes.PolygonGeometry)
        self.layer_id = self.fid = None

    def remove(self) -> None:
        """Take the outline off the canvas for good (plugin unload)."""
        self.clear()
        for band in self.bands:
            self.canvas.scene().removeItem(band)
        self.bands = []

    def geometry(self) -> QgsGeometry | None:
        """The outline's geometry in the canvas CRS (None when nothing is outlined)."""
        return self.bands[-1].asGeometry() if self.bands and self.fid is not None else None


class AreaBox:
    """The box Index layer covers, drawn on the map as a dashed outline until another is drawn."""

    def __init__(self, canvas: QgsMapCanvas) -> None:
        self.canvas = canvas
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setStrokeColor(QColor(LINE[0]))
        self.band.setFillColor(QColor(0, 0, 0, 0))
        self.band.setWidth(LINE[1])
        self.band.setLineStyle(Qt.DashLine)

    def show(self, extent: QgsRectangle) -> None:
        """Outline ``extent`` (the canvas's CRS)."""
        self.band.setToGeometry(QgsGeometry.fromRect(extent))
        self.band.show()

    def remove(self) -> None:
        self.band.reset(QgsWkbTypes.PolygonGeometry)
        self.canvas.scene().removeItem(self.band)


def extent_in_canvas(canvas: QgsMapCanvas, layer: QgsVectorLayer, fids: list[int] | None = None) -> QgsRectangle:
    """Extent of the features (all when ``fids`` is None) in the canvas's CRS. A layer of unknown CRS (a raster
    without georeference, whose results share its unknown CRS) is drawn untransformed, so it is not transformed."""
    if fids is None:
        extent = QgsRectangle(layer.extent())
    else:
        extent = QgsRectangle()
        extent.setMinimal()
        for feature in layer.getFeatures(fids):
            extent.combineExtentWith(feature.geometry().boundingBox())
    destination = canvas.mapSettings().destinationCrs()
    if layer.crs().isValid() and destination.isValid() and layer.crs() != destination:
        extent = QgsCoordinateTransform(layer.crs(), destination, QgsProject.instance()).transformBoundingBox(extent)
    return extent


def zoom_to(canvas: QgsMapCanvas, layer: QgsVectorLayer, fids: list[int] | None = None, context: float = 1.15) -> None:
    """Show the features with ``context`` times their extent around them (a small margin by default)."""
    extent = extent_in_canvas(canvas, layer, fids)
    if extent.isNull() or extent.isEmpty():
        return
    extent.scale(context)
    canvas.setExtent(extent)
    canvas.refresh()


def zoom_to_result(canvas: QgsMapCanvas, layer: QgsVectorLayer, fid: int) -> None:
    """Zoom to one result with the land around it (the region is a third of the view)."""
    zoom_to(canvas, layer, [fid], CONTEXT)
