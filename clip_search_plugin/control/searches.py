"""Searching from the dock: text searches, relevance feedback, More like this and Draw example, each sent to
the engine without blocking, its answer shown on the raster it was asked for if that raster is still there."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)

from ..engine.answers import fewer_text
from ..session.client import raster_changed
from ..ui.dock import AREA_VISIBLE

Event = dict[str, Any]


class Searches:
    """The dock's search requests; ``controller`` owns the engine, the index statuses and the results view."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.dock = controller.dock
        self.messages = controller.messages
        self.view = controller.view
        self.iface = controller.iface

    def searchable_index(self, layer: QgsRasterLayer) -> str | None:
        status = self.controller.status.get(layer.id())
        if status is None or status["status"] not in ("ready", "stale"):
            self.messages.show("Index this layer first (Index layer).")
            return None
        if raster_changed(status):
            self.messages.show("The raster changed since it was indexed; index it again.")
            return None
        return str(status["path"])

    def search(self, query: str) -> None:
        layer = self.dock.raster_layer()
        if layer is None:
            self.messages.show("Choose a raster layer to search.")
            return
        if not query.strip():
            self.messages.show("Type what to find, e.g. 'swimming pool'.")
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
            "templates": self.controller.settings.templates_param(options["templates"]),
        }
        self._send_search("search", layer, params, None, base)

    def _send_search(self, method: str, layer: QgsRasterLayer, params: Event, title: str | None,
                     base: Event | None = None) -> None:
        """Send a search; its results go to the raster's layer if that is still in the project then."""
        self.dock.set_searching(True)
        self.messages.clear()
        raster_id = layer.id()
        self.controller.call_engine(method, params, lambda event: self._show_results(raster_id, event, title, base))

    def result_options(self, layer: QgsRasterLayer, options: dict[str, Any]) -> dict[str, Any]:
        """The dock's options every search shares: number of results, threshold, look-alike re-ranking, area,
        heatmap file."""
        params: dict[str, Any] = {"top_k": options["top_k"], "min_relative": options["min_relative"],
                                  "rerank": options["rerank"]}
        if options["visible_only"] and self.iface is not None:
            params["area"] = self.controller.index_area(layer, AREA_VISIBLE)
        if options["heatmap"]:
            params["heatmap"] = QgsProcessingUtils.generateTempFilename("clip_search_heatmap.tif")
            os.makedirs(os.path.dirname(params["heatmap"]), exist_ok=True)
        return params

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
        self.text_search(layer, index, {
            "query": record.search["query"],
            "relevant_ids": sorted(set(record.search["relevant_ids"]) | set(chosen[1])),
            "irrelevant_ids": sorted(set(record.search["irrelevant_ids"]) | set(chosen[-1])),
        })

    def more_like_this(self, rank: int) -> None:
        layer, record = self.dock.raster_layer(), self.view.current_record()
        region = record.region(rank) if record is not None else None
        index = self.searchable_index(layer) if layer is not None and region is not None else None
        if layer is None or record is None or region is None or index is None:
            return
        self._send_similar(layer, index, {"tile_ids": [m["tile_id"] for m in region["members"]]},
                           f"like result {rank} of {record.title}")

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
        bbox = [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]
        self._send_similar(layer, index, {"bbox": bbox}, "like the drawn example")

    def _send_similar(self, layer: QgsRasterLayer, index: str, example: Event, title: str) -> None:
        """Search for places like ``example`` (tile ids or a box), named ``title`` in the results."""
        params = {"index": index, **example, "label": title, **self.result_options(layer, self.dock.search_options())}
        self.dock.set_query("")  # the query box no longer describes what is searched
        self._send_search("similar", layer, params, title)

    def _show_results(self, raster_id: str, event: Event, title: str | None, base: Event | None) -> None:
        self.dock.set_searching(False)
        if event["event"] == "error":
            self.controller.report_error(event["error"])
            return
        raster = QgsProject.instance().mapLayer(raster_id)
        if not isinstance(raster, QgsRasterLayer):
            return  # the raster was removed while searching
        result = event["result"]
        record_title = title or str(result["query"])
        self.view.add_results(raster, result, record_title, base, self.controller.settings.replace_results)
        if result.get("fewer"):
            self.messages.show(fewer_text(result), Qgis.Info, 8)
