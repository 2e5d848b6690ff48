"""The dock's account of a raster in real QGIS: web layers are offered for indexing over an area, and layers the
engine cannot read are told so, with what to do instead."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProject, QgsRasterLayer

from clip_search_plugin.results.sources import layer_source
from clip_search_plugin.ui.dock import AREA_VISIBLE, AREA_WHOLE

from ..conftest import Loader, add_raster, wait_until


def test_web_layers_are_indexed_over_an_area_and_unreadable_layers_say_what_to_do(
        iface: Any, engine_settings: Any, load: Loader) -> None:
    xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19&zmin=0", "tiles", "wms")
    arcgis = QgsRasterLayer("url='http://127.0.0.1:9/arcgis/rest/services/ortho/MapServer' layer='0'", "ortho",
                            "arcgismapserver")
    remote = QgsRasterLayer("/vsicurl/http://127.0.0.1:9/ortho.tif", "remote", "gdal")  # nothing answers there
    for layer in (xyz, arcgis):
        QgsProject.instance().addMapLayer(layer)
    raster = add_raster("colorado_rgb_015m.tif")
    assert layer_source(xyz).text == xyz.source() and layer_source(xyz).is_web
    assert layer_source(remote).text == "/vsicurl/http://127.0.0.1:9/ortho.tif" and not layer_source(remote).is_web
    assert layer_source(raster).text == raster.source() and layer_source(raster).is_local
    plugin = load()
    dock = plugin.dock
    dock.layerCombo.setLayer(xyz)
    wait_until(lambda: "Not indexed yet. Choose the area to index" in dock.statusLabel.text(), 60, "the status")
    assert not dock.indexAreaCombo.model().item(AREA_WHOLE).isEnabled()
    assert dock.index_area_mode() == AREA_VISIBLE and not dock.resolutionSpin.isHidden()
    dock.layerCombo.setLayer(arcgis)
    status = dock.statusLabel.text()
    assert "ortho is an ArcGIS MapServer layer" in status and "/MapServer/tile/{z}/{y}/{x}" in status
    dock.layerCombo.setLayer(raster)  # a file: the whole layer again, no resolution
    assert dock.indexAreaCombo.model().item(AREA_WHOLE).isEnabled() and dock.resolutionSpin.isHidden()
    plugin.unload()
