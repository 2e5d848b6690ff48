"""The dock's account of a raster in real QGIS: layers it cannot index are told so."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProject, QgsRasterLayer

from ..conftest import Loader


def test_web_layers_get_a_clear_message(iface: Any, engine_settings: Any, load: Loader) -> None:
    xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19&zmin=0", "tiles", "wms")
    QgsProject.instance().addMapLayer(xyz)
    plugin = load()
    plugin.dock.layerCombo.setLayer(xyz)
    assert "wms layer" in plugin.dock.statusLabel.text() and "raster files" in plugin.dock.statusLabel.text()
    plugin.unload()
