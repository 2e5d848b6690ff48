"""What an analyst meets in a first hour with the plugin: each point of that first use, in real QGIS."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QApplication

import clip_search_plugin
from clip_search_plugin.results import layers
from clip_search_plugin.session.settings import PluginSettings

from .conftest import (
    ARTIFACTS,
    add_raster,
    click_map,
    engine_children,
    engine_client,
    indexed,
    new_results,
    result_ids,
    search,
    shared_raster,
    wait_until,
)


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Python errors raised anywhere in a Qt callback (QGIS shows them in its Python error dialog)."""
    seen: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(f"{kind.__name__}: {value}"))
    yield seen


@pytest.fixture
def plugin(iface: Any, engine_settings: Any) -> Iterator[Any]:
    loaded = clip_search_plugin.classFactory(iface)
    loaded.initGui()
    loaded.action.trigger()
    yield loaded
    if loaded.action is not None:
        loaded.unload()
    wait_until(lambda: not engine_children(), 15, "the engine processes to end")
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # the dock and tools really go


def settle(seconds: float) -> None:
    """Let Qt deliver whatever is queued for ``seconds``."""
    deadline = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() > deadline, seconds + 5, "time to pass")


def answered(plugin: Any) -> None:
    """Wait until the dock's engine has started and answered everything it was asked, and those answers
    have reached the main thread."""
    controller = plugin.controller
    wait_until(lambda: engine_client(controller) is not None and engine_client(controller)._ready.is_set(), 120,
               "the engine")
    settle(0.5)  # requests are sent from short-lived threads once the engine is ready
    wait_until(lambda: not engine_client(controller).waiting, 60, "the engine's answers")
    settle(0.5)


def test_closing_the_project_with_requests_pending_raises_nothing(iface: Any, plugin: Any, errors: list[str]) -> None:
    rasters = [add_raster(name) for name in ("colorado_rgb_015m.tif", "drone_rgba_alpha.tif",
                                             "int16_2band_epsg4326.tif")]
    for raster in rasters:  # each asks the engine for its index status
        iface.setActiveLayer(raster)
    QgsProject.instance().clear()  # Project > Close > Discard, with the answers still to come
    answered(plugin)
    assert errors == []


def test_a_search_and_a_build_in_flight_when_the_project_closes(iface: Any, plugin: Any, engine_settings: Any,
                                                                  errors: list[str]) -> None:
    first = add_raster("colorado_rgb_015m.tif")
    plugin.dock.layerCombo.setLayer(first)
    indexed(plugin, first)
    second = add_raster("drone_rgba_alpha.tif")
    plugin.controller.apply_settings(replace(engine_settings, tile_size=24.0))  # a build that takes a while
    plugin.dock.layerCombo.setLayer(second)
    plugin.dock.indexButton.click()
    wait_until(lambda: plugin.dock.progressBar.value() > 0, 60, "the build to start")
    plugin.controller.apply_settings(engine_settings)
    plugin.dock.layerCombo.setLayer(first)
    wait_until(lambda: plugin.controller.rasters.status(first.id()), 30, "the first raster's status")
    plugin.dock.queryEdit.setText("a roof")
    plugin.dock.searchButton.click()
    QgsProject.instance().clear()
    wait_until(lambda: not plugin.controller.indexing.running(), 60, "the build to stop")
    answered(plugin)
    assert errors == []
    assert plugin.dock.searchButton.isEnabled() and plugin.dock.statusLabel.text() == "Choose a raster layer."
    assert layers.results_layers(QgsProject.instance()) == []
    stopped = iface.messageBar().shown()[0]
    assert "Indexing drone_rgba_alpha stopped: its layer was removed" in stopped, stopped


def raster_without_georeference(folder: Path) -> Path:
    """A copy of a shared orthophoto's pixels with no georeference at all (no transform, no CRS)."""
    from osgeo import gdal

    source = gdal.Open(str(shared_raster("colorado_rgb_015m.tif")))
    path = folder / "no_georeference.tif"
    copy = gdal.GetDriverByName("GTiff").Create(str(path), source.RasterXSize, source.RasterYSize, 3, gdal.GDT_Byte)
    for band in (1, 2, 3):
        copy.GetRasterBand(band).WriteArray(source.GetRasterBand(band).ReadAsArray())
    copy = None  # written
    return path


def test_results_of_a_raster_without_georeference_lie_on_it_in_a_projected_project(
        iface: Any, plugin: Any, tmp_path: Path) -> None:
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem("EPSG:32633"))
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsProject.instance().crs())
    raster = QgsRasterLayer(str(raster_without_georeference(tmp_path)), "no georeference")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    plugin.dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    results = search(plugin, "a road")
    assert results.crs() == raster.crs()  # whatever QGIS gave the raster, unknown included
    drawn = QgsGeometry.fromRect(raster.extent()).buffer(1e-6, 1)
    features = list(results.getFeatures())
    assert features and all(drawn.contains(f.geometry()) for f in features)
    plugin.dock.zoomAllButton.click()
    view = canvas.extent()
    assert view.intersects(raster.extent()) and view.width() < 3 * raster.extent().width(), view.toString()
    assert all(f["area_units"] == "px2" for f in features)


