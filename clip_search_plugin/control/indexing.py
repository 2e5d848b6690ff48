"""Index builds from the dock: start one for the dock's raster (whole, the visible part, selected polygons or a
drawn box), show its progress, cancel it, and tell one account of how it ended, in the dock and on the message bar.

A web layer is read over the area chosen, at the resolution in the dock (Auto: see :mod:`.web`); before anything
is downloaded the engine says what the build would read (a ``survey``) and the user is asked, with the layer's
terms of use, whether to download it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsReferencedRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas

from ..engine.answers import IndexAnswer, IndexStatus, SurveyAnswer
from ..engine.errors import InputError
from ..engine.requests import IndexRequest, SurveyRequest
from ..engine.sources.names import read_source
from ..results.sources import LayerSource, SourceRefused, layer_source
from ..session.tasks import IndexTask
from ..ui.confirm import DownloadQuestion
from ..ui.dock import AREA_DRAWN, AREA_SELECTED, AREA_VISIBLE
from . import web
from .status import indexed_text, stopped_text

if TYPE_CHECKING:
    from .controller import Controller


def visible_box(canvas: QgsMapCanvas, layer: QgsRasterLayer) -> tuple[float, float, float, float]:
    """The map canvas's extent as a box in the raster's CRS."""
    source = canvas.mapSettings().destinationCrs()
    transform = QgsCoordinateTransform(source, layer.crs(), QgsProject.instance())
    box = transform.transformBoundingBox(canvas.extent())
    return box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()


def selected_polygons(polygons: QgsVectorLayer | None, layer: QgsRasterLayer) -> list[dict[str, Any]]:
    """The selected polygons as GeoJSON geometries in the raster's CRS; ValueError when none is selected."""
    if polygons is None or polygons.selectedFeatureCount() == 0:
        raise ValueError("Select one or more polygons in the chosen polygon layer first.")
    transform = QgsCoordinateTransform(polygons.crs(), layer.crs(), QgsProject.instance())
    area = []
    for feature in polygons.selectedFeatures():
        geometry = feature.geometry()
        geometry.transform(transform)
        area.append(json.loads(geometry.asJson()))
    return area


def drawn_box(drawn: QgsReferencedRectangle | None, layer: QgsRasterLayer) -> tuple[float, float, float, float]:
    """The box drawn on the map, in the raster's CRS; ValueError when none is drawn."""
    if drawn is None or drawn.isEmpty():
        raise ValueError("Draw the box to index first: click Draw the box on the map, then drag a rectangle.")
    transform = QgsCoordinateTransform(drawn.crs(), layer.crs(), QgsProject.instance())
    box = transform.transformBoundingBox(QgsRectangle(drawn))
    return box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()


