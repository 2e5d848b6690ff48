"""Web layers in the dock, in real QGIS against a real tile server on 127.0.0.1: an XYZ layer indexed over a box
drawn on the map once the user has seen what it downloads, searched, its results on the map in the layer's CRS;
a second build served from the downloaded tiles; a web layer without an area, a server refusing access, and a
layer's login from QGIS's authentication manager."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtWidgets import QApplication

from clip_search_plugin.control.web import default_resolution, terms
from clip_search_plugin.engine.settings import TilingSettings
from clip_search_plugin.engine.sources.names import read_source
from clip_search_plugin.results import layers
from clip_search_plugin.results.sources import LayerSource, layer_source
from clip_search_plugin.ui.confirm import DownloadQuestion
from clip_search_plugin.ui.dock import AREA_DRAWN, AREA_VISIBLE, AREA_WHOLE

from ..conftest import Loader, add_raster, drag_rectangle, search, wait_until
from ..webdata import RecordingTiles, basic, web_cache, xyz_pyramid  # noqa: F401 - web_cache: a fixture

UTM = QgsCoordinateReferenceSystem("EPSG:26913")
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")
SECRET = "s3cret-w0rd"


@pytest.fixture(autouse=True)
def map_as_it_was(iface: Any) -> Iterator[None]:
    """These tests turn the map to other CRSs; the tests after them find it as it was."""
    canvas = iface.mapCanvas()
    crs, extent = canvas.mapSettings().destinationCrs(), canvas.extent()
    yield
    canvas.setDestinationCrs(crs)
    canvas.setExtent(extent)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("xyz")
    return root, xyz_pyramid(root)


def xyz_layer(server: RecordingTiles, name: str, extra: str = "") -> QgsRasterLayer:
    layer = QgsRasterLayer(f"{extra}type=xyz&url={server.url_template}&zmax=20&zmin=0", name, "wms")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def show_footprint(canvas: Any, info: dict[str, Any], crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    """The map in ``crs`` showing the imagery's footprint; the footprint there."""
    footprint = QgsCoordinateTransform(MERCATOR, crs, QgsProject.instance()).transformBoundingBox(
        QgsRectangle(*info["footprint_3857"]))
    canvas.setDestinationCrs(crs)
    canvas.setExtent(footprint)
    canvas.refresh()
    return footprint


def draw_box(plugin: Any, canvas: Any, footprint: QgsRectangle) -> QgsRectangle:
    """Choose A drawn box and drag one on the map over the middle of the footprint (the canvas's CRS)."""
    plugin.dock.indexAreaCombo.setCurrentIndex(AREA_DRAWN)
    plugin.dock.drawAreaButton.click()
    assert canvas.mapTool() is plugin.controller.view.area_tool
    box = QgsRectangle(footprint)
    box.scale(0.6)
    drag_rectangle(canvas, box)
    assert plugin.dock.drawAreaButton.text().startswith("Box drawn")
    assert canvas.mapTool() is not plugin.controller.view.area_tool  # one box per click
    return box


def question() -> DownloadQuestion:
    """The question asked before a download, once it is shown."""
    return wait_until(lambda: next((w for w in QApplication.topLevelWidgets() if isinstance(w, DownloadQuestion)
                                    and w.isVisible()), None), 60, "the question before downloading")


def built(plugin: Any, layer: QgsRasterLayer) -> Any:
    controller = plugin.controller
    wait_until(lambda: not controller.indexing.running(layer.id()), 180, "the build to end")
    return wait_until(lambda: getattr(controller.rasters.status(layer.id()), "ready", False)
                      and controller.rasters.status(layer.id()), 30, "the index to be ready")