def test_missing_model_weights_stay_in_the_dock_with_ways_out(iface: Any, plugin: Any, engine_settings: Any,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run with no way to download the default model's weights (offline: the model hub's own switch)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hub"))  # nothing cached either
    monkeypatch.setenv("CLIP_SEARCH_WEIGHTS", str(tmp_path / "weights"))
    dock, controller = plugin.dock, plugin.controller
    controller.apply_settings(replace(engine_settings, model="RemoteCLIP-ViT-B-32", pretrained=""))
    raster = add_raster("colorado_rgb_015m.tif")
    other = add_raster("int16_2band_epsg4326.tif")
    dock.layerCombo.setLayer(raster)
    dock.indexButton.click()
    wait_until(lambda: dock.weightsFrame.isVisibleTo(dock), 120, "the dock to tell of the missing weights")
    told = dock.weightsLabel.text()
    assert "RemoteCLIP-ViT-B-32" in told and "RemoteCLIP-ViT-B-32.pt" in told and "--" not in told, told
    assert "weights are missing" in dock.statusLabel.text()
    label = dock.weightsLabel
    assert label.height() >= label.heightForWidth(label.width()), "the explanation is cut off"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert dock.grab().save(str(ARTIFACTS / "dock_missing_weights.png"))
    # it stays: switching rasters, and time passing, do not make the dock forget it
    dock.layerCombo.setLayer(other)
    dock.layerCombo.setLayer(raster)
    settle(2)
    assert dock.weightsFrame.isVisibleTo(dock) and "weights are missing" in dock.statusLabel.text()
    assert "Not indexed" not in dock.statusLabel.text()

    dock.copyAddressButton.click()
    assert QApplication.clipboard().text().startswith("https://huggingface.co/chendelong/RemoteCLIP/resolve/")

    # a weights file chosen in the dock is used at once: the build starts again with it
    wrong = tmp_path / "not-remoteclip.pt"
    save = f"import torch; torch.save({{'x': torch.zeros(3)}}, {str(wrong)!r})"
    subprocess.run([engine_settings.engine_python, "-c", save], check=True, timeout=120)
    controller.weights.choose_file(str(wrong))
    assert PluginSettings.load().pretrained == str(wrong) and not dock.weightsFrame.isVisibleTo(dock)
    assert controller.indexing.running(raster.id())
    wait_until(lambda: not controller.indexing.running(raster.id()), 120, "the build with the chosen file to end")
    assert str(wrong) in iface.messageBar().shown()[0]  # that file was tried (and is not RemoteCLIP's)

    # a trial with random weights: indexed and searched, every result labelled as meaningless
    dock.randomWeightsButton.click()
    assert PluginSettings.load().pretrained == "none"
    wait_until(lambda: not controller.indexing.running(raster.id())
               and getattr(controller.rasters.status(raster.id()), "ready", False), 300, "the trial build")
    assert "RANDOM WEIGHTS" in dock.statusLabel.text()
    assert search(plugin, "a road").name().endswith("[random weights]")


def test_a_stopped_build_tells_one_story_and_the_resumed_one_counts_the_whole_index(
        iface: Any, plugin: Any, engine_settings: Any) -> None:
    dock, controller, bar = plugin.dock, plugin.controller, iface.messageBar()
    raster = add_raster("drone_rgba_alpha.tif")
    controller.apply_settings(replace(engine_settings, tile_size=40.0))  # over a thousand tiles: time to stop it
    dock.layerCombo.setLayer(raster)
    dock.indexButton.click()
    wait_until(lambda: dock.progressBar.value() >= 5, 120, "the build to be under way")
    dock.cancelButton.click()
    wait_until(lambda: not controller.indexing.running(raster.id()), 60, "the build to stop")
    told = wait_until(lambda: re.search(r"Indexing was stopped; ([\d,]+) tiles are saved and Index layer resumes "
                                        r"from there\.", dock.statusLabel.text()), 30, "the dock's account")
    saved = int(told.group(1).replace(",", ""))
    assert saved > 0
    # the message bar says the same, and nothing else of ours (no "Cancelled; no index was stored")
    assert bar.shown() == [f"CLIP Search:drone_rgba_alpha: {told.group(0)}"], bar.shown()

    # the resumed build: totals for the whole index, and how much of it was resumed
    status = indexed(plugin, raster, 600)
    total = status["manifest"]["tiles"]
    done = next(m for m in reversed(bar.get_messages(Qgis.Success)) if "Indexed" in m)
    assert re.search(rf"Indexed drone_rgba_alpha: {total:,} tiles \({saved:,} saved by the build that was stopped, "
                     rf"{total - saved:,} embedded now in [\d,]+ s with (torch|onnx|onnx-int8)\)\.", done), done
    # only that is on the bar: the stopped build's message is not waiting beneath it to come back
    assert bar.shown() == [done], bar.shown()
    controller.apply_settings(engine_settings)
    search(plugin, "a roof")  # a search shows its results; it pushes no message
    bar.popWidget(bar.currentItem())  # the user closes the message (or it times out)
    assert bar.shown() == [], bar.shown()


