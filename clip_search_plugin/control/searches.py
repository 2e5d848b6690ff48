"""Searching from the dock: text searches, relevance feedback, More like this and Draw example, each sent to
the engine as a typed request without blocking, its answer shown on the raster it was asked for if that raster is
still there."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)

from ..engine.answers import SearchAnswer, fewer_text
from ..engine.errors import InputError
from ..engine.requests import ResultOptions, SearchRequest, SimilarRequest
from ..results.store import TextSearch
from .indexing import visible_box

if TYPE_CHECKING:
    from .controller import Controller

Event = dict[str, Any]


class Searches:
    """The dock's search requests; ``controller`` holds the engine, the rasters' statuses and the results view."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.dock = controller.dock
        self.messages = controller.messages
        self.view = controller.view
        self.iface = controller.iface

    def searchable_index(self, layer: QgsRasterLayer) -> str | None:
        status = self.controller.rasters.status(layer.id())
        if status is not None and status.raster_changed:
            self.messages.show("The raster changed since it was indexed; index it again.")
            return None
        if status is None or not status.searchable:
            self.messages.show("Index this layer first (Index layer).")
            return None
        return status.path

    def search(self, query: str) -> None:
        """A text search typed in the dock (the request refuses empty text, with what to type instead)."""
        layer = self.dock.raster_layer()
        if layer is None:
            self.messages.show("Choose a raster layer to search.")
            return
        index = self.searchable_index(layer)
        if index is None:
            return
        self.text_search(layer, index, TextSearch(query))

    def text_search(self, layer: QgsRasterLayer, index: str, base: TextSearch) -> None:
        """Send a text search (with the relevance feedback in ``base``) with the dock's options."""
        options = self.dock.search_options()
        templates = self.controller.settings.templates_param(options["templates"])
        try:
            request = SearchRequest(
                index=index, query=base.query, negative=base.negative,
                templates=tuple(templates) if isinstance(templates, list) else templates,
                relevant_ids=base.relevant_ids, irrelevant_ids=base.irrelevant_ids,
                options=self.result_options(layer, options))
        except InputError as exc:
            self.messages.show(str(exc))
            return
        asked = TextSearch(request.query, request.negative, request.relevant_ids, request.irrelevant_ids)
        self._send(layer, request, None, asked)

    def _send(self, layer: QgsRasterLayer, request: SearchRequest | SimilarRequest, title: str | None,
              search: TextSearch | None = None) -> None:
        """Send a search; its results go to the raster's layer if that is still in the project then."""
        self.dock.set_searching(True)
        self.messages.clear()
        raster_id = layer.id()
        self.controller.engine.ask(request, lambda event: self._show_results(raster_id, event, title, search))

    def result_options(self, layer: QgsRasterLayer, options: dict[str, Any]) -> ResultOptions:
        """The dock's options every search shares: number of results, threshold, look-alike re-ranking, area,
        heatmap file."""
        area = visible_box(self.iface.mapCanvas(), layer) if options["visible_only"] and self.iface else None
        heatmap = None
        if options["heatmap"]:
            heatmap = QgsProcessingUtils.generateTempFilename("clip_search_heatmap.tif")
            os.makedirs(os.path.dirname(heatmap), exist_ok=True)
        return ResultOptions(top_k=options["top_k"], min_relative=options["min_relative"], area=area,
                             rerank=options["rerank"], heatmap=heatmap)

    def search_again(self) -> None:
        """Relevance feedback: the same text search, moved toward the results marked relevant and away from
        those marked not relevant (marks of earlier rounds are kept)."""
        layer, record = self.dock.raster_layer(), self.view.current_record()
        if layer is None or record is None:
            return
        if record.search is None:
            self.messages.show("Search again works on text searches; mark results of a text search.", Qgis.Info, 5)
            return
        chosen: dict[int, list[int]] = {1: [], -1: []}
        for rank, mark in record.marks.items():
            region = record.region(rank)
            if region is not None:
                chosen[mark].extend(int(m["tile_id"]) for m in region["members"])
        index = self.searchable_index(layer)
        if index is None:
            return
        earlier = record.search
        self.text_search(layer, index, TextSearch(
            earlier.query, earlier.negative,
            tuple(sorted(set(earlier.relevant_ids) | set(chosen[1]))),
            tuple(sorted(set(earlier.irrelevant_ids) | set(chosen[-1]))),
        ))

    def more_like_this(self, rank: int) -> None:
        layer, record = self.dock.raster_layer(), self.view.current_record()
        region = record.region(rank) if record is not None else None
        index = self.searchable_index(layer) if layer is not None and region is not None else None
        if layer is None or record is None or region is None or index is None:
            return
        tile_ids = tuple(int(m["tile_id"]) for m in region["members"])
        self._send_similar(layer, index, f"like result {rank} of {record.title}", tile_ids=tile_ids)

    def search_example(self, extent: QgsRectangle) -> None:
        """Search by example: places that look like the rectangle just drawn on the map (canvas CRS)."""
        self.view.set_drawing(False)  # one rectangle per click of Draw example
        layer = self.dock.raster_layer()
        if layer is None or self.iface is None:
            self.messages.show("Choose the raster layer to search first.")
            return
        if extent.isEmpty() or extent.width() <= 0 or extent.height() <= 0:
            self.messages.show("Drag a rectangle around an example of what to find.", Qgis.Info, 5)
            return
        index = self.searchable_index(layer)
        if index is None:
            return
        canvas_crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        box = QgsCoordinateTransform(canvas_crs, layer.crs(), QgsProject.instance()).transformBoundingBox(extent)
        if not box.intersects(layer.extent()):
            self.messages.show("The rectangle is outside the raster; draw it around an example on the raster.")
            return
        bbox = (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
        self._send_similar(layer, index, "like the drawn example", bbox=(bbox,))

    def _send_similar(self, layer: QgsRasterLayer, index: str, title: str, tile_ids: tuple[int, ...] = (),
                      bbox: tuple[tuple[float, float, float, float], ...] = ()) -> None:
        """Search for places like the examples (tile ids or a box), named ``title`` in the results."""
        try:
            request = SimilarRequest(index=index, tile_ids=tile_ids, bbox=bbox, label=title,
                                     options=self.result_options(layer, self.dock.search_options()))
        except InputError as exc:
            self.messages.show(str(exc))
            return
        self.dock.set_query("")  # the query box no longer describes what is searched
        self._send(layer, request, title)

    def _show_results(self, raster_id: str, event: Event, title: str | None, search: TextSearch | None) -> None:
        self.dock.set_searching(False)
        if event["event"] == "error":
            self.controller.report_error(event["error"])
            return
        raster = QgsProject.instance().mapLayer(raster_id)
        if not isinstance(raster, QgsRasterLayer):
            return  # the raster was removed while searching
        result = SearchAnswer.from_dict(event["result"])
        record_title = title or result.query
        self.view.add_results(raster, result, record_title, search, self.controller.settings.replace_results)
        if result.fewer:
            self.messages.show(fewer_text(result), Qgis.Info, 8)
