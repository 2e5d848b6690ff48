"""Searches from the dock in real QGIS: thresholds and relevance feedback, Draw example, heatmaps, prompts,
look-alike re-ranking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsGeometry, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from clip_search_plugin.results import layers

from ..conftest import (
    Loader,
    add_raster,
    drag_rectangle,
    indexed,
    new_results,
    result_ids,
    search,
    show_whole,
    wait_until,
)


def test_relative_threshold_marks_and_search_again(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    plugin = load()
    dock = plugin.dock
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    dock.thresholdCheck.setChecked(True)
    dock.thresholdSpin.setValue(1.0)
    dock.topKSpin.setValue(30)
    first = search(plugin, "a roof but not a tree")
    features = sorted(first.getFeatures(), key=lambda f: f["rank"])
    assert len(features) >= 2 and all(f["relative"] >= 1.0 - 1e-6 for f in features)
    assert features[0]["query"] == "a roof but not a tree"
    assert dock.resultsTable.item(0, 2).text() == f"{features[0]['relative']:.1f}"

    assert not dock.refineButton.isEnabled()
    dock.resultsTable.selectRow(0)
    dock.relevantButton.click()
    dock.resultsTable.selectRow(1)
    dock.irrelevantButton.click()
    assert [dock.resultsTable.item(r, 5).text() for r in (0, 1)] == ["✓", "✗"]
    dock.irrelevantButton.click()  # clicking again unmarks
    assert dock.resultsTable.item(1, 5).text() == ""
    dock.irrelevantButton.click()
    assert dock.refineButton.isEnabled()

    regions = {r["rank"]: r for r in plugin.controller.view.store.get(first.id()).regions}
    rejected = {m["tile_id"] for m in regions[2]["members"]}
    before = {lyr.id() for lyr in layers.results_layers(QgsProject.instance())}
    dock.refineButton.click()
    again = wait_until(lambda: next((lyr for lyr in layers.results_layers(QgsProject.instance())
                                     if lyr.id() not in before), None), 60, "refined results")
    assert next(again.getFeatures())["query"].startswith("a roof but not a tree (feedback: ")
    members = {m["tile_id"] for r in plugin.controller.view.store.get(again.id()).regions for m in r["members"]}
    assert not members & rejected  # results marked not relevant are not offered again
    assert dock.resultsTable.rowCount() == again.featureCount() and not dock.refineButton.isEnabled()


def test_draw_an_example_heatmap_and_prompts(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    plugin = load()
    dock, canvas = plugin.dock, iface.mapCanvas()
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    show_whole(canvas, raster)

    # Draw example: the button arms the rectangle tool; one drag searches for places like the rectangle
    dock.drawExampleButton.click()
    assert canvas.mapTool() is plugin.controller.view.example_tool and dock.drawExampleButton.isChecked()
    e = raster.extent()
    example = QgsRectangle(e.xMinimum() + e.width() * 0.4, e.yMinimum() + e.height() * 0.4,
                           e.xMinimum() + e.width() * 0.6, e.yMinimum() + e.height() * 0.6)
    before = {lyr.id() for lyr in layers.results_layers(QgsProject.instance())}
    drag_rectangle(canvas, example)
    similar = wait_until(lambda: next((lyr for lyr in layers.results_layers(QgsProject.instance())
                                       if lyr.id() not in before), None), 60, "results like the drawn example")
    features = list(similar.getFeatures())
    assert features and all(f["query"] == "like the drawn example" for f in features)
    assert similar.name().startswith("CLIP: like the drawn example")
    # every tile sharing ground with the rectangle (as drawn, in the raster's CRS) is left out
    inner = QgsGeometry.fromRect(example).buffer(-e.width() * 1e-4, 1)
    assert not any(f.geometry().intersects(inner) for f in features)
    assert dock.queryEdit.text() == ""
    assert canvas.mapTool() is not plugin.controller.view.example_tool and not dock.drawExampleButton.isChecked()

    # the heatmap: a raster layer of the best score per place, under the results, replaced by the next one
    dock.heatmapCheck.setChecked(True)
    first = search(plugin, "a roof")
    heatmaps = [lyr for lyr in QgsProject.instance().mapLayers().values()
                if lyr.customProperty(layers.HEATMAP_PROPERTY) == raster.id()]
    assert len(heatmaps) == 1 and isinstance(heatmaps[0], QgsRasterLayer) and heatmaps[0].isValid()
    heatmap = heatmaps[0]
    assert heatmap.name() == "heatmap: a roof" and heatmap.crs() == raster.crs()
    assert heatmap.extent().intersects(raster.extent()) and heatmap.renderer().type() == "singlebandpseudocolor"
    order = [node.layerId() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(first.id()) < order.index(heatmap.id())  # results drawn on top of the heatmap
    value, ok = heatmap.dataProvider().sample(first.extent().center(), 2)
    assert ok and -1.0 <= value <= 1.0
    # the heatmap is output, not input: it never becomes the dock's raster, even as the active layer
    iface.setActiveLayer(heatmap)
    plugin.controller._follow_active_layer(heatmap)  # the stand-in iface does not emit currentLayerChanged
    assert dock.raster_layer() is raster and heatmap in dock.layerCombo.exceptedLayerList()
    assert dock.resultsTable.rowCount() == first.featureCount()
    search(plugin, "a road")
    names = [lyr.name() for lyr in QgsProject.instance().mapLayers().values()
             if lyr.customProperty(layers.HEATMAP_PROPERTY) == raster.id()]
    assert names == ["heatmap: a road"]

    # prompts: the templates ticked and unticked search with different query vectors
    dock.heatmapCheck.setChecked(False)
    dock.topKSpin.setValue(5)
    with_templates = sorted(round(f["score"], 6) for f in search(plugin, "a pool").getFeatures())
    dock.templatesCheck.setChecked(False)
    as_typed = sorted(round(f["score"], 6) for f in search(plugin, "a pool").getFeatures())
    assert with_templates != as_typed
    plugin.unload()


def engine_answers(controller: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every search the dock sends from now on to the (real) engine: method, request (as the engine receives it)
    and the engine's answer, recorded on the way past."""
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    ask = controller.engine.ask

    def recording(request: Any, on_answer: Callable[[Any], None]) -> None:
        def answered(event: dict[str, Any]) -> None:
            if request.method in ("search", "similar"):
                seen.append((request.method, request.to_params(), event))
            on_answer(event)

        ask(request, answered)

    controller.engine.ask = recording
    return seen


