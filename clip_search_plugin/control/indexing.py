"""Index builds from the dock: start one for the dock's raster (whole, the visible part or selected polygons),
show its progress, cancel it, and tell one account of how it ended, in the dock and on the message bar."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qgis.core import Qgis, QgsApplication, QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsMapCanvas

from ..engine.answers import IndexAnswer, IndexStatus
from ..engine.errors import InputError
from ..engine.requests import IndexRequest
from ..results import layers
from ..session.tasks import IndexTask
from ..ui.dock import AREA_SELECTED, AREA_VISIBLE
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


class Indexing:
    """The dock's index builds, each in a task of QGIS's task manager, held in its raster's record."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.dock = controller.dock
        self.rasters = controller.rasters
        self.messages = controller.messages

    def running(self, layer_id: str | None = None) -> bool:
        """Whether the raster's build (any build, without ``layer_id``) is running."""
        if layer_id is None:
            return bool(self.rasters.tasks())
        return self.rasters.task(layer_id) is not None

    def start(self, area_mode: int) -> None:
        """Index the dock's raster: the whole layer, the visible part or the selected polygons (AREA_*)."""
        layer = self.dock.raster_layer()
        if layer is None or layers.raster_path(layer) is None:
            self.messages.show("Choose a raster layer backed by a file to index.")
            return
        if self.running(layer.id()):
            return
        try:
            request = self.request(layer, area_mode)
        except (ValueError, InputError) as exc:
            self.messages.show(str(exc))
            return
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

    def request(self, layer: QgsRasterLayer, area_mode: int) -> IndexRequest:
        """The build of ``layer`` with the plugin's settings over the area chosen in the dock."""
        settings = self.controller.settings
        tiling = settings.tiling()
        area = self.area(layer, area_mode)
        if area is not None:
            tiling = replace(tiling, area=area)
        return IndexRequest(str(layers.raster_path(layer)), settings.model_spec(), tiling, settings.device)

    def area(self, layer: QgsRasterLayer, area_mode: int) -> Any:
        """None (the whole layer), the visible extent's box, or the selected polygons, in the raster's CRS."""
        iface = self.controller.iface
        if area_mode == AREA_VISIBLE and iface is not None:
            return visible_box(iface.mapCanvas(), layer)
        if area_mode == AREA_SELECTED:
            return selected_polygons(self.dock.polygon_layer(), layer)
        return None

    def cancel(self) -> None:
        """Stop the build of the dock's raster (what is embedded so far is kept, and a new build resumes)."""
        layer = self.dock.raster_layer()
        task = self.rasters.task(layer.id()) if layer is not None else None
        if task is not None:
            task.cancel()
            self.dock.set_status("Stopping… (what is embedded so far is kept)")

    def stop(self) -> None:
        """Cancel every running build (plugin unload, QGIS exit)."""
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

        self.controller.report_error({"kind": task.error_kind, "message": task.error or "Indexing failed.",
                                      **task.error_details}, again)
        layer = QgsProject.instance().mapLayer(layer_id)
        if isinstance(layer, QgsRasterLayer) and self.rasters.is_current(layer_id):
            self.rasters.refresh(layer)