def test_settings_show_each_model_description_whole(iface: Any) -> None:
    from clip_search_plugin.engine.embedding.models import PRESETS
    from clip_search_plugin.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(PluginSettings(engine_python="/home/analyst/engine/bin/python"))
    dialog.show()
    try:
        for name in PRESETS:
            dialog.model.setCurrentText(name)
            settle(0.05)
            label = dialog.model_details
            assert label.height() >= label.heightForWidth(label.width()), f"{name}: the description is cut off"
    finally:
        dialog.reject()


def test_a_chosen_result_is_outlined_over_the_imagery_with_land_around_it(iface: Any, plugin: Any) -> None:
    dock, view, canvas = plugin.dock, plugin.controller.view, iface.mapCanvas()
    raster = add_raster("drone_rgba_alpha.tif")
    canvas.setDestinationCrs(raster.crs())
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    results = search(plugin, "a roof")
    features = {f["rank"]: f for f in results.getFeatures()}
    for row, pick in ((0, False), (len(features) - 1, True)):
        rank = int(dock.resultsTable.item(row, 0).text())
        chosen = features[rank]
        if pick:  # a click on the map, with the pick tool the dock turns on after a search
            view.zoom_all()
            own = chosen.geometry()  # a point of its own (results may share ground with better-ranked ones)
            for other in features.values():
                if other["rank"] != rank:
                    own = own.difference(other.geometry())
            click_map(canvas, own.poleOfInaccessibility(1e-3)[0].asPoint())
            assert dock.selected_rank() == rank
        else:  # a click on the row
            dock.resultsTable.selectRow(row)
        # no QGIS selection (drawn filled with the selection colour over the imagery), an outline instead
        assert results.selectedFeatureCount() == 0
        outline = view.highlight.geometry()
        assert outline is not None
        assert outline.symDifference(chosen.geometry()).area() < 1e-6 * chosen.geometry().area()
        assert all(band.fillColor().alpha() == 0 for band in view.highlight.bands)
        region, shown = chosen.geometry().boundingBox(), canvas.extent()
        assert shown.contains(region)
        assert min(shown.width() / region.width(), shown.height() / region.height()) >= 2.5, "no land around it"
    # a new search takes the outline away
    search(plugin, "a road")
    assert view.highlight.geometry() is None