class Indexing:
    """The dock's index builds, each in a task of QGIS's task manager, held in its raster's record."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.dock = controller.dock
        self.rasters = controller.rasters
        self.messages = controller.messages
        self.drawn: QgsReferencedRectangle | None = None  # the box drawn for AREA_DRAWN (the canvas's CRS)
        self.questions: dict[str, DownloadQuestion | None] = {}  # layer id -> the question asked (None: surveying)

    def running(self, layer_id: str | None = None) -> bool:
        """Whether the raster's build (any build, without ``layer_id``) is running."""
        if layer_id is None:
            return bool(self.rasters.tasks())
        return self.rasters.task(layer_id) is not None

    def start(self, area_mode: int) -> None:
        """Index the dock's raster over the area chosen (AREA_*); a web layer once the user agrees to download."""
        layer = self.dock.raster_layer()
        if layer is None:
            self.messages.show("Choose a raster layer to index.")
            return
        if self.running(layer.id()) or layer.id() in self.questions:
            return
        try:
            source = layer_source(layer)
            request = self.request(layer, area_mode, source)
        except (ValueError, InputError) as exc:  # SourceRefused is a ValueError
            self.messages.show(str(exc))
            return
        if source.is_web:
            self._survey(layer, request)
        else:
            self.build(layer, request)

    def build(self, layer: QgsRasterLayer, request: IndexRequest) -> None:
        """Start the build of ``layer`` (``request``) in a task."""
        layer_id, name = layer.id(), layer.name()
        task = IndexTask(f"CLIP Search: indexing {name}", self.controller.settings, request,
                         lambda t: self._done(layer_id, name, t))
        task.progressChanged.connect(lambda percent: self._progress(layer_id, percent))
        self.rasters.record(layer_id).task = task
        self.messages.clear()
        self.messages.quieten(task.description())
        self.dock.set_indexing(True)
        self.dock.set_status(f"Indexing {name}…")
        QgsApplication.taskManager().addTask(task)

    def request(self, layer: QgsRasterLayer, area_mode: int, source: LayerSource | None = None) -> IndexRequest:
        """The build of ``layer`` with the plugin's settings over the area chosen in the dock (and, for a web
        layer, at the dock's resolution)."""
        settings = self.controller.settings
        source = source or layer_source(layer)
        tiling = settings.tiling()
        area = self.area(layer, area_mode)
        if source.is_web:
            if area is None:
                raise SourceRefused(f"{layer.name()} is a web layer, which has no edges of its own: choose the area "
                                    "to index (the visible extent, selected polygons or a drawn box).")
            canvas = self.controller.iface.mapCanvas() if self.controller.iface is not None else None
            resolution = self.dock.index_resolution() or web.default_resolution(source, layer, area, tiling, canvas)
            tiling = replace(tiling, resolution=resolution)
        if area is not None:
            tiling = replace(tiling, area=area)
        return IndexRequest(source.text, settings.model_spec(), tiling, settings.device, auth=source.auth,
                            backend=settings.backend, cluster=settings.cluster or None)

    def area(self, layer: QgsRasterLayer, area_mode: int) -> Any:
        """None (the whole layer), the visible extent's box, the selected polygons or the drawn box, in the
        raster's CRS."""
        iface = self.controller.iface
        if area_mode == AREA_VISIBLE and iface is not None:
            return visible_box(iface.mapCanvas(), layer)
        if area_mode == AREA_SELECTED:
            return selected_polygons(self.dock.polygon_layer(), layer)
        if area_mode == AREA_DRAWN:
            return drawn_box(self.drawn, layer)
        return None

    def area_drawn(self, extent: QgsRectangle) -> None:
        """A box was dragged on the map with the area tool: Index layer covers it (AREA_DRAWN)."""
        view, iface = self.controller.view, self.controller.iface
        view.set_area_drawing(False)  # one box per click of the button
        if iface is None or extent.isEmpty() or extent.width() <= 0 or extent.height() <= 0:
            self.messages.show("Drag a rectangle on the map: Index layer covers that box.", Qgis.Info, 5)
            return
        self.drawn = QgsReferencedRectangle(extent, iface.mapCanvas().mapSettings().destinationCrs())
        view.show_area(extent)
        self.dock.set_area_drawn("Box drawn")

    # --- web layers: what a build downloads, asked first --------------------------------------------------
    def _survey(self, layer: QgsRasterLayer, request: IndexRequest) -> None:
        """Ask the engine what the build would download; the user is asked next (see ``_ask``)."""
        layer_id = layer.id()
        self.questions[layer_id] = None
        self.dock.set_status(f"Working out what indexing {layer.name()} downloads…")
        survey = SurveyRequest(request.raster, request.model, request.tiling, auth=request.auth)
        self.controller.engine.ask(survey, lambda event: self._ask(layer_id, request, event))

    def _ask(self, layer_id: str, request: IndexRequest, event: dict[str, Any]) -> None:
        layer = QgsProject.instance().mapLayer(layer_id)
        if not isinstance(layer, QgsRasterLayer) or layer_id not in self.questions:
            self.questions.pop(layer_id, None)
            return  # removed meanwhile
        if event["event"] == "error":
            del self.questions[layer_id]
            self.controller.report_error({**event["error"], "message": f"{layer.name()}: {event['error']['message']}"})
            if self.rasters.is_current(layer_id):
                self.rasters.refresh(layer)
            return
        survey = SurveyAnswer.from_dict(event["result"])
        question = DownloadQuestion(self.dock, layer.name(), web.figures(survey, layer.crs()), web.terms(layer))
        question.decided.connect(lambda yes: self._answered(layer_id, request, yes))
        self.questions[layer_id] = question
        if self.rasters.is_current(layer_id):
            self.dock.set_status(f"Download and index {layer.name()}? {survey.summary()}.")
        question.open()

    def _answered(self, layer_id: str, request: IndexRequest, download: bool) -> None:
        question = self.questions.pop(layer_id, None)
        if question is not None:
            question.deleteLater()
        layer = QgsProject.instance().mapLayer(layer_id)
        if not isinstance(layer, QgsRasterLayer):
            return
        if download and not self.running(layer_id):
            self.build(layer, request)
        elif self.rasters.is_current(layer_id):
            self.rasters.refresh(layer)

    def forget(self, layer_ids: set[str]) -> None:
        """Layers are leaving the project: questions about them are withdrawn (unanswered)."""
        for layer_id in layer_ids & set(self.questions):
            question = self.questions.pop(layer_id)
            if question is not None:
                question.decided.disconnect()
                question.reject()
                question.deleteLater()

    def cancel(self) -> None:
        """Stop the build of the dock's raster (what is embedded so far is kept, and a new build resumes)."""
        layer = self.dock.raster_layer()
        task = self.rasters.task(layer.id()) if layer is not None else None
        if task is not None:
            task.cancel()
            self.dock.set_status("Stopping… (what is embedded so far is kept)")

    def stop(self) -> None:
        """Cancel every running build and withdraw every question (plugin unload, QGIS exit)."""
        self.forget(set(self.questions))
        for task in self.rasters.tasks():
            task.cancel()

    def _progress(self, layer_id: str, percent: float) -> None:
        if self.rasters.is_current(layer_id):
            self.dock.set_progress(percent)

    def _done(self, layer_id: str, name: str, task: IndexTask) -> None:
        """A build ended: one account of it, the same in the dock and on the message bar."""
        self.rasters.record(layer_id).task = None
        layer = QgsProject.instance().mapLayer(layer_id)
        if self.rasters.is_current(layer_id):
            self.dock.set_indexing(False)
        if task.result is not None:
            self._finished(layer_id, name, IndexAnswer.from_dict(task.result))
        elif task.error_kind == "cancelled" and isinstance(layer, QgsRasterLayer):
            self._stopped(layer, name)
        elif task.error_kind == "cancelled":
            self.messages.show(f"Indexing {name} stopped: its layer was removed. What was embedded is saved; "
                               "indexing the raster again resumes from there.", Qgis.Info, 8)
        else:
            self._failed(layer_id, task)
        self.rasters.drop_if_gone(layer_id)

    def _finished(self, layer_id: str, name: str, result: IndexAnswer) -> None:
        self.controller.weights.solved()
        self.rasters.record(layer_id).status = result.status()
        self.messages.show(indexed_text(name, result), Qgis.Success, 6)
        self.rasters.show_status(layer_id)

    def _stopped(self, layer: QgsRasterLayer, name: str) -> None:
        """A build the user stopped: told with the count of tiles saved, as the dock's status says it."""
        def tell(status: IndexStatus) -> None:
            self.messages.show(f"{name}: {stopped_text(status.saved_tiles)}", Qgis.Info, 8)

        if self.rasters.is_current(layer.id()):
            self.rasters.refresh(layer, tell)
        else:
            self.rasters.locate(layer, tell)

    def _failed(self, layer_id: str, task: IndexTask) -> None:
        def again() -> None:  # once missing weights are there: the same build, if its raster is still shown
            if self.rasters.is_current(layer_id):
                self.start(self.dock.index_area_mode())

        message = task.error or "Indexing failed."
        if not read_source(task.request.raster).is_local:  # the engine names the service; say which layer it is
            layer = QgsProject.instance().mapLayer(layer_id)
            message = f"{layer.name() if layer is not None else 'Indexing'}: {message}"
        self.controller.report_error({"kind": task.error_kind, "message": message, **task.error_details}, again)
        layer = QgsProject.instance().mapLayer(layer_id)
        if isinstance(layer, QgsRasterLayer) and self.rasters.is_current(layer_id):
            self.rasters.refresh(layer)
