"""The dock's account of each raster: one record per raster layer (its index status and its running build), and
the index status asked of the engine and shown in the dock.

Records are keyed by layer id, never by layer object: an answer for a layer removed meanwhile (a closed project,
a removed layer) finds no layer, and is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qgis.core import QgsProject, QgsRasterLayer

from ..engine.answers import IndexStatus
from ..engine.errors import InputError
from ..engine.requests import LocateRequest
from ..results.sources import SourceRefused, layer_source
from ..session.client import EngineUnavailable, check_engine_python
from ..session.tasks import IndexTask
from . import web
from .status import status_text

if TYPE_CHECKING:
    from .controller import Controller

Event = dict[str, Any]
Then = Callable[[IndexStatus], None]


@dataclass
class RasterRecord:
    """What the dock knows of one raster layer."""

    layer_id: str
    status: IndexStatus | None = None  # the engine's last ``locate`` answer (or the build just finished)
    task: IndexTask | None = None  # its running build (this reference keeps the task alive)


class Rasters:
    """Records by raster layer id, and the index status of the dock's raster."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.dock = controller.dock
        self.records: dict[str, RasterRecord] = {}

    # --- the records ------------------------------------------------------------------------------------
    def record(self, layer_id: str) -> RasterRecord:
        """The raster's record (a new, empty one the first time)."""
        return self.records.setdefault(layer_id, RasterRecord(layer_id))

    def status(self, layer_id: str) -> IndexStatus | None:
        """The raster's last known index status (None: not asked yet, or the engine could not tell)."""
        found = self.records.get(layer_id)
        return found.status if found is not None else None

    def task(self, layer_id: str) -> IndexTask | None:
        found = self.records.get(layer_id)
        return found.task if found is not None else None

    def tasks(self) -> list[IndexTask]:
        """Every running build."""
        return [r.task for r in self.records.values() if r.task is not None]

    def is_current(self, layer_id: str) -> bool:
        """Whether the raster is the dock's now: only then does the dock show what is said of it."""
        return bool(self.dock.is_current_raster(layer_id))

    def forget(self, layer_ids: set[str]) -> None:
        """Rasters are leaving the project: their builds are stopped (what was embedded so far is saved, so
        indexing the raster again resumes), and the rest of their records dropped."""
        for layer_id in layer_ids & set(self.records):
            record = self.records[layer_id]
            record.status = None
            if record.task is not None:
                record.task.cancel()  # the record goes when the task has ended
            else:
                del self.records[layer_id]

    def drop_if_gone(self, layer_id: str) -> None:
        """Drop the record of a raster no longer in the project (once its build has ended)."""
        found = self.records.get(layer_id)
        if found is not None and found.task is None and QgsProject.instance().mapLayer(layer_id) is None:
            del self.records[layer_id]

    # --- the index status ---------------------------------------------------------------------------------
    def refresh(self, layer: QgsRasterLayer | None, then: Then | None = None) -> None:
        """Show the raster's index status; ``then(status)`` runs with the engine's answer."""
        controller = self.controller
        controller.view.show_current()
        if layer is None:
            self.dock.set_status("Choose a raster layer.", self.engine_missing())
            return
        try:
            source = layer_source(layer, with_auth=False)
        except SourceRefused as exc:
            self.dock.set_web_layer(False)
            self.dock.set_status(str(exc))
            return
        self.dock.set_web_layer(source.is_web, *web.units(layer.crs()))
        self.dock.set_indexing(self.task(layer.id()) is not None)
        if controller.weights.shown_for_model(controller.settings):
            return  # the dock keeps saying what is missing until it is fixed
        self.dock.set_status("Checking the index…")
        self.locate(layer, then)

    def locate(self, layer: QgsRasterLayer, then: Then | None = None) -> None:
        """Ask the engine for the raster's index status; the dock shows it when the raster is its current one."""
        settings = self.controller.settings
        layer_id = layer.id()
        try:
            source = layer_source(layer)
            request = LocateRequest(source.text, settings.model_spec(), settings.tiling(), auth=source.auth)
        except (InputError, SourceRefused) as exc:
            self._show_status(layer_id, {"event": "error", "error": {"kind": "input", "message": str(exc)}})
            return
        self.controller.engine.ask(request, lambda event: self._show_status(layer_id, event, then))

    def engine_missing(self) -> bool:
        """No engine Python configured, or it does not exist (a quick look: offer Set up engine)."""
        try:
            check_engine_python(self.controller.settings.engine_python)
        except EngineUnavailable:
            return True
        return False

    def _show_status(self, layer_id: str, event: Event, then: Then | None = None) -> None:
        if QgsProject.instance().mapLayer(layer_id) is None:
            return  # the layer was removed meanwhile
        record = self.record(layer_id)
        weights, settings = self.controller.weights, self.controller.settings
        if event["event"] == "error":
            record.status = None
            if self.is_current(layer_id) and not weights.shown_for_model(settings):
                self.dock.set_status(event["error"]["message"], bool(event["error"].get("unavailable")))
            return
        record.status = status = IndexStatus.from_dict(event["result"])
        if then is not None:
            then(status)
        if self.is_current(layer_id) and record.task is None:
            self.dock.set_status(self._text(layer_id, status))

    def show_status(self, layer_id: str) -> None:
        """Show the raster's known status in the dock, when it is the dock's raster."""
        status = self.status(layer_id)
        if status is not None and self.is_current(layer_id):
            self.dock.set_status(self._text(layer_id, status))

    @staticmethod
    def _text(layer_id: str, status: IndexStatus) -> str:
        layer = QgsProject.instance().mapLayer(layer_id)
        try:
            web_layer = layer is not None and layer_source(layer, with_auth=False).is_web
        except SourceRefused:
            web_layer = False
        return status_text(status, web_layer)
