"""The dock in real QGIS: the methods through which the rest of the plugin chooses and reads its layers."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication, QEvent

from clip_search_plugin.ui.dock import AREA_SELECTED, AREA_WHOLE, ClipSearchDock

from ..conftest import add_raster


def test_the_dock_chooses_and_reads_its_layers_through_its_methods(iface: Any) -> None:
    raster = add_raster("colorado_rgb_015m.tif")
    other = add_raster("drone_rgba_alpha.tif")
    polygons = QgsVectorLayer(f"Polygon?crs={raster.crs().authid()}", "area", "memory")
    QgsProject.instance().addMapLayer(polygons)
    dock = ClipSearchDock(iface.mainWindow())
    try:
        changed: list[Any] = []
        dock.layerChanged.connect(changed.append)
        dock.set_raster_layer(other)
        assert dock.raster_layer() is other and changed[-1] is other
        assert dock.is_current_raster(other.id()) and not dock.is_current_raster(raster.id())
        assert not dock.is_current_raster(polygons.id())  # only rasters are the dock's

        dock.hide_layers([raster])  # e.g. the plugin's heatmaps: never offered as a raster to index
        assert dock.layerCombo.exceptedLayerList() == [raster] and dock.raster_layer() is other

        requested: list[int] = []
        dock.indexRequested.connect(requested.append)
        assert dock.index_area_mode() == AREA_WHOLE
        dock.indexAreaCombo.setCurrentIndex(AREA_SELECTED)  # as a user chooses it
        dock.polygonLayerCombo.setLayer(polygons)
        dock.indexButton.click()
        assert requested == [AREA_SELECTED] and dock.index_area_mode() == AREA_SELECTED
        assert dock.polygon_layer() is polygons
    finally:
        dock.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # gone before the project's layers go
