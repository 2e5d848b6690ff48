"""The results the dock shows: results layers and their records, the chosen result's outline, picking a result
on the map, drawing an example, zooming and exporting. Everything is found again by layer id, never kept as a
layer object, so layers that go away (a removed layer, a closed project) leave nothing behind to touch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer
from qgis.gui import QgsMapToolExtent, QgsMapToolPan
from qgis.PyQt.QtCore import QObject
from qgis.PyQt.QtWidgets import QFileDialog

from ..engine.answers import SearchAnswer
from ..ui.dock import ClipSearchDock
from ..ui.highlight import AreaBox, ResultHighlight, zoom_to, zoom_to_result
from ..ui.maptool import ResultPickTool
from ..ui.messages import Messages
from . import layers
from .store import ResultRecord, ResultStore, TextSearch

EXPORT_FOLDER = "clip_search/export_folder"  # the folder of the last export, offered for the next one


class ResultsView(QObject):
    """Shows results layers in the dock and on the map; the controller hands it what the engine found."""

    def __init__(self, iface: Any, dock: ClipSearchDock, messages: Messages) -> None:
        super().__init__()
        self.iface, self.dock, self.messages = iface, dock, messages
        self.store = ResultStore()
        self.highlight: ResultHighlight | None = None
        self.pick_tool: ResultPickTool | None = None
        self.example_tool: QgsMapToolExtent | None = None
        self.area_tool: QgsMapToolExtent | None = None  # the box Index layer covers
        self.area_box: AreaBox | None = None
        self._tool_before: Any = None  # the canvas tool to give back when ours are turned off
        if iface is not None:
            canvas = iface.mapCanvas()
            self.highlight = ResultHighlight(canvas)
            self.pick_tool = ResultPickTool(canvas, self._pick_candidates)
            self.pick_tool.picked.connect(self.pick_result)
            self.pick_tool.deactivated.connect(lambda: self.dock.set_picking(False))
            self.example_tool = QgsMapToolExtent(canvas)
            self.example_tool.setObjectName("clipSearchExampleTool")
            self.example_tool.deactivated.connect(lambda: self.dock.set_drawing(False))
            self.area_tool = QgsMapToolExtent(canvas)
            self.area_tool.setObjectName("clipSearchAreaTool")
            self.area_tool.deactivated.connect(lambda: self.dock.set_drawing_area(False))
            self.area_box = AreaBox(canvas)

    # --- what is shown --------------------------------------------------------------------------------
    def current_record(self) -> ResultRecord | None:
        """The record of the results layer the dock shows for its raster (None when that layer is gone)."""
        raster = self.dock.raster_layer()
        record = self.store.shown_for(raster.id() if raster is not None else None)
        return record if record is not None and self.layer(record.layer_id) is not None else None

    def current_results_layer(self) -> QgsVectorLayer | None:
        record = self.current_record()
        return self.layer(record.layer_id) if record is not None else None

    @staticmethod
    def layer(layer_id: str) -> QgsVectorLayer | None:
        found = QgsProject.instance().mapLayer(layer_id)
        return found if isinstance(found, QgsVectorLayer) else None

    def show_current(self) -> None:
        """Fill the dock's table with the results shown for its raster (or nothing)."""
        record = self.current_record()
        self.dock.show_results(record.regions if record is not None else [])
        self.dock.show_marks(record.marks if record is not None else {})
        if self.highlight is not None:
            self.highlight.clear()

    def show_results_layer(self, results_layer: QgsVectorLayer) -> None:
        """Make the dock show this results layer (and its raster), e.g. an earlier query's layer."""
        record = self.store.get(results_layer.id())
        raster = QgsProject.instance().mapLayer(record.raster_id) if record is not None else None
        if record is None or not isinstance(raster, QgsRasterLayer):
            return
        self.store.show(record)
        if not self.dock.is_current_raster(raster.id()):
            self.dock.set_raster_layer(raster)  # the controller's status refresh shows the results
        else:
            self.show_current()

    def add_results(self, raster: QgsRasterLayer, result: SearchAnswer, title: str, search: TextSearch | None,
                    replace: bool) -> QgsVectorLayer:
        """A results layer (and heatmap) for what the engine found, shown in the dock and on the map."""
        results_layer = layers.build_results_layer(result, raster.crs(), raster.id(), title)
        project = QgsProject.instance()
        if result.heatmap:  # under the results layer, which is added after it
            heatmap = layers.heatmap_layer(result.heatmap, title, raster.id())
            if heatmap.isValid():
                layers.add_heatmap_layer(project, heatmap, replace)
            else:
                self.messages.show(f"The heatmap {result.heatmap} could not be opened.")
        layers.add_results_layer(project, results_layer, replace)  # layers it replaces are forgotten as they go
        self.store.add(ResultRecord(results_layer.id(), raster.id(), result, title, search))
        results_layer.selectionChanged.connect(self._result_selection_changed)
        if self.dock.is_current_raster(raster.id()):
            self.show_current()
        if result.regions and self.iface is not None:
            self.iface.setActiveLayer(results_layer)
            zoom_to(self.iface.mapCanvas(), results_layer)
            self._offer_pick_tool()
        return results_layer

    # --- one result ------------------------------------------------------------------------------------
    def focus_result(self, rank: int) -> None:
        """A row chosen in the dock: outline its region over the imagery and zoom to it with its surroundings."""
        results_layer = self.current_results_layer()
        fid = layers.feature_id_of_rank(results_layer, rank) if results_layer is not None else None
        if results_layer is None or fid is None:
            return
        if results_layer.selectedFeatureCount():  # a QGIS selection would paint another region solid yellow
            results_layer.blockSignals(True)
            results_layer.removeSelection()
            results_layer.blockSignals(False)
            results_layer.triggerRepaint()
        self._outline(results_layer, fid)

    def _outline(self, results_layer: QgsVectorLayer, fid: int) -> None:
        if self.iface is None or self.highlight is None:
            return
        self.highlight.show(results_layer, fid)
        zoom_to_result(self.iface.mapCanvas(), results_layer, fid)

    def _result_selection_changed(self, selected: list[int], _deselected: list[int], _clear: bool) -> None:
        """A result selected with QGIS's own tools (select tool, attribute table): show its row, outline it."""
        results_layer = self.sender()
        if isinstance(results_layer, QgsVectorLayer) and len(selected) == 1:
            self.pick_result(results_layer.id(), int(selected[0]))

    def pick_result(self, layer_id: str, fid: int) -> None:
        """Show the results layer in the dock with the result's row chosen, outline it and zoom to it."""
        found = self.layer(layer_id)
        if found is None or self.store.get(layer_id) is None:
            return
        results_layer: QgsVectorLayer = found
        if self.current_results_layer() is not results_layer:
            self.show_results_layer(results_layer)
        self.dock.select_rank(int(results_layer.getFeature(fid)["rank"]))
        self._outline(results_layer, fid)

    def zoom_all(self) -> None:
        results_layer = self.current_results_layer()
        if results_layer is not None and self.iface is not None:
            zoom_to(self.iface.mapCanvas(), results_layer)

    def set_mark(self, rank: int, mark: int) -> None:
        record = self.current_record()
        if record is None:
            return
        if mark:
            record.marks[rank] = mark
        else:
            record.marks.pop(rank, None)
        self.dock.show_marks(record.marks)

    # --- map tools -------------------------------------------------------------------------------------
    def _pick_candidates(self) -> list[QgsVectorLayer]:
        """Result layers a map click may pick from: the dock's current one first, then the others."""
        current = self.current_results_layer()
        others = [lyr for lyr in layers.results_layers(QgsProject.instance())
                  if lyr is not current and self.store.get(lyr.id()) is not None]
        return ([current] if current is not None else []) + others

    def set_picking(self, active: bool) -> None:
        self._use_tool(self.pick_tool, active)

    def set_drawing(self, active: bool) -> None:
        self._use_tool(self.example_tool, active)

    def set_area_drawing(self, active: bool) -> None:
        self._use_tool(self.area_tool, active)

    def show_area(self, extent: Any) -> None:
        """Show the box Index layer covers (canvas CRS) on the map."""
        if self.area_box is not None:
            self.area_box.show(extent)

    def _use_tool(self, tool: Any, active: bool) -> None:
        """Make one of our map tools the canvas's tool, or give the canvas back the tool it had before."""
        if self.iface is None or tool is None:
            return
        canvas = self.iface.mapCanvas()
        current = canvas.mapTool()
        if active and current is not tool:
            if current not in (self.pick_tool, self.example_tool, self.area_tool):
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
        self.dock.set_drawing_area(self.area_tool is not None and canvas.mapTool() is self.area_tool)

    def _offer_pick_tool(self) -> None:
        """After a search, make results clickable when the user is only panning (never replace other tools)."""
        tool = self.iface.mapCanvas().mapTool() if self.iface is not None else None
        if tool is None or (isinstance(tool, QgsMapToolPan) and tool is not self.pick_tool):
            self.set_picking(True)

    # --- export ----------------------------------------------------------------------------------------
    def export_results(self, path: str | None = None) -> str:
        """Export the current results (asks for a file when ``path`` is None: named after the search, in the
        folder of the last export); returns an error or ''."""
        results_layer = self.current_results_layer()
        if results_layer is None:
            return "No results to export."
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.dock, "Export results", self.export_suggestion(),
                                                  "GeoPackage (*.gpkg);;GeoJSON (*.geojson);;Shapefile (*.shp)")
            if not path:
                return ""
        error = layers.export_layer(results_layer, path)
        if not error:
            QgsSettings().setValue(EXPORT_FOLDER, str(Path(path).parent))
        self.messages.show(error or f"Results written to {path}.", Qgis.Critical if error else Qgis.Success, 5)
        return error

    def export_suggestion(self) -> str:
        """The file an export offers: named after the search, in the folder of the last export (at first the
        user's home folder, never wherever QGIS happened to start)."""
        results_layer = self.current_results_layer()
        name = layers.file_stem(results_layer.name()) if results_layer is not None else "clip_search_results"
        folder = str(QgsSettings().value(EXPORT_FOLDER, "") or Path.home())
        return str(Path(folder) / f"{name}.gpkg")

    # --- layers going away, unloading ------------------------------------------------------------------
    def forget(self, layer_ids: set[str]) -> None:
        """Layers are being removed: drop their records, and the outline when it is on one of them."""
        self.store.forget(layer_ids)
        if self.highlight is not None and self.highlight.layer_id in layer_ids:
            self.highlight.clear()

    def stop(self) -> None:
        """Give the canvas back its tools, take our outline off it, stop listening to results layers."""
        for tool, turn_off in ((self.pick_tool, self.set_picking), (self.example_tool, self.set_drawing),
                               (self.area_tool, self.set_area_drawing)):
            if tool is not None:
                turn_off(False)
                tool.deleteLater()
        self.pick_tool = self.example_tool = self.area_tool = None
        if self.area_box is not None:
            self.area_box.remove()
            self.area_box = None
        if self.highlight is not None:
            self.highlight.remove()
            self.highlight = None
        for results_layer in layers.results_layers(QgsProject.instance()):
            try:
                results_layer.selectionChanged.disconnect(self._result_selection_changed)
            except TypeError:
                pass  # connected by an earlier load of the plugin, or never
