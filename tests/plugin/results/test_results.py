"""Results in real QGIS: a results layer, zoom, the chosen result, picking on the map, export, More like this."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsGeometry, QgsPointXY, QgsProject, QgsVectorLayer
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QMouseEvent
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication

from clip_search_plugin.results import layers

from ..conftest import ARTIFACTS, Loader, add_raster, click_map, indexed, search, wait_until


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
    pid = plugin.controller.engine.session.pid
    os.kill(pid, signal.SIGKILL)
    # a second search replaces the raster's results layer (the default setting)
    second = search(plugin, "a road")
    assert plugin.controller.engine.session.pid != pid
    assert [lyr.id() for lyr in layers.results_layers(QgsProject.instance(), raster.id())] == [second.id()]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    iface.mainWindow().resize(1280, 800)
    QTest.qWait(300)
    assert iface.mainWindow().grab().save(str(ARTIFACTS / "qgis_dock_results.png"))
    plugin.unload()
