"""The plugin in real QGIS: load and unload, index in a task, search, results layer, zoom, export."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qgis.core import (
    Qgis,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QEvent, QPoint, Qt, QTimer
from qgis.PyQt.QtGui import QMouseEvent
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QAction, QApplication, QDialogButtonBox, QMenu

import clip_search_plugin
from clip_search_plugin.results import layers
from clip_search_plugin.ui.dock import AREA_SELECTED

from .conftest import (
    ARTIFACTS,
    add_raster,
    alive,
    click_map,
    engine_children,
    indexed,
    new_results,
    our_docks,
    result_ids,
    search,
    wait_until,
)


def drag_map(canvas: QgsMapCanvas, start: QgsPointXY, pixels: int) -> None:
    pixel = canvas.getCoordinateTransform().transform(start)
    begin = QPoint(round(pixel.x()), round(pixel.y()))
    viewport = canvas.viewport()
    QTest.mousePress(viewport, Qt.LeftButton, Qt.NoModifier, begin)
    for step in range(1, 6):  # QTest.mouseMove sends no button state: post real move events
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseMove, begin + QPoint(step * pixels // 5, 0),
                                                     Qt.NoButton, Qt.LeftButton, Qt.NoModifier))
    QTest.mouseRelease(viewport, Qt.LeftButton, Qt.NoModifier, begin + QPoint(pixels, 0))
    QTest.qWait(50)


Loader = Callable[[], Any]


@pytest.fixture
def load(iface: Any) -> Iterator[Loader]:
    """Load the plugin as QGIS does and open its dock; whatever a failed test left loaded is unloaded."""
    loaded: list[Any] = []

    def load_plugin() -> Any:
        plugin = clip_search_plugin.classFactory(iface)
        plugin.initGui()
        plugin.action.trigger()  # open the dock, as a user would from the toolbar
        loaded.append(plugin)
        return plugin

    yield load_plugin
    for plugin in loaded:
        if plugin.action is not None:
            plugin.unload()
    # no orphans: every engine process (the dock's and the index tasks') ends with the plugin
    wait_until(lambda: not engine_children(), 15, "the engine processes to end")






def test_plugin_loads_opens_its_dock_and_unloads_cleanly(iface: Any, engine_settings: Any, load: Loader) -> None:
    window = iface.mainWindow()
    receivers_before = iface.receivers(iface.currentLayerChanged)
    add_raster("colorado_rgb_015m.tif")
    plugin = load()
    assert plugin.action.objectName() == "clipSearchAction"
    assert [d.isVisible() for d in our_docks(window)] == [True]
    wait_until(lambda: plugin.controller.engine is not None and plugin.controller.engine.running, 60, "the engine")
    pid = plugin.controller.engine.pid
    wait_until(lambda: "Not indexed" in plugin.dock.statusLabel.text(), 30, "the index status")

    plugin.unload()
    QTest.qWait(50)
    assert our_docks(window) == [] or all(not d.isVisible() for d in our_docks(window))
    assert plugin.action is None and plugin.dock is None and plugin.controller is None
    assert iface.receivers(iface.currentLayerChanged) == receivers_before
    assert not [a for a in iface._raster_menu.findChildren(QAction) if a.objectName() == "clipSearchAction"]
    assert not [m for m in iface._raster_menu.findChildren(QMenu) if m.title() == "&CLIP Search" and m.actions()]
    wait_until(lambda: not alive(pid), 10, "the engine process to end")

    again = load()  # reloadable (as with Plugin Reloader)
    assert len([d for d in our_docks(window) if d.isVisible()]) == 1
    again.unload()


def test_index_search_zoom_select_and_export(iface: Any, engine_settings: Any, load: Loader, tmp_path: Path) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    plugin = load()
    dock = plugin.dock
    dock.layerCombo.setLayer(raster)
    progress: list[int] = []
    dock.progressBar.valueChanged.connect(progress.append)
    status = indexed(plugin, raster)
    assert status["manifest"]["tiles"] > 0 and "Index ready" in dock.statusLabel.text()
    assert progress and max(progress) >= 50, progress
    assert any("Indexed" in m for m in iface.messageBar().get_messages(Qgis.Success))

    results = search(plugin, "solar panels")
    assert [f.name() for f in results.fields()] == ["rank", "score", "relative", "query", "tile_count", "area",
                                                    "area_units"]
    assert results.crs() == raster.crs()
    extent = QgsGeometry.fromRect(raster.extent())
    features = list(results.getFeatures())
    assert features and dock.resultsTable.rowCount() == len(features)
    for feature in features:
        assert extent.buffer(1e-6, 1).contains(feature.geometry()), feature.geometry().asWkt()
        assert feature["query"] == "solar panels" and feature["tile_count"] >= 1
    assert sorted(f["rank"] for f in features) == list(range(1, len(features) + 1))
    canvas = iface.mapCanvas()
    assert canvas.extent().contains(results.extent())  # zoomed to all results

    # clicking a row zooms to that region (with the land around it) and outlines it
    best = next(f for f in features if f["rank"] == 1)
    dock.resultsTable.selectRow(0)
    view = plugin.controller.view
    assert view.highlight.fid == best.id() and results.selectedFeatureCount() == 0
    region = best.geometry().boundingBox()
    assert canvas.extent().contains(region)
    assert canvas.extent().width() <= max(raster.extent().width(), region.width() * 3) * 1.01

    # after a search the pick tool is active: clicking a result on the map selects its row and zooms to it
    assert canvas.mapTool() is view.pick_tool and dock.pickButton.isChecked()
    view.zoom_all()
    last = max(features, key=lambda f: f["rank"])
    own = last.geometry()  # a point of its own: results may share ground with better-ranked ones
    for other in features:
        own = own.difference(other.geometry()) if other["rank"] != last["rank"] else own
    click_map(canvas, own.poleOfInaccessibility(1e-3)[0].asPoint())
    assert dock.selected_rank() == last["rank"] and view.highlight.fid == last.id()
    assert canvas.extent().contains(last.geometry().boundingBox())
    # a drag pans and picks nothing
    centre = canvas.center()
    drag_map(canvas, canvas.extent().center(), 120)
    assert canvas.center() != centre and dock.selected_rank() == last["rank"]
    # a result selected with QGIS's own tools (select tool, attribute table) also selects its row
    results.selectByIds([best.id()])
    assert dock.selected_rank() == 1
    # turning picking off gives the canvas back
    dock.pickButton.click()
    assert canvas.mapTool() is not view.pick_tool

    # export, then reopen with QGIS's own reader
    target = tmp_path / "results.gpkg"
    assert view.export_results(str(target)) == ""
    reopened = QgsVectorLayer(f"{target}|layername=clip_search_results", "reopened", "ogr")
    assert reopened.isValid() and reopened.featureCount() == len(features)
    assert sorted((f["rank"], round(f["score"], 6)) for f in reopened.getFeatures()) == sorted(
        (f["rank"], round(f["score"], 6)) for f in features)
    assert reopened.crs() == raster.crs()

    # More like this: regions that look like the selected result, the example itself left out
    dock.resultsTable.selectRow(0)
    before = {lyr.id() for lyr in layers.results_layers(QgsProject.instance())}
    dock.moreLikeButton.click()
    similar = wait_until(lambda: next((lyr for lyr in layers.results_layers(QgsProject.instance())
                                       if lyr.id() not in before), None), 60, "similar results")
    similar_features = list(similar.getFeatures())
    assert similar_features and all(f["query"] == "like result 1 of solar panels" for f in similar_features)
    assert not any(f.geometry().intersects(best.geometry().buffer(-1e-6, 1)) for f in similar_features)

    # the engine process dies: the next search starts a new one
    pid = plugin.controller.engine.pid
    os.kill(pid, signal.SIGKILL)
    # a second search replaces the raster's results layer (the default setting)
    second = search(plugin, "a road")
    assert plugin.controller.engine.pid != pid
    assert [lyr.id() for lyr in layers.results_layers(QgsProject.instance(), raster.id())] == [second.id()]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    iface.mainWindow().resize(1280, 800)
    QTest.qWait(300)
    assert iface.mainWindow().grab().save(str(ARTIFACTS / "qgis_dock_results.png"))
    plugin.unload()


def test_the_engine_dying_during_a_search_never_freezes_the_dock(iface: Any, engine_settings: Any,
                                                                  load: Loader) -> None:
    raster = add_raster("colorado_rgb_015m.tif")
    plugin = load()
    dock, controller = plugin.dock, plugin.controller
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    search(plugin, "a road")

    def search_in_flight(query: str) -> Any:
        """Type a search and press Enter with the engine held still, so that it surely dies mid-request."""
        engine = wait_until(lambda: controller.engine if controller.engine and controller.engine.running else None,
                            60, "the engine")
        os.kill(engine.pid, signal.SIGSTOP)
        dock.queryEdit.setText(query)
        QTest.keyClick(dock.queryEdit, Qt.Key_Return)
        wait_until(lambda: engine.waiting, 30, "the search to reach the engine")
        assert not dock.searchButton.isEnabled()  # "Searching…"
        return engine

    # dies once: a new engine takes the search over, the user is told, and the results come
    before = {lyr.id() for lyr in layers.results_layers(QgsProject.instance())}
    first = search_in_flight("a field")
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: next((lyr for lyr in layers.results_layers(QgsProject.instance())
                             if lyr.id() not in before), None), 120, "the search to finish on a new engine")
    assert controller.engine.pid != first.pid and dock.searchButton.isEnabled()
    assert any("restarted" in m for m in iface.messageBar().get_messages(Qgis.Info))

    # dies again, and so does the engine started to take over: an error, and the dock is usable again
    errors = len(iface.messageBar().get_messages(Qgis.Critical))
    second = search_in_flight("a river")
    os.kill(second.pid, signal.SIGKILL)
    third = wait_until(lambda: controller.engine if controller.engine not in (None, second) and controller.engine.pid
                       else None, 30, "a new engine to start")
    os.kill(third.pid, signal.SIGKILL)  # while it starts
    wait_until(lambda: len(iface.messageBar().get_messages(Qgis.Critical)) > errors, 60, "an error message")
    assert "did not start" in iface.messageBar().get_messages(Qgis.Critical)[-1]
    assert dock.searchButton.isEnabled() and dock.searchButton.text() == "Search"

    # and the next search simply works
    assert search(plugin, "a river").featureCount() > 0
    plugin.unload()


def test_cancel_mid_index_leaves_no_complete_index(iface: Any, engine_settings: Any, load: Loader) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    engine_settings.tile_size = 20.0  # thousands of tiles: slow enough to cancel mid-way
    engine_settings.save()
    plugin = load()
    plugin.dock.layerCombo.setLayer(raster)
    plugin.dock.indexButton.click()
    wait_until(lambda: plugin.dock.progressBar.value() > 0, 60, "indexing to start")
    plugin.dock.cancelButton.click()
    wait_until(lambda: raster.id() not in plugin.controller.tasks, 60, "the task to stop")
    cache = Path(engine_settings.cache_folder)
    assert not list(cache.glob("*/manifest.json")), "a cancelled build left an index that looks complete"
    assert not [p for p in cache.glob("*") if not p.name.startswith(".")] if cache.exists() else True
    assert plugin.dock.indexButton.isEnabled() and not plugin.dock.cancelButton.isEnabled()
    # the dock says that the stopped build can be resumed, and so does the message bar
    wait_until(lambda: "Index layer resumes from there" in plugin.dock.statusLabel.text(), 30,
               "the status to offer resuming")
    assert any("Indexing was stopped" in m for m in iface.messageBar().get_messages(Qgis.Info))
    plugin.unload()


def test_missing_engine_offers_set_up_which_makes_a_working_one(iface: Any, engine_settings: Any, load: Loader,
                                                                tmp_path: Path) -> None:
    from clip_search_plugin.setup import plan as setup

    from .setup.test_engine_setup import base_python, package_folder

    wheels, versions = package_folder(tmp_path)
    setup.RECENT_ERRORS.clear()
    engine_settings.engine_python = "/nonexistent/engine/python"
    engine_settings.save()
    plugin = load()
    dock = plugin.dock
    assert dock.setupEngineButton.isVisible()  # offered at once, before any raster is chosen
    add_raster("colorado_rgb_015m.tif")
    wait_until(lambda: "does not exist" in dock.statusLabel.text(), 30, "the engine error")
    assert "click Set up engine" in dock.statusLabel.text() and dock.setupEngineButton.isVisible()
    dock.indexButton.click()
    wait_until(lambda: iface.messageBar().get_messages(Qgis.Critical), 30, "an error message")
    assert "click Set up engine" in iface.messageBar().get_messages(Qgis.Critical)[-1]

    # the dock's button opens the set-up, which looks at the computer and the engine in use
    dock.setupEngineButton.click()
    dialog = plugin.setup_dialog
    assert dialog is not None and dialog.isVisible()
    wait_until(lambda: dialog.setupButton.isEnabled(), 60, "the dialog to look at the computer")
    assert "No NVIDIA GPU" in dialog.computerLabel.text() and "CPU build" in dialog.planLabel.text()
    assert "does not exist" in dialog.engineLabel.text() or "did not run" in dialog.engineLabel.text()
    dialog.pythonCombo.setEditText(base_python())
    dialog.folderWidget.setFilePath(str(tmp_path / "engines"))
    dialog.wheelsWidget.setFilePath(str(wheels))
    dialog.requirements = versions
    dialog.setupButton.click()
    assert dialog.cancelButton.isEnabled() and not dialog.setupButton.isEnabled()
    wait_until(lambda: dialog.task is None, 300, "the set-up task to finish")
    log = dialog.logView.toPlainText()
    assert "Step 1 of 4: Creating the virtual environment" in log and "done: installed torch 2.15.0" in log, log[-2000:]
    assert "engine ready on cpu" in log and dialog.progressBar.value() == 100
    [made] = setup.made_environments(tmp_path / "engines")
    # the new engine is the one in use at once: saved in the settings, and the dock works
    assert plugin.controller.settings.engine_python == str(setup.env_python(made))
    wait_until(lambda: "Not indexed" in dock.statusLabel.text(), 60, "the dock to use the new engine")
    assert not dock.setupEngineButton.isVisible()
    text = dialog.copy_diagnostics()
    assert QApplication.clipboard().text() == text
    assert "QGIS: 3." in text and f"Engine Python: {setup.env_python(made)}" in text and "Self-test encode: ok" in text
    assert "Last errors:\n  The engine Python /nonexistent/engine/python does not exist" in text  # what the dock said
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(ARTIFACTS / "setup_dialog.png"))
    dialog.reject()
    plugin.unload()


def test_web_layers_get_a_clear_message(iface: Any, engine_settings: Any, load: Loader) -> None:
    xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19&zmin=0", "tiles", "wms")
    QgsProject.instance().addMapLayer(xyz)
    plugin = load()
    plugin.dock.layerCombo.setLayer(xyz)
    assert "wms layer" in plugin.dock.statusLabel.text() and "raster files" in plugin.dock.statusLabel.text()
    plugin.unload()


def test_settings_dialog_says_what_to_fix_and_stores_settings(iface: Any, engine_settings: Any, load: Loader) -> None:
    from clip_search_plugin.session.settings import PluginSettings

    plugin = load()
    seen: dict[str, Any] = {}

    def interact() -> None:
        dialog = QApplication.activeModalWidget()
        try:
            dialog.scales.setText("1 two")
            dialog.engine_python.setFilePath("/nonexistent/python")
            dialog.model.setCurrentText("RemoteCLIP-ViT-B-32")
            dialog.templates.setPlainText("an aerial photo of {}\na photo without a place for the query")
            seen["details"] = dialog.model_details.text()
            dialog.model.setCurrentText("GeoRSCLIP-ViT-H-14")
            seen["other details"] = dialog.model_details.text()

            dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok).click()
            seen["refused"] = dialog.isVisible()
            seen["problem"] = dialog.problem.text()
            dialog.scales.setText("1 2")
            dialog.engine_python.setFilePath(engine_settings.engine_python)
            dialog.model.setCurrentText("tiny-random")
            dialog.templates.setPlainText("  an aerial photo of {}\n{} from above  ")
            dialog.tile_size.setValue(128)
            dialog.replace_results.setChecked(False)
            dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok).click()
        finally:
            if dialog.isVisible():
                dialog.reject()

    # a picture for the README: the dialog with the default settings, as a new user sees it
    from clip_search_plugin.ui.settings_dialog import SettingsDialog

    picture = SettingsDialog(PluginSettings(engine_python="/home/analyst/clip_search_plugin/.venv-engine/bin/python"))
    picture.resize(640, picture.sizeHint().height())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert picture.grab().save(str(ARTIFACTS / "settings_dialog.png"))
    picture.deleteLater()

    QTimer.singleShot(300, interact)
    plugin.dock.settingsButton.click()  # modal: returns when the dialog closes
    assert seen["refused"], "invalid settings were accepted"
    assert "Scales must be positive numbers" in seen["problem"] and "/nonexistent/python does not exist" in seen[
        "problem"]
    assert "Prompt template line 2" in seen["problem"]
    # each preset says where its weights come from, under what licence, and its published figures
    assert "RemoteCLIP-ViT-B-32" in seen["details"] and "chendelong/RemoteCLIP" in seen["details"]
    assert "Hugging Face Zilun/GeoRSCLIP" in seen["other details"] and "Licence: weights: 'cc'" in seen[
        "other details"] and "RSITMD 40.38" in seen["other details"]
    stored = PluginSettings.load()
    assert (stored.scales, stored.tile_size, stored.replace_results) == ("1 2", 128.0, False)
    assert stored.templates == "an aerial photo of {}\n{} from above"
    assert stored.templates_param() == ["an aerial photo of {}", "{} from above"]
    assert stored.templates_param(False) == "raw"
    assert plugin.controller.settings == stored
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
    assert raster.id() not in plugin.controller.tasks
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


def drag_rectangle(canvas: QgsMapCanvas, box: QgsRectangle) -> None:
    """Drag from one corner of ``box`` (map units) to the other with the left button held, as a user does."""
    transform = canvas.getCoordinateTransform()
    a = transform.transform(QgsPointXY(box.xMinimum(), box.yMaximum()))
    b = transform.transform(QgsPointXY(box.xMaximum(), box.yMinimum()))
    begin, end = QPoint(round(a.x()), round(a.y())), QPoint(round(b.x()), round(b.y()))
    viewport = canvas.viewport()
    QTest.mousePress(viewport, Qt.LeftButton, Qt.NoModifier, begin)
    for step in range(1, 6):
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseMove, begin + (end - begin) * step / 5,
                                                     Qt.NoButton, Qt.LeftButton, Qt.NoModifier))
    QTest.mouseRelease(viewport, Qt.LeftButton, Qt.NoModifier, end)
    QTest.qWait(50)


def show_whole(canvas: Any, raster: Any) -> None:
    """The map canvas in the raster's CRS, showing all of it."""
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(raster.extent())
    canvas.refresh()
    QTest.qWait(100)


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
    """Every search the dock sends from now on to the (real) engine: method, request and the engine's answer,
    recorded on the way past."""
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    send = controller.call_engine

    def recording(method: str, params: dict[str, Any], on_event: Callable[[Any], None], retry: bool = True) -> None:
        def answered(event: dict[str, Any]) -> None:
            if method in ("search", "similar"):
                seen.append((method, params, event))
            on_event(event)

        send(method, params, answered, retry)

    controller.call_engine = recording
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
    assert answers[2][1]["relevant_ids"] and "tile_ids" in answers[3][1] and "bbox" in answers[4][1]
    plugin.unload()
