"""Index builds from the dock in real QGIS: cancelled mid-way, and over the selected polygons only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsFeature, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer

from clip_search_plugin.results import layers
from clip_search_plugin.ui.dock import AREA_SELECTED

from ..conftest import Loader, add_raster, indexed, search, wait_until


def test_cancel_mid_index_leaves_no_complete_index(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    engine_settings.tile_size = 20.0  # thousands of tiles: slow enough to cancel mid-way
    engine_settings.save()
    plugin = load()
    plugin.dock.layerCombo.setLayer(raster)
    plugin.dock.indexButton.click()
    wait_until(lambda: plugin.dock.progressBar.value() > 0, 60, "indexing to start")
    plugin.dock.cancelButton.click()
    wait_until(lambda: not plugin.controller.indexing.running(raster.id()), 60, "the task to stop")
    cache = Path(engine_settings.cache_folder)
    assert not list(cache.glob("*/manifest.json")), "a cancelled build left an index that looks complete"
    assert not [p for p in cache.glob("*") if not p.name.startswith(".")] if cache.exists() else True
    assert plugin.dock.indexButton.isEnabled() and not plugin.dock.cancelButton.isEnabled()
    # the dock says that the stopped build can be resumed, and so does the message bar
    wait_until(lambda: "Index layer resumes from there" in plugin.dock.statusLabel.text(), 30,
               "the status to offer resuming")
    assert any("Indexing was stopped" in m for m in iface.messageBar().get_messages(Qgis.Info))
    plugin.unload()


def test_index_only_the_selected_polygons(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    extent = raster.extent()
    polygons = QgsVectorLayer(f"Polygon?crs={raster.crs().authid()}", "area", "memory")
    quarter = QgsGeometry.fromRect(QgsRectangle(extent.xMinimum(), extent.yMinimum(),
                                                extent.center().x(), extent.center().y()))
    whole = QgsGeometry.fromRect(extent)
    for geometry in (quarter, whole):
        feature = QgsFeature()
        feature.setGeometry(geometry)
        polygons.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(polygons)
    engine_settings.replace_results = False  # keep one results layer per query
    engine_settings.save()
    plugin = load()
    dock = plugin.dock
    dock.layerCombo.setLayer(raster)
    dock.indexAreaCombo.setCurrentIndex(AREA_SELECTED)
    dock.polygonLayerCombo.setLayer(polygons)
    dock.indexButton.click()  # nothing selected yet: refused with what to do
    assert "Select one or more polygons" in iface.messageBar().get_messages(Qgis.Warning)[-1]
    assert not plugin.controller.indexing.running(raster.id())
    polygons.selectByIds([next(polygons.getFeatures()).id()])  # the quarter
    status = indexed(plugin, raster)
    results = search(plugin, "a roof")
    assert status["manifest"]["tiles"] > 0
    for feature in results.getFeatures():
        assert feature.geometry().intersects(quarter)
    again = search(plugin, "a garden")
    kept = layers.results_layers(QgsProject.instance(), raster.id())
    assert {lyr.id() for lyr in kept} == {results.id(), again.id()}
    # choosing the earlier layer in the Layers panel shows its results in the dock
    iface.setActiveLayer(results)
    plugin.controller._follow_active_layer(results)  # the stand-in iface does not emit currentLayerChanged
    assert plugin.dock.resultsTable.rowCount() == results.featureCount()
    assert plugin.controller.view.current_results_layer() is results


def test_index_layer_builds_on_the_cluster_given_in_settings(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("colorado_rgb_015m.tif")
    engine_settings.cluster = "local:1"  # a Dask cluster of one worker process, started by the engine for the build
    engine_settings.save()
    plugin = load()
    plugin.dock.layerCombo.setLayer(raster)
    status = indexed(plugin, raster, timeout=240)
    manifest = json.loads((Path(status["path"]) / "manifest.json").read_text())
    assert manifest["built_on"] == {"cluster": "local", "workers": 1}
    assert manifest["tile_count"] == status["manifest"]["tiles"] > 0
    results = search(plugin, "a road")  # searched as any index
    assert results.featureCount() > 0
    plugin.unload()
