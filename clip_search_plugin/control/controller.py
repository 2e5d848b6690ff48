"""Wiring: the dock's requests to the parts that carry them out, QGIS's project and layer signals, settings, unload.

The parts: :class:`DockEngine` (the dock's engine session, answers on the main thread), :class:`Rasters` (each
raster's index status and running build), :class:`Indexing` (builds), :class:`Searches` (searches),
:class:`ResultsView` (results layers and the chosen result) and :class:`WeightsProblem` (missing model weights).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QObject

from ..results import layers
from ..results.view import ResultsView
from ..session.settings import PluginSettings
from ..ui.dock import ClipSearchDock
from ..ui.messages import STAYS, Messages
from .engine import DockEngine
from .indexing import Indexing
from .rasters import Rasters
from .searches import Searches
from .weights import WeightsProblem

Event = dict[str, Any]


class Controller(QObject):
    """Connects the dock to the engine, the running index builds and the results; owns the plugin's settings."""

    def __init__(self, iface: Any, dock: ClipSearchDock, recent_errors: deque[str] | None = None) -> None:
        super().__init__()
        self.iface = iface
        self.dock = dock
        self.settings = PluginSettings.load()
        self.messages = Messages(iface, recent_errors)
        self.engine = DockEngine(self.settings, self.messages)
        self.view = ResultsView(iface, dock, self.messages)
        self.weights = WeightsProblem(self, dock)
        self.rasters = Rasters(self)
        self.indexing = Indexing(self)
        self.searches = Searches(self)
        self._connect_dock(dock)
        if iface is not None:
            iface.currentLayerChanged.connect(self._follow_active_layer)
            self._follow_active_layer(iface.activeLayer())
        project = QgsProject.instance()
        project.layersAdded.connect(self._hide_heatmaps)
        project.layersWillBeRemoved.connect(self._layers_removed)
        self._hide_heatmaps()
        self.rasters.refresh(dock.raster_layer())

    def _connect_dock(self, dock: ClipSearchDock) -> None:
        dock.layerChanged.connect(self.rasters.refresh)
        dock.indexRequested.connect(self.indexing.start)
        dock.cancelRequested.connect(self.indexing.cancel)
        dock.searchRequested.connect(self.searches.search)
        dock.resultSelected.connect(self.view.focus_result)
        dock.zoomAllRequested.connect(self.view.zoom_all)
        dock.moreLikeThisRequested.connect(self.searches.more_like_this)
        dock.exportRequested.connect(self.view.export_results)
        dock.pickToggled.connect(self.view.set_picking)
        dock.drawExampleToggled.connect(self.view.set_drawing)
        dock.drawAreaToggled.connect(self.view.set_area_drawing)
        dock.markChanged.connect(self.view.set_mark)
        dock.refineRequested.connect(self.searches.search_again)
        if self.view.example_tool is not None:
            self.view.example_tool.extentChanged.connect(self.searches.search_example)
        if self.view.area_tool is not None:
            self.view.area_tool.extentChanged.connect(self.indexing.area_drawn)

    def stop(self) -> None:
        """Cancel running builds, disconnect from QGIS and stop the engine process (plugin unload, QGIS exit)."""
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
        self.engine.stop()
        self.indexing.stop()

    # --- settings and errors ----------------------------------------------------------------------------
    def apply_settings(self, settings: PluginSettings) -> None:
        """Use (and store) new settings: the next request starts an engine with them, and the status is asked
        again."""
        settings.save()
        self.settings = settings
        self.weights.settings_changed()
        self.engine.use(settings)
        self.rasters.refresh(self.dock.raster_layer())

    def use_weights(self, pretrained: str) -> None:
        """Make ``pretrained`` (a weights file, or "none" for random weights) the model's weights, at once."""
        self.apply_settings(replace(self.settings, pretrained=pretrained))

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

    # --- QGIS's layers --------------------------------------------------------------------------------
    def _follow_active_layer(self, layer: Any) -> None:
        if isinstance(layer, QgsRasterLayer) and not layers.is_heatmap(layer):
            self.dock.set_raster_layer(layer)
        elif isinstance(layer, QgsVectorLayer) and self.view.store.get(layer.id()) is not None:
            self.view.show_results_layer(layer)  # a results layer chosen in the Layers panel

    def _hide_heatmaps(self, *_added: Any) -> None:
        """Heatmaps are our own output, never a raster to index: leave them out of the dock's raster list."""
        self.dock.hide_layers(layers.owned_layers(QgsProject.instance(), layers.HEATMAP_PROPERTY))

    def _layers_removed(self, layer_ids: list[str]) -> None:
        """Layers are leaving the project (removed, or the project closed): forget them, and stop indexing
        them (what is embedded so far is saved, so indexing the raster again resumes)."""
        gone = set(layer_ids)
        self.rasters.forget(gone)
        self.indexing.forget(gone)
        self.view.forget(gone)
