"""A map tool that pans like QGIS's pan tool and, on a plain click, picks the search result under the cursor."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsCoordinateTransform, QgsFeatureRequest, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapToolPan
from qgis.PyQt.QtCore import QPoint, pyqtSignal

CLICK_PIXELS = 4  # a press and release closer than this is a click, not a drag


class ResultPickTool(QgsMapToolPan):
    """Drag to pan; click a result region to pick it. ``picked`` carries (results layer id, feature id)."""

    picked = pyqtSignal(str, int)

    def __init__(self, canvas: QgsMapCanvas, candidates: Callable[[], list[QgsVectorLayer]]) -> None:
        super().__init__(canvas)
        self.candidates = candidates  # result layers to pick from, the preferred one first
        self._pressed_at: QPoint | None = None
        self.setObjectName("clipSearchPickTool")

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:
        self._pressed_at = event.pos()
        super().canvasPressEvent(event)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        pressed_at, self._pressed_at = self._pressed_at, None
        super().canvasReleaseEvent(event)
        if pressed_at is not None and (event.pos() - pressed_at).manhattanLength() <= CLICK_PIXELS:
            hit = self.result_at(event)
            if hit is not None:
                self.picked.emit(*hit)

    def result_at(self, event: QgsMapMouseEvent) -> tuple[str, int] | None:
        """The best-ranked result region under the click, searching the candidate layers in order."""
        canvas = self.canvas()
        point = event.mapPoint()
        radius = self.searchRadiusMU(canvas)
        around = QgsRectangle(point.x() - radius, point.y() - radius, point.x() + radius, point.y() + radius)
        for layer in self.candidates():
            if not canvas.layers() or layer not in canvas.layers():
                continue  # hidden layers are not pickable
            canvas_crs = canvas.mapSettings().destinationCrs()
            transform = QgsCoordinateTransform(canvas_crs, layer.crs(), QgsProject.instance())
            box = transform.transformBoundingBox(around) if layer.crs().isValid() else around
            hits = [f for f in layer.getFeatures(QgsFeatureRequest().setFilterRect(box))
                    if f.geometry().intersects(box)]
            if hits:  # the results under the cursor first; near it (within the click tolerance) otherwise
                point_there = transform.transform(point) if layer.crs().isValid() else point
                under = [f for f in hits if f.geometry().contains(QgsGeometry.fromPointXY(point_there))]
                best = min(under or hits, key=lambda f: int(f["rank"]))
                return layer.id(), int(best.id())
        return None