def test_what_the_dock_shows_reads_well(iface: Any, plugin: Any, engine_settings: Any, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    dock, controller, canvas = plugin.dock, plugin.controller, iface.mapCanvas()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    QgsSettings().remove("clip_search/export_folder")  # no export yet in this profile
    raster = add_raster("drone_rgba_alpha.tif")
    canvas.setDestinationCrs(raster.crs())
    controller.settings.backend = "onnx"  # as chosen in Settings: the fp32 export, verified before it is used
    dock.layerCombo.setLayer(raster)
    indexed(plugin, raster)
    assert any(re.search(r"Indexed drone\S*: \d+ tiles in \d+ s with onnx\.$", m) for m in iface.messageBar().shown())
    dock.layerCombo.setLayer(None)
    dock.layerCombo.setLayer(raster)  # the status as the engine tells it: when the index was built, for people
    status = wait_until(lambda: "Index ready" in dock.statusLabel.text() and dock.statusLabel.text(), 30, "status")
    assert re.search(r"built today at \d\d:\d\d with onnx\.", status) and "+00:00" not in status, status
    dock.heatmapCheck.setChecked(True)
    results = search(plugin, "a roof")

    # scores that differ are shown differing (random weights score alike to the third decimal)
    scores = [f["score"] for f in sorted(results.getFeatures(), key=lambda f: f["rank"])]
    shown = [dock.resultsTable.item(row, 1).text() for row in range(dock.resultsTable.rowCount())]
    assert len(set(shown)) == len(set(scores)), (shown, scores)
    # every column is in view, the Area column whole
    table = dock.resultsTable
    area = table.visualItemRect(table.item(0, 4))
    assert area.right() <= table.viewport().width(), "the Area column is cut off"
    assert table.horizontalHeader().sectionSize(4) >= table.fontMetrics().horizontalAdvance(table.item(0, 4).text())
    # the heatmap ends where the raster ends
    heatmap = next(lyr for lyr in QgsProject.instance().mapLayers().values() if layers.is_heatmap(lyr))
    assert abs(heatmap.extent().xMaximum() - raster.extent().xMaximum()) < 1e-6 * raster.extent().width()
    assert abs(heatmap.extent().yMinimum() - raster.extent().yMinimum()) < 1e-6 * raster.extent().height()
    dock.heatmapCheck.setChecked(False)

    # More like this: the query box no longer shows the text search; the layer says what was searched
    dock.resultsTable.selectRow(0)
    before = result_ids()
    dock.moreLikeButton.click()
    assert dock.queryEdit.text() == ""
    similar = new_results(before)
    assert similar.name() == "CLIP: like result 1 of a roof [random weights]"
    assert {f["query"] for f in similar.getFeatures()} == {"like result 1 of a roof"}
    # the export is offered under that name, in the user's folder, later in the folder of the last export
    offered = controller.view.export_suggestion()
    assert offered == str(tmp_path / "home" / "CLIP_like_result_1_of_a_roof_random_weights.gpkg"), offered
    (tmp_path / "exports").mkdir()
    assert controller.view.export_results(str(tmp_path / "exports" / "mine.gpkg")) == ""
    assert controller.view.export_suggestion().startswith(str(tmp_path / "exports") + "/")

    # Search again after marks: the new list starts with no row chosen
    dock.queryEdit.setText("a roof")
    results = search(plugin, "a roof")
    dock.resultsTable.selectRow(0)
    dock.relevantButton.click()
    before = result_ids()
    dock.refineButton.click()
    new_results(before)
    assert not dock.resultsTable.selectionModel().hasSelection()
    assert not dock.resultsTable.currentIndex().isValid()


def test_the_results_are_as_many_as_asked_for_and_the_dock_says_when_there_are_fewer(iface: Any, plugin: Any) -> None:
    dock, bar = plugin.dock, iface.messageBar()
    raster = add_raster("drone_rgba_alpha.tif")
    dock.layerCombo.setLayer(raster)
    status = indexed(plugin, raster)
    dock.topKSpin.setValue(7)
    results = search(plugin, "a roof")
    assert results.featureCount() == dock.resultsTable.rowCount() == 7
    assert max(f["tile_count"] for f in results.getFeatures()) <= 9  # local: a tile and its neighbours
    assert not any("results asked for" in m for m in bar.shown())
    # the tiny raster cannot hold 20 separate places: the results are every one of them, and the dock says so
    small = add_raster("colorado_rgb_015m.tif")
    dock.layerCombo.setLayer(small)
    small_status = indexed(plugin, small)
    dock.topKSpin.setValue(20)
    few = search(plugin, "a roof")
    assert few.featureCount() == dock.resultsTable.rowCount() < 20
    told = bar.shown()[0]
    tiles = small_status["manifest"]["tiles"]
    assert f"{few.featureCount()} of the 20 results asked for" in told and f"among the {tiles} tiles" in told, told
    assert status["manifest"]["tiles"] > tiles


def damaged_copy(folder: Path) -> Path:
    """The drone mosaic written again as tiled deflate, then with the middle fifth of the file zeroed (its
    header intact, so QGIS opens it; some of its pixels cannot be decoded), as a failing disk leaves a file."""
    from osgeo import gdal

    path = folder / "damaged drone.tif"
    gdal.Translate(str(path), str(shared_raster("drone_rgba_alpha.tif")),
                   creationOptions=["TILED=YES", "COMPRESS=DEFLATE", "BLOCKXSIZE=128", "BLOCKYSIZE=128"])
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 5: len(data) * 3 // 5] = bytes(len(data) // 5)
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_raster_is_one_message_that_stays(iface: Any, plugin: Any, tmp_path: Path, errors: list[str]) -> None:
    dock, bar = plugin.dock, iface.messageBar()
    raster = QgsRasterLayer(str(damaged_copy(tmp_path)), "damaged drone")
    assert raster.isValid()  # QGIS opens it: the damage is in the pixels
    QgsProject.instance().addMapLayer(raster)
    dock.layerCombo.setLayer(raster)
    answered(plugin)
    dock.indexButton.click()
    wait_until(lambda: not plugin.controller.indexing.running(raster.id()), 120, "the build to end")
    item = bar.currentItem()
    assert item is not None and item.level() == Qgis.Critical and item.duration() == 0  # stays until closed
    text = item.text()
    assert "damaged drone.tif" in text and re.search(r"columns \d+-\d+, rows \d+-\d+", text), text
    assert "Traceback" not in text and "\n" not in text.strip()
    settle(1)
    assert bar.currentItem() is item and errors == []
