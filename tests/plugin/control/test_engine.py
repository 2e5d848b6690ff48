"""The dock's engine in real QGIS: an engine process that dies mid-search never freezes the dock."""

from __future__ import annotations

import os
import signal
from typing import Any

from qgis.core import Qgis, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from clip_search_plugin.results import layers

from ..conftest import Loader, add_raster, engine_client, indexed, running_engine, search, wait_until


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
        engine = wait_until(lambda: running_engine(controller), 60, "the engine")
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
    assert controller.engine.session.pid != first.pid and dock.searchButton.isEnabled()
    assert any("restarted" in m for m in iface.messageBar().get_messages(Qgis.Info))

    # dies again, and so does the engine started to take over: an error, and the dock is usable again
    errors = len(iface.messageBar().get_messages(Qgis.Critical))
    second = search_in_flight("a river")
    os.kill(second.pid, signal.SIGKILL)
    third = wait_until(lambda: engine_client(controller) if engine_client(controller) not in (None, second)
                       and engine_client(controller).pid else None, 30, "a new engine to start")
    os.kill(third.pid, signal.SIGKILL)  # while it starts
    wait_until(lambda: len(iface.messageBar().get_messages(Qgis.Critical)) > errors, 60, "an error message")
    assert "did not start" in iface.messageBar().get_messages(Qgis.Critical)[-1]
    assert dock.searchButton.isEnabled() and dock.searchButton.text() == "Search"

    # and the next search simply works
    assert search(plugin, "a river").featureCount() > 0
    plugin.unload()
