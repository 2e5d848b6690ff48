"""Wiring: dock <-> engine <-> layers. Every engine answer arrives on the main thread through a signal."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapToolExtent, QgsMapToolPan
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal, pyqtSlot
from qgis.PyQt.QtWidgets import QFileDialog

from . import engine_setup, layers
from .dock import AREA_SELECTED, AREA_VISIBLE, ClipSearchDock
from .engine_client import EngineClient, EngineUnavailable, check_engine_python, raster_changed
from .maptool import ResultPickTool
from .plugin_settings import PluginSettings
from .tasks import IndexTask

Event = dict[str, Any]
MESSAGE_TITLE = "CLIP Search"
RESTARTED = "The engine process stopped while working on a request; it was restarted and the request sent again."


class Controller(QObject):
    """Owns the search engine process, the running index tasks and the current results."""

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
        self.results: dict[str, str] = {}  # raster layer id -> the results layer shown in the dock
        self.regions: dict[str, list[Event]] = {}  # results layer id -> its regions (as the engine gave them)
        self.marks: dict[str, dict[int, int]] = {}  # results layer id -> rank -> +1 relevant / -1 not
        self.searches: dict[str, Event] = {}  # results layer id -> the text search behind it (for feedback)
        self.pick_tool: ResultPickTool | None = None
        self.example_tool: QgsMapToolExtent | None = None
        self._tool_before: Any = None  # the canvas tool to give back when ours are turned off
        self._deliver.connect(self._run_callback, Qt.QueuedConnection)
        dock.layerChanged.connect(self.refresh_status)
        dock.indexRequested.connect(self.start_index)
        dock.cancelRequested.connect(self.cancel_index)
        dock.searchRequested.connect(self.search)
        dock.resultSelected.connect(self.focus_result)
        dock.zoomAllRequested.connect(self.zoom_all)
        dock.moreLikeThisRequested.connect(self.more_like_this)
        dock.exportRequested.connect(self.export_results)
        dock.pickToggled.connect(self.set_picking)
        dock.drawExampleToggled.connect(self.set_drawing)
        dock.markChanged.connect(self.set_mark)
        dock.refineRequested.connect(self.search_again)
        if iface is not None:
            self.pick_tool = ResultPickTool(iface.mapCanvas(), self._pick_candidates)
            self.pick_tool.picked.connect(self.pick_result)
            self.pick_tool.deactivated.connect(lambda: self.dock.set_picking(False))
            self.example_tool = QgsMapToolExtent(iface.mapCanvas())
            self.example_tool.setObjectName("clipSearchExampleTool")
            self.example_tool.extentChanged.connect(self.search_example)
            self.example_tool.deactivated.connect(lambda: self.dock.set_drawing(False))
            iface.currentLayerChanged.connect(self._follow_active_layer)
            self._follow_active_layer(iface.activeLayer())
        QgsProject.instance().layersAdded.connect(self._hide_heatmaps)
        self._hide_heatmaps()
        self.refresh_status(dock.raster_layer())

    # --- engine plumbing -----------------------------------------------------------------------------
    @pyqtSlot(object, object)
    def _run_callback(self, callback: Callable[[Event], None], event: Event) -> None:
        callback(event)

    def call_engine(
        self, method: str, params: dict[str, Any], on_event: Callable[[Event], None], retry: bool = True
    ) -> None:
        """Send a request without blocking the GUI: the engine starts in a thread if it is not running.
        Requests here are quick and repeatable (locate, search, similar): one that was lost because the
        engine process died is sent once more to a new engine."""

        def deliver(event: Event) -> None:
            if self._closed:
                return  # unloaded meanwhile: nobody to tell
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
            self.message(RESTARTED, Qgis.Info, 5)
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
        try:
            QgsProject.instance().layersAdded.disconnect(self._hide_heatmaps)
        except TypeError:
            pass  # already stopped
        if self.pick_tool is not None:
            self.set_picking(False)
            self.pick_tool.deleteLater()
            self.pick_tool = None
        if self.example_tool is not None:
            self.set_drawing(False)
            self.example_tool.deleteLater()
            self.example_tool = None
        for results_layer in layers.results_layers(QgsProject.instance()):
            try:
                results_layer.selectionChanged.disconnect(self._result_selection_changed)
            except TypeError:
                pass  # connected by an earlier load of the plugin, or never
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
        self._stop_engine()  # the next request starts one with the new settings
        self.refresh_status(self.dock.raster_layer())

    def message(self, text: str, level: Any = Qgis.Warning, duration: int = 8) -> None:
        if level in (Qgis.Warning, Qgis.Critical):
            engine_setup.RECENT_ERRORS.append(text)
        if self.iface is not None:
            self.iface.messageBar().pushMessage(MESSAGE_TITLE, text, level=level, duration=duration)

    # --- layer and status -----------------------------------------------------------------------------
    def _follow_active_layer(self, layer: Any) -> None:
        if isinstance(layer, QgsRasterLayer) and not layers.is_heatmap(layer):
            self.dock.layerCombo.setLayer(layer)
        elif isinstance(layer, QgsVectorLayer) and layer.id() in self.regions:
            self.show_results_layer(layer)  # a results layer chosen in the Layers panel

    def _hide_heatmaps(self, *_added: Any) -> None:
        """Heatmaps are our own output, never a raster to index: leave them out of the dock's raster list."""
        self.dock.layerCombo.setExceptedLayerList(layers.owned_layers(QgsProject.instance(), layers.HEATMAP_PROPERTY))

    def show_results_layer(self, results_layer: QgsVectorLayer) -> None:
        """Make the dock show this results layer (and its raster), e.g. an earlier query's layer."""
        raster = QgsProject.instance().mapLayer(str(results_layer.customProperty(layers.RESULTS_PROPERTY)))
        if not isinstance(raster, QgsRasterLayer) or results_layer.id() not in self.regions:
            return
        self.results[raster.id()] = results_layer.id()
        if self.dock.raster_layer() is not raster:
            self.dock.layerCombo.setLayer(raster)  # refresh_status shows the results
        else:
            self.dock.show_results(self.regions[results_layer.id()], "")
            self.dock.show_marks(self.marks.get(results_layer.id(), {}))

    def refresh_status(self, layer: QgsRasterLayer | None) -> None:
        self.dock.show_results(self.current_regions(), "")
        current = self.current_results_layer()
        self.dock.show_marks(self.marks.get(current.id(), {}) if current is not None else {})
        if layer is None:
            self.dock.set_status("Choose a raster layer.", self._engine_missing())
            return
        path = layers.raster_path(layer)
        if path is None:
            self.dock.set_status(
                f"{layer.name()} is a {layer.providerType()} layer; CLIP Search indexes "
                "raster files (GeoTIFF and other GDAL formats) for now."
            )
            return
        self.dock.set_indexing(layer.id() in self.tasks)
        self.dock.set_status("Checking the index…")
        params = {"raster": path, "model": self.settings.model_params(), "tiling": self.settings.tiling_params()}
        self.call_engine("locate", params, lambda event: self._show_status(layer.id(), event))

    def _engine_missing(self) -> bool:
        """No engine Python configured, or it does not exist (a quick look: offer Set up engine)."""
        try:
            check_engine_python(self.settings.engine_python)
        except EngineUnavailable:
            return True
        return False

    def _show_status(self, layer_id: str, event: Event) -> None:
        current = self.dock.raster_layer()
        if event["event"] == "error":
            self.status.pop(layer_id, None)
            if current is not None and current.id() == layer_id:
                self.dock.set_status(event["error"]["message"], bool(event["error"].get("unavailable")))
            return
        self.status[layer_id] = status = event["result"]
        if current is None or current.id() != layer_id:
            return
        self.dock.set_status(status_text(status))

    # --- indexing -------------------------------------------------------------------------------------
    def start_index(self, area_mode: int) -> None:
        layer = self.dock.raster_layer()
        if layer is None or layers.raster_path(layer) is None:
            self.message("Choose a raster layer backed by a file to index.")
            return
        if layer.id() in self.tasks:
            return
        tiling = self.settings.tiling_params()
        try:
            area = self.index_area(layer, area_mode)
        except ValueError as exc:
            self.message(str(exc))
            return
        if area is not None:
            tiling["area"] = area
        params = {
            "raster": layers.raster_path(layer),
            "model": self.settings.model_params(),
            "tiling": tiling,
            "device": self.settings.device,
        }
        task = IndexTask(
            f"CLIP Search: indexing {layer.name()}",
            self.settings.engine_python,
            self.settings.device,
            params,
            lambda t: self._index_done(layer.id(), t),
            self.settings.engine_env(),
        )
        layer_id = layer.id()
        task.progressChanged.connect(lambda percent: self._index_progress(layer_id, percent))
        self.tasks[layer.id()] = task
        self.dock.set_indexing(True)
        self.dock.set_status(f"Indexing {layer.name()}…")
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
        current = self.dock.raster_layer()
        if current is not None and current.id() == layer_id:
            self.dock.set_progress(percent)

    def cancel_index(self) -> None:
        layer = self.dock.raster_layer()
        task = self.tasks.get(layer.id()) if layer else None
        if task is not None:
            task.cancel()
            self.dock.set_status("Cancelling…")

    def _index_done(self, layer_id: str, task: IndexTask) -> None:
        self.tasks.pop(layer_id, None)
        current = self.dock.raster_layer()
        if current is not None and current.id() == layer_id:
            self.dock.set_indexing(False)
        if task.result is not None:
            result = task.result
            self.status[layer_id] = {
                "status": "ready",
                "path": result["path"],
                "manifest": {
                    "model": result["model"],
                    "tiles": result["tiles"],
                    "created": "just now",
                    "random_weights": result["random_weights"],
                },
            }
            self.message(f"Indexed {result['tiles']} tiles in {result['seconds']:.0f} s.", Qgis.Success, 4)
            if current is not None and current.id() == layer_id:
                self.dock.set_status(status_text(self.status[layer_id]))
        else:
            level = Qgis.Info if task.error_kind == "cancelled" else Qgis.Critical
            self.message(task.error or "Indexing failed.", level)
            if current is not None and current.id() == layer_id:
                self.refresh_status(current)

    # --- searching ------------------------------------------------------------------------------------
    def searchable_index(self, layer: QgsRasterLayer) -> str | None:
        status = self.status.get(layer.id())
        if status is None or status["status"] not in ("ready", "stale"):
            self.message("Index this layer first (Index layer).")
            return None
        if raster_changed(status):
            self.message("The raster changed since it was indexed; index it again.")
            return None
        return str(status["path"])

    def search(self, query: str) -> None:
        layer = self.dock.raster_layer()
        if layer is None:
            self.message("Choose a raster layer to search.")
            return
        if not query.strip():
            self.message("Type what to find, e.g. 'swimming pool'.")
            return
        index = self.searchable_index(layer)
        if index is None:
            return
        self.text_search(layer, index, {"query": query, "relevant_ids": [], "irrelevant_ids": []})

    def text_search(self, layer: QgsRasterLayer, index: str, base: Event) -> None:
        """Send a text search (with any relevance feedback in ``base``) with the dock's options."""
        options = self.dock.search_options()
        params: dict[str, Any] = {
            "index": index,
            **base,
            **self.result_options(layer, options),
            "templates": self.settings.templates_param(options["templates"]),
        }
        self.dock.set_searching(True)
        self.call_engine("search", params, lambda event: self._show_results(layer, event, base))

    def result_options(self, layer: QgsRasterLayer, options: dict[str, Any]) -> dict[str, Any]:
        """The dock's options every search shares: number of tiles, threshold, area, heatmap file."""
        params: dict[str, Any] = {"top_k": options["top_k"], "min_relative": options["min_relative"]}
        if options["visible_only"] and self.iface is not None:
            params["area"] = self.index_area(layer, AREA_VISIBLE)
        if options["heatmap"]:
            params["heatmap"] = QgsProcessingUtils.generateTempFilename("clip_search_heatmap.tif")
            os.makedirs(os.path.dirname(params["heatmap"]), exist_ok=True)
        return params

    def set_mark(self, rank: int, mark: int) -> None:
        results_layer = self.current_results_layer()
        if results_layer is None:
            return
        marks = self.marks.setdefault(results_layer.id(), {})
        if mark:
            marks[rank] = mark
        else:
            marks.pop(rank, None)
        self.dock.show_marks(marks)

    def search_again(self) -> None:
        """Relevance feedback: the same text search, moved toward the results marked relevant and away from
        those marked not relevant (marks of earlier rounds are kept)."""
        layer, results_layer = self.dock.raster_layer(), self.current_results_layer()
        if layer is None or results_layer is None:
            return
        base = self.searches.get(results_layer.id())
        if base is None:
            self.message("Search again works on text searches; mark results of a text search.", Qgis.Info, 5)
            return
        marks = self.marks.get(results_layer.id(), {})
        regions = {int(r["rank"]): r for r in self.regions.get(results_layer.id(), [])}
        chosen: dict[int, list[int]] = {1: [], -1: []}
        for rank, mark in marks.items():
            if rank in regions:
                chosen[mark].extend(int(m["tile_id"]) for m in regions[rank]["members"])
        index = self.searchable_index(layer)
        if index is None:
            return
        self.text_search(layer, index, {
            "query": base["query"],
            "relevant_ids": sorted(set(base["relevant_ids"]) | set(chosen[1])),
            "irrelevant_ids": sorted(set(base["irrelevant_ids"]) | set(chosen[-1])),
        })

    def more_like_this(self, rank: int) -> None:
        layer = self.dock.raster_layer()
        if layer is None:
            return
        region = next((r for r in self.current_regions() if r["rank"] == rank), None)
        index = self.searchable_index(layer)
        if region is None or index is None:
            return
        tile_ids = [m["tile_id"] for m in region["members"]]
        params = {"index": index, "tile_ids": tile_ids, **self.result_options(layer, self.dock.search_options())}
        self.dock.set_searching(True)
        self.call_engine("similar", params, lambda event: self._show_results(layer, event))

    def search_example(self, extent: QgsRectangle) -> None:
        """Search by example: places that look like the rectangle just drawn on the map (canvas CRS)."""
        self.set_drawing(False)  # one rectangle per click of Draw example
        layer = self.dock.raster_layer()
        if layer is None or self.iface is None:
            self.message("Choose the raster layer to search first.")
            return
        if extent.isEmpty() or extent.width() <= 0 or extent.height() <= 0:
            self.message("Drag a rectangle around an example of what to find.", Qgis.Info, 5)
            return
        index = self.searchable_index(layer)
        if index is None:
            return
        canvas_crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        box = QgsCoordinateTransform(canvas_crs, layer.crs(), QgsProject.instance()).transformBoundingBox(extent)
        if not box.intersects(layer.extent()):
            self.message("The rectangle is outside the raster; draw it around an example on the raster.")
            return
        params = {"index": index, "bbox": [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()],
                  **self.result_options(layer, self.dock.search_options())}
        self.dock.set_searching(True)
        self.call_engine("similar", params, lambda event: self._show_results(layer, event))

    def _show_results(self, raster: QgsRasterLayer, event: Event, base: Event | None = None) -> None:
        self.dock.set_searching(False)
        if event["event"] == "error":
            internal = event["error"]["kind"] == "internal"
            self.message(event["error"]["message"], Qgis.Critical if internal else Qgis.Warning)
            return
        result = event["result"]
        if QgsProject.instance().mapLayer(raster.id()) is None:
            return  # the raster was removed while searching
        results_layer = layers.build_results_layer(
            result["regions"], result["query"], raster.crs(), raster.id(), result["random_weights"]
        )
        project = QgsProject.instance()
        if result.get("heatmap"):  # under the results layer, which is added after it
            heatmap = layers.heatmap_layer(result["heatmap"], result["query"], raster.id())
            if heatmap.isValid():
                layers.add_heatmap_layer(project, heatmap, self.settings.replace_results)
            else:
                self.message(f"The heatmap {result['heatmap']} could not be opened.")
        layers.add_results_layer(project, results_layer, self.settings.replace_results)
        self.regions = {lid: r for lid, r in self.regions.items() if project.mapLayer(lid) is not None}
        self.regions[results_layer.id()] = result["regions"]
        self.marks = {lid: m for lid, m in self.marks.items() if lid in self.regions}
        self.searches = {lid: q for lid, q in self.searches.items() if lid in self.regions}
        if base is not None:
            self.searches[results_layer.id()] = base
        self.results[raster.id()] = results_layer.id()
        results_layer.selectionChanged.connect(self._result_selection_changed)
        current = self.dock.raster_layer()
        if current is not None and current.id() == raster.id():
            self.dock.show_results(result["regions"], "")
        if not result["regions"]:
            self.message("No tiles matched; lower the minimum score or raise the number of tiles.", Qgis.Info, 5)
        elif self.iface is not None:
            self.iface.setActiveLayer(results_layer)
            layers.zoom_to(self.iface.mapCanvas(), results_layer)
            self._offer_pick_tool()

    def current_results_layer(self) -> QgsVectorLayer | None:
        layer = self.dock.raster_layer()
        if layer is None or layer.id() not in self.results:
            return None
        found = QgsProject.instance().mapLayer(self.results[layer.id()])
        return found if isinstance(found, QgsVectorLayer) else None

    def current_regions(self) -> list[Event]:
        results_layer = self.current_results_layer()
        return self.regions.get(results_layer.id(), []) if results_layer is not None else []

    def focus_result(self, rank: int) -> None:
        """Zoom to a result, select (highlight) its feature."""
        results_layer = self.current_results_layer()
        if results_layer is None:
            return
        fid = layers.feature_id_of_rank(results_layer, rank)
        if fid is None:
            return
        results_layer.blockSignals(True)
        results_layer.selectByIds([fid])
        results_layer.blockSignals(False)
        results_layer.triggerRepaint()
        if self.iface is not None:
            layers.zoom_to(self.iface.mapCanvas(), results_layer, [fid])

    def _result_selection_changed(self, selected: list[int], _deselected: list[int], _clear: bool) -> None:
        """A result feature selected on the map (select tool, attribute table): show its row, zoom to it."""
        results_layer = self.sender()
        if isinstance(results_layer, QgsVectorLayer) and len(selected) == 1:
            self.pick_result(results_layer.id(), int(selected[0]))

    def pick_result(self, layer_id: str, fid: int) -> None:
        """Select the feature, show its layer's results with its row selected, and zoom to it."""
        results_layer = QgsProject.instance().mapLayer(layer_id)
        if not isinstance(results_layer, QgsVectorLayer) or layer_id not in self.regions:
            return
        if self.current_results_layer() is not results_layer:
            self.show_results_layer(results_layer)
        if results_layer.selectedFeatureIds() != [fid]:
            results_layer.blockSignals(True)
            results_layer.selectByIds([fid])
            results_layer.blockSignals(False)
            results_layer.triggerRepaint()
        self.dock.select_rank(int(results_layer.getFeature(fid)["rank"]))
        if self.iface is not None:
            layers.zoom_to(self.iface.mapCanvas(), results_layer, [fid])

    # --- picking results on the map ---------------------------------------------------------------------
    def _pick_candidates(self) -> list[QgsVectorLayer]:
        """Result layers a map click may pick from: the dock's current one first, then the others."""
        current = self.current_results_layer()
        others = [lyr for lyr in layers.results_layers(QgsProject.instance())
                  if lyr is not current and lyr.id() in self.regions]
        return ([current] if current is not None else []) + others

    def set_picking(self, active: bool) -> None:
        self._use_tool(self.pick_tool, active)

    def set_drawing(self, active: bool) -> None:
        self._use_tool(self.example_tool, active)

    def _use_tool(self, tool: Any, active: bool) -> None:
        """Make one of our map tools the canvas's tool, or give the canvas back the tool it had before."""
        if self.iface is None or tool is None:
            return
        canvas = self.iface.mapCanvas()
        current = canvas.mapTool()
        if active and current is not tool:
            if current is not self.pick_tool and current is not self.example_tool:
                self._tool_before = current
            canvas.setMapTool(tool)
        elif not active and current is tool:
            canvas.unsetMapTool(tool)
            previous, self._tool_before = self._tool_before, None
            if previous is not None:
                try:
                    canvas.setMapTool(previous)
                except RuntimeError:
                    pass  # that tool was deleted meanwhile
        self.dock.set_picking(self.pick_tool is not None and canvas.mapTool() is self.pick_tool)
        self.dock.set_drawing(self.example_tool is not None and canvas.mapTool() is self.example_tool)

    def _offer_pick_tool(self) -> None:
        """After a search, make results clickable when the user is only panning (never replace other tools)."""
        tool = self.iface.mapCanvas().mapTool() if self.iface is not None else None
        if tool is None or (isinstance(tool, QgsMapToolPan) and tool is not self.pick_tool):
            self.set_picking(True)

    def zoom_all(self) -> None:
        results_layer = self.current_results_layer()
        if results_layer is not None and self.iface is not None:
            layers.zoom_to(self.iface.mapCanvas(), results_layer)

    def export_results(self, path: str | None = None) -> str:
        """Export the current results (asks for a file when ``path`` is None); returns an error or ''."""
        results_layer = self.current_results_layer()
        if results_layer is None:
            return "No results to export."
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self.dock,
                "Export results",
                results_layer.name() + ".gpkg",
                "GeoPackage (*.gpkg);;GeoJSON (*.geojson);;Shapefile (*.shp)",
            )
            if not path:
                return ""
        error = layers.export_layer(results_layer, path)
        self.message(error or f"Results written to {path}.", Qgis.Critical if error else Qgis.Success, 5)
        return error


def status_text(status: Event) -> str:
    text = _status_text(status)
    saved = status.get("partial_tiles") or 0
    if saved and status["status"] != "ready":
        text += f" A build was stopped after {saved:,} tiles: Index layer resumes it."
    return text


def _status_text(status: Event) -> str:
    manifest = status.get("manifest") or {}
    model = manifest.get("model", "")
    if status["status"] == "ready":
        return f"Index ready: {manifest.get('tiles')} tiles, {model}, built {manifest.get('created')}."
    if raster_changed(status):
        return (
            f"Index out of date: the raster changed since it was indexed ({manifest.get('tiles')} tiles, "
            f"{model}). Click Index layer to rebuild it."
        )
    if status["status"] == "stale":
        return (
            f"Index built with other settings: {manifest.get('tiles')} tiles, {model}. Searching it; "
            "click Index layer to index with the current settings."
        )
    if status["status"] == "damaged":
        return f"The index is damaged: {status.get('message')} Click Index layer to rebuild it."
    return "Not indexed yet. Click Index layer."
