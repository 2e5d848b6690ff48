"""Three more kinds of source in the dock, in real QGIS against real servers on 127.0.0.1 (as test_web_layers does
for an XYZ layer): a WMS layer (MapServer) indexed over a box drawn on the map at the resolution typed in the dock,
once the user has seen what it downloads; a Cloud-Optimised GeoTIFF read by range requests, indexed with no
question; and one VRT of 200 sheets, indexed whole, whose every result names the sheet it lies on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtWidgets import QApplication

from clip_search_plugin.results import layers
from clip_search_plugin.ui.confirm import DownloadQuestion
from clip_search_plugin.ui.dock import AREA_WHOLE, FILE_COLUMN
from tests.servers.http import RangeFileServer
from tests.servers.wms import MapServerWMS

from ..conftest import Loader, indexed, search, shared_raster, wait_until
from ..webdata import make_imagery, web_cache  # noqa: F401 - web_cache: a fixture
from .test_web_layers import built, draw_box, map_as_it_was, question  # noqa: F401 - map_as_it_was: a fixture

UTM = QgsCoordinateReferenceSystem("EPSG:26913")
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")
SHEET = re.compile(r"^sheet_r(\d\d)_c(\d\d)\.tif$")


def raster_frame(path: Path) -> tuple[QgsRectangle, tuple[int, int]]:
    """A raster file's extent (its CRS) and size in pixels, as QGIS reads them."""
    raster = QgsRasterLayer(str(path), "frame")
    assert raster.isValid()
    frame = (QgsRectangle(raster.extent()), (raster.width(), raster.height()))
    del raster  # a layer Python owns must not outlive QGIS
    return frame


def engine_getmaps(wms: MapServerWMS) -> list[str]:
    """The GetMap requests the engine sent: GDAL's WMS driver writes its keys in lower case (request=GetMap),
    QGIS's own drawing of the layer in upper case (REQUEST=GetMap)."""
    return [r.path for r in wms.log if r.path.startswith("/wms") and "request=GetMap" in r.path]


def no_question_shown() -> bool:
    return not any(isinstance(w, DownloadQuestion) and w.isVisible() for w in QApplication.topLevelWidgets())


@pytest.mark.usefixtures("web_cache")
def test_a_wms_layer_is_indexed_over_a_drawn_box_at_the_resolution_typed_and_searched(
        iface: Any, engine_settings: Any, load: Loader) -> None:
    reason = MapServerWMS.unavailable_reason()
    if reason:
        pytest.skip(reason)
    path = shared_raster("colorado_rgb_015m.tif")
    extent, size = raster_frame(path)
    engine_settings.tile_size = 64.0
    engine_settings.save()
    bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    with MapServerWMS(path, 26913, bounds, size) as wms:
        layer = QgsRasterLayer(f"crs=EPSG:26913&format=image/png&layers=ortho&styles=&url={wms.url}", "wms ortho",
                               "wms")
        assert layer.isValid(), layer.error().summary()
        QgsProject.instance().addMapLayer(layer)
        plugin = load()
        dock, canvas = plugin.dock, iface.mapCanvas()
        # the map in Web Mercator, the layer in UTM: the drawn box is transformed into the layer's CRS
        footprint = QgsCoordinateTransform(UTM, MERCATOR, QgsProject.instance()).transformBoundingBox(extent)
        canvas.setDestinationCrs(MERCATOR)
        canvas.setExtent(footprint)
        canvas.refresh()
        dock.layerCombo.setLayer(layer)
        wait_until(lambda: "Not indexed yet" in dock.statusLabel.text(), 60, "the WMS layer's status")
        assert not dock.indexAreaCombo.model().item(AREA_WHOLE).isEnabled()  # a web layer: no edges
        assert not dock.resolutionSpin.isHidden() and dock.resolutionSpin.suffix() == " m"
        box = draw_box(plugin, canvas, footprint)

        assert dock.index_resolution() is None  # Auto (the map's scale) until a resolution is typed
        dock.resolutionSpin.setValue(0.15)
        assert dock.index_resolution() == pytest.approx(0.15)
        dock.indexButton.click()
        asked = question()
        said = asked.plain_text()
        assert "Index wms ortho from the web?" in said
        assert "Read at 0.15 m a pixel" in said and "EPSG:26913" in said, said
        assert not engine_getmaps(wms), "imagery was downloaded before the user agreed"
        asked.download_button.click()
        status = built(plugin, layer)
        getmaps = engine_getmaps(wms)
        assert getmaps and status.manifest.tiles > 0, [r.path for r in wms.log]
        assert all(r.status == 200 for r in wms.log if r.path in getmaps)

        results = search(plugin, "a roof")
        assert results.crs().authid() == "EPSG:26913"  # the WMS layer's CRS
        drawn = plugin.controller.indexing.drawn  # the box dragged, to the screen pixel
        pixel = canvas.mapUnitsPerPixel()
        assert drawn.crs() == MERCATOR and all(abs(a - b) < 2 * pixel for a, b in (
            (drawn.xMinimum(), box.xMinimum()), (drawn.yMinimum(), box.yMinimum()),
            (drawn.xMaximum(), box.xMaximum()), (drawn.yMaximum(), box.yMaximum())))
        area = QgsCoordinateTransform(MERCATOR, UTM, QgsProject.instance()).transformBoundingBox(QgsRectangle(drawn))
        area.grow(0.15 + 1e-6)  # the area is read in whole pixels of 0.15 m
        assert results.featureCount() > 0
        for feature in results.getFeatures():
            assert area.contains(feature.geometry().boundingBox()), (area.toString(),
                                                                     feature.geometry().boundingBox().toString())
        plugin.unload()