def test_look_alike_reranking_follows_its_checkbox(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    plugin = load()
    dock, canvas = plugin.dock, iface.mapCanvas()
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    answers = engine_answers(plugin.controller)
    dock.topKSpin.setValue(5)
    assert dock.rerankCheck.isChecked()  # on unless unticked
    ticked = sorted(round(f["score"], 6) for f in search(plugin, "a roof").getFeatures())
    dock.rerankCheck.setChecked(False)
    unticked = sorted(round(f["score"], 6) for f in search(plugin, "a roof").getFeatures())
    assert ticked != unticked  # a tile's own score, or the mean over it and its look-alikes

    dock.resultsTable.selectRow(0)  # relevance feedback: Search again
    dock.relevantButton.click()
    before = result_ids()
    dock.refineButton.click()
    new_results(before, "refined results")
    dock.resultsTable.selectRow(0)  # More like this
    before = result_ids()
    dock.moreLikeButton.click()
    new_results(before, "results like the first")
    dock.rerankCheck.setChecked(True)  # Draw example
    show_whole(canvas, raster)
    dock.drawExampleButton.click()
    e = raster.extent()
    before = result_ids()
    drag_rectangle(canvas, QgsRectangle(e.xMinimum() + e.width() * 0.4, e.yMinimum() + e.height() * 0.4,
                                        e.xMinimum() + e.width() * 0.6, e.yMinimum() + e.height() * 0.6))
    new_results(before, "results like the drawn example")

    sent = [(method, params["rerank"], answer["result"]["reranked"]) for method, params, answer in answers]
    assert sent == [("search", True, True), ("search", False, False), ("search", False, False),
                    ("similar", False, False), ("similar", True, True)]
    assert answers[2][1]["relevant_ids"]
    assert answers[3][1]["tile_ids"] and not answers[3][1]["bbox"]  # More like this: the result's tiles
    assert answers[4][1]["bbox"] and not answers[4][1]["tile_ids"]  # Draw example: the rectangle
    plugin.unload()


def test_an_empty_query_is_one_message_saying_what_to_type(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("colorado_rgb_015m.tif")
    plugin = load()
    dock, bar = plugin.dock, iface.messageBar()
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    sent: list[Any] = []
    ask = plugin.controller.engine.ask
    plugin.controller.engine.ask = lambda request, on_answer: (sent.append(request), ask(request, on_answer))
    dock.queryEdit.setText("   ")
    QTest.keyClick(dock.queryEdit, Qt.Key_Return)
    told = "CLIP Search:The query is empty; describe what to find, e.g. 'swimming pool'."
    assert [m for m in bar.shown() if m.startswith("CLIP Search:")] == [told]
    assert bar.get_messages(Qgis.Warning)[-1] == told
    assert dock.searchButton.isEnabled() and sent == []  # nothing was sent
    plugin.unload()
