"""Wiring: dock <-> engine <-> layers. Every engine answer arrives on the main thread through a signal.

Answers are matched to layers by id, never by the layer object: a layer removed while its answer is on its way
(a closed project, a removed layer) is simply not there any more, and its answer is dropped.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal, pyqtSlot

from ..results import layers
from ..results.view import ResultsView
from ..session.client import EngineClient, EngineUnavailable, check_engine_python
from ..session.settings import PluginSettings
from ..session.tasks import IndexTask
from ..ui.dock import AREA_SELECTED, AREA_VISIBLE, ClipSearchDock
from ..ui.messages import STAYS, Messages
from .searches import Searches
from .status import indexed_text, status_text, stopped_text
from .weights import WeightsProblem

Event = dict[str, Any]
RESTARTED = "The engine process stopped while working on a request; it was restarted and the request sent again."


class Controller(QObject):
    """Owns the search engine process, the running index tasks and the dock's account of each raster."""

    _deliver = pyqtSignal(object, object)

    def __init__(self, iface: Any, dock: ClipSearchDock) -> None:
        super().__init__()
        self.iface = iface
        self.dock = dock
        self.settings = PluginSettings.load()
        self.engine: EngineClient | None = None
        self._closed = False
        self._restart_told = -1e9  # when the user was last told of an engine restart (monotonic s)
        self._engine_lock = threading.Lock()
        self.tasks: dict[str, IndexTask] = {}  # raster layer id -> running task (a reference keeps it alive)
        self.status: dict[str, Event] = {}  # raster layer id -> last locate result
        self.messages = Messages(iface)
        self.view = ResultsView(iface, dock, self.messages)
        self.weights = WeightsProblem(self, dock)
        self.searches = Searches(self)
        self._deliver.connect(self._run_callback, Qt.QueuedConnection)
        dock.layerChanged.connect(self.refresh_status)
        dock.indexRequested.connect(self.start_index)
        dock.cancelRequested.connect(self.cancel_index)
        dock.searchRequested.connect(self.searches.search)
        dock.resultSelected.connect(self.view.focus_result)
        dock.zoomAllRequested.connect(self.view.zoom_all)
        dock.moreLikeThisRequested.connect(self.searches.more_like_this)
        dock.exportRequested.connect(self.view.export_results)
        dock.pickToggled.connect(self.view.set_picking)
        dock.drawExampleToggled.connect(self.view.set_drawing)
        dock.markChanged.connect(self.view.set_mark)
        dock.refineRequested.connect(self.searches.search_again)
        if self.view.example_tool is not None:
            self.view.example_tool.extentChanged.connect(self.searches.search_example)
        if iface is not None:
            iface.currentLayerChanged.connect(self._follow_active_layer)
            self._follow_active_layer(iface.activeLayer())
        project = QgsProject.instance()
        project.layersAdded.connect(self._hide_heatmaps)
        project.layersWillBeRemoved.connect(self._layers_removed)
        self._hide_heatmaps()
        self.refresh_status(dock.raster_layer())

    # --- engine plumbing -----------------------------------------------------------------------------
    @pyqtSlot(object, object)
    def _run_callback(self, callback: Callable[[Event], None], event: Event) -> None:
        if not self._closed:
            callback(event)

    def call_engine(
        self, method: str, params: dict[str, Any], on_event: Callable[[Event], None], retry: bool = True
    ) -> None:
        """Send a request without blocking the GUI: the engine starts in a thread if it is not running.
        Requests here are quick and repeatable (locate, search, similar): one that was lost because the
        engine process died is sent once more to a new engine."""

        def deliver(event: Event) -> None:
            if self._closed or event.get("event") not in ("result", "error"):
                return  # unloaded meanwhile: nobody to tell; or progress and log, which these callers ignore
            crashed = retry and event.get("event") == "error" and event["error"].get("crashed")
            try:
                if crashed:  # tell, then send it once more (to a new engine); the caller waits on
                    self._deliver.emit(self._tell_restarted, event)
                    self.call_engine(method, params, on_event, retry=False)
                else:
                    self._deliver.emit(on_event, event)
            except RuntimeError:
                pass  # the controller was deleted between the check and the call

        def send() -> None:
            try:
                self._ensure_engine().request(method, params, deliver)
            except EngineUnavailable as exc:
                deliver({"event": "error", "error": {"kind": "engine", "message": str(exc), "unavailable": True}})

        threading.Thread(target=send, name="clip-search-send", daemon=True).start()

    def _tell_restarted(self, _event: Event) -> None:
        """Say once (not once per lost request) that the engine died and was restarted."""
        now = time.monotonic()
        if now - self._restart_told > 10:
            self.messages.show(RESTARTED, Qgis.Info, 5)
        self._restart_told = now

    def _ensure_engine(self) -> EngineClient:
        """The running engine, started here (in a sender thread) if needed. stop() may run meanwhile on the
        main thread without waiting for the lock: an engine started after it is stopped again at once."""
        with self._engine_lock:
            if self._closed:
                raise EngineUnavailable("CLIP Search was unloaded.")
            engine = self.engine
            if engine is None or not engine.running:
                if engine is not None:
                    engine.stop()  # it died: release its pipes
                engine = EngineClient(
                    self.settings.engine_python, self.settings.device, extra_env=self.settings.engine_env()
                )
                self.engine = engine  # visible to stop() while it starts
                engine.start()
                if self._closed or self.engine is not engine:
                    engine.stop()
                    raise EngineUnavailable("CLIP Search was unloaded or its settings changed.")
            return engine

    def stop(self) -> None:
        """Cancel running tasks, disconnect from QGIS and stop the engine process (plugin unload, QGIS exit)."""
        if self.iface is not None:
            self.iface.currentLayerChanged.disconnect(self._follow_active_layer)
        project = QgsProject.instance()
        for signal, slot in ((project.layersAdded, self._hide_heatmaps),
                             (project.layersWillBeRemoved, self._layers_removed)):
            try:
                signal.disconnect(slot)
            except TypeError:
                pass  # already stopped
        self.view.stop()
        self.messages.stop()
        self._closed = True
        for task in list(self.tasks.values()):
            task.cancel()
        self._stop_engine()

    def _stop_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()

    def apply_settings(self, settings: PluginSettings) -> None:
        settings.save()
        self.settings = settings
        self.weights.settings_changed()
        self._stop_engine()  # the next request starts one with the new settings
        self.refresh_status(self.dock.raster_layer())

    def report_error(self, error: Event, retry: Callable[[], None] | None = None) -> None:
        """An engine error, said where the user looks: missing weights stay in the dock until fixed (``retry``
        runs once they are there); an unreadable raster or a full disk stays on the message bar; the rest for
        a while."""
        if self.weights.offer(error, retry):
            return
        text, kind = error["message"], error.get("kind")
        if kind in ("raster", "storage"):
            self.messages.show(text, Qgis.Critical, STAYS)
        else:  # an engine that cannot run, or a fault of ours, is critical; the rest a warning
            self.messages.show(text, Qgis.Critical if kind in ("internal", "engine") else Qgis.Warning)

    # --- layers and status ------------------------------------------------------------------------------
    def _follow_active_layer(self, layer: Any) -> None:
        if isinstance(layer, QgsRasterLayer) and not layers.is_heatmap(layer):
            self.dock.layerCombo.setLayer(layer)
        elif isinstance(layer, QgsVectorLayer) and self.view.store.get(layer.id()) is not None:
            self.view.show_results_layer(layer)  # a results layer chosen in the Layers panel

    def _hide_heatmaps(self, *_added: Any) -> None:
        """Heatmaps are our own output, never a raster to index: leave them out of the dock's raster list."""
        self.dock.layerCombo.setExceptedLayerList(layers.owned_layers(QgsProject.instance(), layers.HEATMAP_PROPERTY))

    def _layers_removed(self, layer_ids: list[str]) -> None:
        """Layers are leaving the project (removed, or the project closed): forget them, and stop indexing
        them (what is embedded so far is saved, so indexing the raster again resumes)."""
        gone = set(layer_ids)
        for layer_id in gone & set(self.tasks):
            self.tasks[layer_id].cancel()
        for layer_id in gone:
            self.status.pop(layer_id, None)
        self.view.forget(gone)

    def refresh_status(self, layer: QgsRasterLayer | None, then: Callable[[Event], None] | None = None) -> None:
        """Show the raster's index status; ``then(status)`` runs with the engine's answer."""
        self.view.show_current()
        if layer is None:
            self.dock.set_status("Choose a raster layer.", self._engine_missing())
            return
        if layers.raster_path(layer) is None:
            self.dock.set_status(
                f"{layer.name()} is a {layer.providerType()} layer; CLIP Search indexes "
                "raster files (GeoTIFF and other GDAL formats) for now."
            )
            return
        self.dock.set_indexing(layer.id() in self.tasks)
        if self.weights.shown_for_model(self.settings):
            return  # the dock keeps saying what is missing until it is fixed
        self.dock.set_status("Checking the index…")
        self._locate(layer, then)

    def _locate(self, layer: QgsRasterLayer, then: Callable[[Event], None] | None = None) -> None:
        """Ask the engine for the raster's index status; the dock shows it when the raster is its current one."""
        params = {"raster": layers.raster_path(layer), "model": self.settings.model_params(),
                  "tiling": self.settings.tiling_params()}
        layer_id = layer.id()
        self.call_engine("locate", params, lambda event: self._show_status(layer_id, event, then))

    def _engine_missing(self) -> bool:
        """No engine Python configured, or it does not exist (a quick look: offer Set up engine)."""
        try:
            check_engine_python(self.settings.engine_python)
        except EngineUnavailable:
            return True
        return False

    def is_current(self, layer_id: str) -> bool:
        current = self.dock.raster_layer()
        return current is not None and current.id() == layer_id

    def _show_status(self, layer_id: str, event: Event, then: Callable[[Event], None] | None = None) -> None:
        if QgsProject.instance().mapLayer(layer_id) is None:
            return  # the layer was removed meanwhile
        if event["event"] == "error":
            self.status.pop(layer_id, None)
            if self.is_current(layer_id) and not self.weights.shown_for_model(self.settings):
                self.dock.set_status(event["error"]["message"], bool(event["error"].get("unavailable")))
            return
        self.status[layer_id] = status = event["result"]
        if then is not None:
            then(status)
        if self.is_current(layer_id) and layer_id not in self.tasks:
            self.dock.set_status(status_text(status))

    # --- indexing -------------------------------------------------------------------------------------
    def start_index(self, area_mode: int) -> None:
        layer = self.dock.raster_layer()
        if layer is None or layers.raster_path(layer) is None:
            self.messages.show("Choose a raster layer backed by a file to index.")
            return
        if layer.id() in self.tasks:
            return
        tiling = self.settings.tiling_params()
        try:
            area = self.index_area(layer, area_mode)
        except ValueError as exc:
            self.messages.show(str(exc))
            return
        if area is not None:
            tiling["area"] = area
        params = {
            "raster": layers.raster_path(layer),
            "model": self.settings.model_params(),
            "tiling": tiling,
            "device": self.settings.device,
        }
        layer_id, name = layer.id(), layer.name()
        task = IndexTask(f"CLIP Search: indexing {name}", self.settings.engine_python, self.settings.device, params,
                         lambda t: self._index_done(layer_id, name, t), self.settings.engine_env())
        task.progressChanged.connect(lambda percent: self._index_progress(layer_id, percent))
        self.tasks[layer_id] = task
        self.messages.clear()
        self.messages.quieten(task.description())
        self.dock.set_indexing(True)
        self.dock.set_status(f"Indexing {name}…")
        QgsApplication.taskManager().addTask(task)

    def index_area(self, layer: QgsRasterLayer, area_mode: int) -> Any:
        """None (whole layer), a bbox of the visible extent, or selected polygons, in the raster's CRS."""
        if area_mode == AREA_VISIBLE and self.iface is not None:
            canvas = self.iface.mapCanvas()
            source = canvas.mapSettings().destinationCrs()
            transform = QgsCoordinateTransform(source, layer.crs(), QgsProject.instance())
            box = transform.transformBoundingBox(canvas.extent())
            return [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]
        if area_mode == AREA_SELECTED:
            polygons = self.dock.polygonLayerCombo.currentLayer()
            if not isinstance(polygons, QgsVectorLayer) or polygons.selectedFeatureCount() == 0:
                raise ValueError("Select one or more polygons in the chosen polygon layer first.")
            transform = QgsCoordinateTransform(polygons.crs(), layer.crs(), QgsProject.instance())
            area = []
            for feature in polygons.selectedFeatures():
                geometry = feature.geometry()
                geometry.transform(transform)
                area.append(json.loads(geometry.asJson()))
            return area
        return None

    def _index_progress(self, layer_id: str, percent: float) -> None:
        if self.is_current(layer_id):
            self.dock.set_progress(percent)

    def cancel_index(self) -> None:
        layer = self.dock.raster_layer()
        task = self.tasks.get(layer.id()) if layer else None
        if task is not None:
            task.cancel()
            self.dock.set_status("Stopping… (what is embedded so far is kept)")

    def _index_done(self, layer_id: str, name: str, task: IndexTask) -> None:
        """A build ended: one account of it, the same in the dock and on the message bar."""
        self.tasks.pop(layer_id, None)
        layer = QgsProject.instance().mapLayer(layer_id)
        if self.is_current(layer_id):
            self.dock.set_indexing(False)
        if task.result is not None:
            result = task.result
            self.weights.solved()
            self.status[layer_id] = {"status": "ready", "path": result["path"], "manifest": {
                "model": result["model"], "tiles": result["tiles"], "created": "just now",
                "random_weights": result["random_weights"]}}
            self.messages.show(indexed_text(name, result), Qgis.Success, 6)
            if self.is_current(layer_id):
                self.dock.set_status(status_text(self.status[layer_id]))
        elif task.error_kind == "cancelled" and isinstance(layer, QgsRasterLayer):
            def tell(status: Event) -> None:  # with the count of tiles saved, as the dock's status says it
                self.messages.show(f"{name}: {stopped_text(status.get('partial_tiles') or 0)}", Qgis.Info, 8)

            if self.is_current(layer_id):
                self.refresh_status(layer, tell)
            else:
                self._locate(layer, tell)
        elif task.error_kind == "cancelled":
            self.messages.show(f"Indexing {name} stopped: its layer was removed. What was embedded is saved; "
                               "indexing the raster again resumes from there.", Qgis.Info, 8)
        else:
            def again() -> None:  # once missing weights are there: the same build, if its raster is still shown
                if self.is_current(layer_id):
                    self.start_index(self.dock.indexAreaCombo.currentIndex())

            self.report_error({"kind": task.error_kind, "message": task.error or "Indexing failed.",
                               **task.error_details}, again)
            if isinstance(layer, QgsRasterLayer) and self.is_current(layer_id):
                self.refresh_status(layer)

    def use_weights(self, pretrained: str) -> None:
        """Make ``pretrained`` (a weights file, or "none" for random weights) the model's weights, at once."""
        self.apply_settings(replace(self.settings, pretrained=pretrained))