@pytest.mark.usefixtures("web_cache")
def test_a_remote_cog_is_indexed_whole_by_range_requests_without_a_question_and_searched(
        iface: Any, engine_settings: Any, load: Loader, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    make_imagery("cog", str(shared_raster("colorado_rgb_015m.tif")), str(bucket / "ortho.tif"))
    size = (bucket / "ortho.tif").stat().st_size
    engine_settings.tile_size = 64.0
    engine_settings.save()
    with RangeFileServer(bucket) as server:
        layer = QgsRasterLayer(server.vsicurl("ortho.tif"), "remote ortho", "gdal")
        assert layer.isValid() and layer.crs().authid() == "EPSG:26913"
        QgsProject.instance().addMapLayer(layer)
        plugin = load()
        dock, canvas = plugin.dock, iface.mapCanvas()
        dock.layerCombo.setLayer(layer)
        wait_until(lambda: dock.statusLabel.text() == "Not indexed yet. Click Index layer.", 60,
                   "the remote file's status")
        # a file, though remote: it has edges (Whole layer is offered and chosen) and its own pixels (no resolution)
        assert dock.indexAreaCombo.model().item(AREA_WHOLE).isEnabled() and dock.resolutionSpin.isHidden()
        dock.indexAreaCombo.setCurrentIndex(AREA_WHOLE)
        canvas.setLayers([])  # QGIS stops drawing it: what the server hears from here on is the engine
        QApplication.processEvents()
        server.clear_log()

        dock.indexButton.click()  # no question: the build starts at once
        assert plugin.controller.indexing.running(layer.id()) and not plugin.controller.indexing.questions
        assert dock.statusLabel.text() == "Indexing remote ortho…"
        status = built(plugin, layer)
        log = server.log
        assert no_question_shown()
        assert status.manifest.tiles > 0
        ranged = [r for r in log if r.method == "GET" and r.status == 206]
        assert ranged and all(r.range for r in ranged), log
        assert not [r for r in log if r.method == "GET" and r.status == 200], "the whole file was downloaded"
        assert sum(r.sent for r in log) < 3 * size

        results = search(plugin, "a roof")
        assert results.crs().authid() == "EPSG:26913"  # the COG's CRS
        whole = QgsRectangle(layer.extent())
        whole.grow(0.15)
        assert results.featureCount() > 0
        assert all(whole.contains(f.geometry().boundingBox()) for f in results.getFeatures())
        plugin.unload()


def test_a_vrt_of_200_sheets_is_indexed_whole_and_each_result_names_the_sheet_it_lies_on(
        iface: Any, engine_settings: Any, load: Loader, tmp_path: Path) -> None:
    from osgeo import gdal  # QGIS's own GDAL, in the QGIS process

    sheets = [Path(p) for p in make_imagery("sheets", str(shared_raster("drone_rgba_alpha.tif")),
                                            str(tmp_path / "sheets"), "--cols", "20", "--rows", "10")["sheets"]]
    assert len(sheets) == 200
    mosaic = tmp_path / "sheets.vrt"
    made = gdal.BuildVRT(str(mosaic), [str(p) for p in sheets])
    assert made is not None and (made.RasterXSize, made.RasterYSize) == (686, 758)
    made = None  # written to disk when closed
    extents: dict[str, QgsRectangle] = {}
    for sheet in sheets:
        opened = gdal.Open(str(sheet))
        x0, dx, _, y0, _, dy = opened.GetGeoTransform()
        extents[sheet.name] = QgsRectangle(x0, y0 + dy * opened.RasterYSize, x0 + dx * opened.RasterXSize, y0)
        opened = None
    engine_settings.tile_size = 64.0
    engine_settings.save()
    layer = QgsRasterLayer(str(mosaic), "sheets")
    assert layer.isValid() and (layer.width(), layer.height()) == (686, 758)
    QgsProject.instance().addMapLayer(layer)
    plugin = load()
    dock = plugin.dock
    dock.layerCombo.setLayer(layer)
    wait_until(lambda: dock.statusLabel.text() == "Not indexed yet. Click Index layer.", 60, "the VRT's status")
    dock.indexAreaCombo.setCurrentIndex(AREA_WHOLE)
    status = indexed(plugin, layer)
    assert status["manifest"]["tiles"] > 0

    results = search(plugin, "a roof")
    assert results.crs() == layer.crs()
    assert results.featureCount() > 0 and "file" in results.fields().names()
    files = {int(f["rank"]): f["file"] for f in results.getFeatures()}
    assert all(SHEET.match(str(name)) and name in extents for name in files.values()), files
    for feature in results.getFeatures():
        # the sheet named holds the most of the result's best tile (the whole result, when it is one tile)
        shape = feature.geometry().boundingBox()
        named = extents[feature["file"]]
        assert named.intersects(shape), (feature["file"], shape.toString())
        if feature["tile_count"] == 1:
            most = max(extents.values(), key=lambda e: e.intersect(shape).area())
            assert named.intersect(shape).area() >= most.intersect(shape).area() - 1e-6, feature["file"]
    # the dock's File column says the same, row by row
    table = dock.resultsTable
    assert not table.isColumnHidden(FILE_COLUMN) and table.rowCount() == len(files)
    for row in range(table.rowCount()):
        rank = int(table.item(row, 0).text())
        assert table.item(row, FILE_COLUMN).text() == files[rank]
    assert results in layers.results_layers(QgsProject.instance())
    plugin.unload()