@pytest.mark.usefixtures("web_cache")
def test_an_xyz_layer_is_indexed_over_a_drawn_box_after_the_question_and_searched(
        iface: Any, engine_settings: Any, load: Loader, pyramid: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    root, info = pyramid
    engine_settings.tile_size = 64.0
    engine_settings.save()
    with RecordingTiles(root, tmp_path / "heard.jsonl") as server:
        layer = xyz_layer(server, "ortho tiles")
        plugin = load()
        dock, canvas = plugin.dock, iface.mapCanvas()
        footprint = show_footprint(canvas, info, UTM)  # the map in the imagery's UTM zone: areas are transformed
        dock.layerCombo.setLayer(layer)
        wait_until(lambda: "Not indexed yet" in dock.statusLabel.text(), 60, "the web layer's status")
        # a web layer has no edges: Whole layer is not offered, the resolution to read it at is (Auto)
        assert not dock.indexAreaCombo.model().item(AREA_WHOLE).isEnabled()
        assert dock.index_area_mode() == AREA_VISIBLE and dock.resolutionSpin.isVisible()
        assert dock.resolutionSpin.suffix() == " m" and dock.index_resolution() is None
        dock.indexRequested.emit(AREA_WHOLE)  # asked for anyway: one message, nothing built
        assert "web layer, which has no edges of its own" in iface.messageBar().get_messages(Qgis.Warning)[-1]
        assert not plugin.controller.indexing.running(layer.id()) and not plugin.controller.indexing.questions

        box = draw_box(plugin, canvas, footprint)
        dock.indexButton.click()
        asked = question()
        said = asked.plain_text()
        assert "Index ortho tiles from the web?" in said
        for figure in ("tiles,", "requests to the server", "MB", "on this computer", "zoom level 20"):
            assert figure in said, said
        assert "The layer states no terms" in said
        assert not server.engine_heard(), "tiles were downloaded before the user agreed"
        asked.download_button.click()
        status = built(plugin, layer)
        assert server.engine_heard() and status.manifest.tiles > 0

        results = search(plugin, "a roof")
        assert results.crs().authid() == "EPSG:3857"  # the index's CRS: the layer's
        area = QgsCoordinateTransform(UTM, MERCATOR, QgsProject.instance()).transformBoundingBox(box)
        area.grow(1.0)
        assert results.featureCount() > 0
        for feature in results.getFeatures():
            assert area.contains(feature.geometry().boundingBox())

        # chosen again later, the layer's index is found (the newest built from this layer)
        other = add_raster("drone_rgba_alpha.tif")
        dock.layerCombo.setLayer(other)
        dock.layerCombo.setLayer(layer)
        wait_until(lambda: dock.statusLabel.text().startswith("Index ready"), 60, "the index found again")

        # other settings: the index was built with other ones; building again downloads nothing
        server.forget_heard()
        plugin.controller.apply_settings(replace(plugin.controller.settings, tile_size=48.0))
        wait_until(lambda: "Index built with other settings" in dock.statusLabel.text(), 60, "the stale status")
        dock.indexButton.click()
        question().download_button.click()
        built(plugin, layer)
        assert not server.engine_heard(), "a build over tiles already downloaded downloaded them again"
        plugin.unload()


@pytest.mark.usefixtures("web_cache")
def test_a_login_from_qgis_reaches_the_server_and_nothing_else_shows_it(
        iface: Any, engine_settings: Any, load: Loader, pyramid: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    root, info = pyramid
    engine_settings.tile_size = 64.0
    engine_settings.save()
    manager = QgsApplication.authManager()
    assert manager.setMasterPassword("a master password", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("tiles login")
    config.setConfig("username", "analyst")
    config.setConfig("password", SECRET)
    assert manager.storeAuthenticationConfig(config)[0]
    with RecordingTiles(root, tmp_path / "heard.jsonl", login=("analyst", SECRET)) as server:
        layer = xyz_layer(server, "ortho behind a login", f"authcfg={config.id()}&")
        assert layer_source(layer).auth == {"user": "analyst", "password": SECRET}  # from QGIS's manager
        plugin = load()
        dock = plugin.dock
        footprint = show_footprint(iface.mapCanvas(), info, MERCATOR)
        dock.layerCombo.setLayer(layer)
        wait_until(lambda: "Not indexed yet" in dock.statusLabel.text(), 60, "the web layer's status")
        draw_box(plugin, iface.mapCanvas(), footprint)

        server.always(403)  # first the service refuses: one message naming the layer, never the login
        dock.indexButton.click()
        question().download_button.click()
        wait_until(lambda: not plugin.controller.indexing.running(layer.id()), 180, "the build to fail")
        refused = iface.messageBar().get_messages(Qgis.Critical)
        assert len(refused) == 1 and "ortho behind a login" in refused[0] and "403" in refused[0], refused

        server.always(None)  # then it lets the login in
        dock.indexButton.click()
        question().download_button.click()
        built(plugin, layer)
        heard = server.engine_heard()
        assert heard and {h["auth"] for h in heard} == {basic("analyst", SECRET)}
        results = search(plugin, "a roof")
        shown = [m for ms in iface.messageBar().messages.values() for m in ms] + [
            dock.statusLabel.text(), *(lyr.name() for lyr in QgsProject.instance().mapLayers().values())]
        assert results in layers.results_layers(QgsProject.instance())
        assert not [text for text in shown if SECRET in text or "analyst" in text]
        for written in Path(engine_settings.cache_folder).rglob("*.json"):
            assert SECRET not in written.read_text(errors="replace")
        plugin.unload()


def test_auto_resolution_and_the_terms_the_question_shows(iface: Any) -> None:
    canvas = iface.mapCanvas()
    xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=20&zmin=0", "tiles", "wms")
    source = layer_source(xyz)
    box = (-11663530.0, 4715010.0, -11663470.0, 4715045.0)  # in Colorado, near 39.9° N
    top = 2 * 20037508.342789244 / (256 * 2**20)
    assert default_resolution(source, xyz, box, TilingSettings(tile_size=64.0), canvas) is None  # the engine's
    latitude = math.degrees(math.atan(math.sinh(4715027.5 / 6378137.0)))
    coarser = default_resolution(source, xyz, box, TilingSettings(tile_size=50.0, tile_units="m"), canvas)
    assert coarser == pytest.approx(50 / 224 / math.cos(math.radians(latitude)), rel=0.005)  # metres to EPSG:3857
    assert default_resolution(source, xyz, box, TilingSettings(tile_size=10.0, tile_units="m"), canvas) == top
    wms = LayerSource("crs=EPSG:3857&format=image/png&layers=ortho&styles=&url=http://127.0.0.1:9/wms",
                      read_source("crs=EPSG:3857&format=image/png&layers=ortho&styles=&url=http://127.0.0.1:9/wms"))
    canvas.setDestinationCrs(MERCATOR)
    canvas.setExtent(QgsRectangle(*box))
    assert default_resolution(wms, xyz, box, TilingSettings(), canvas) == pytest.approx(canvas.mapUnitsPerPixel(),
                                                                                        rel=1e-6)
    assert terms(xyz) == []  # the question then says the layer states none
    xyz.setAttribution("© Orthophoto: a test agency")
    metadata = xyz.metadata()
    metadata.setRights(["Free for any use, with attribution"])
    metadata.setLicenses(["CC BY 4.0"])
    xyz.setMetadata(metadata)
    assert terms(xyz) == ["© Orthophoto: a test agency", "Free for any use, with attribution", "CC BY 4.0"]
