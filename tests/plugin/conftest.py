"""Fixtures for plugin tests: real QGIS (offscreen, through pytest-qgis), the real engine process running
the tiny random-weight model, and the shared real rasters."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QMenu

REPO = Path(__file__).resolve().parents[2]
RASTERS = REPO.parent / "shared" / "data" / "rasters"
ENGINE_PYTHON = REPO / ".venv-engine" / "bin" / "python"
ARTIFACTS = REPO / "build" / "test-artifacts"


def shared_raster(name: str) -> Path:
    path = RASTERS / name
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path} (it sits beside the repository in CI)")
    return path


def wait_until(condition: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """Run Qt's event loop until ``condition()`` is truthy (the GUI keeps working meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QgsApplication.processEvents()
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def complete_iface(iface: Any) -> Any:
    """pytest-qgis's stand-in interface lacks a few QGIS calls the plugin makes; add them for real:
    the raster menu is a real QMenu on the main window, and docks really dock into it."""
    window = iface.mainWindow()
    if getattr(iface, "_raster_menu", None) is None:
        iface._raster_menu = window.menuBar().addMenu("&Raster")
        window.setCentralWidget(iface.mapCanvas())
        window.show()

        def add_to_raster_menu(name: str, action: QAction) -> None:
            submenu = next((m for m in iface._raster_menu.findChildren(QMenu) if m.title() == name), None)
            (submenu or iface._raster_menu.addMenu(name)).addAction(action)

        def remove_from_raster_menu(name: str, action: QAction) -> None:
            for submenu in iface._raster_menu.findChildren(QMenu):
                if submenu.title() == name:
                    submenu.removeAction(action)
                    if not submenu.actions():
                        iface._raster_menu.removeAction(submenu.menuAction())
                        submenu.deleteLater()

        def newest_on_top(_added: list[Any]) -> None:  # as QGIS's layer tree does
            iface.mapCanvas().setLayers(list(reversed(iface.getMockLayers())))

        QgsProject.instance().layersAdded.connect(newest_on_top)
        iface.addPluginToRasterMenu = add_to_raster_menu
        iface.removePluginRasterMenu = remove_from_raster_menu
        from qgis.gui import QgsBrowserGuiModel

        iface._browser_model = QgsBrowserGuiModel(window)  # the Processing dialog's file pickers use it
        iface.browserModel = lambda: iface._browser_model
        iface.addDockWidget = lambda area, dock: window.addDockWidget(area, dock)
        iface.removeDockWidget = lambda dock: window.removeDockWidget(dock)
    return iface


@pytest.fixture
def iface(qgis_iface: Any, qgis_new_project: None) -> Iterator[Any]:
    yield complete_iface(qgis_iface)
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def engine_settings(tmp_path: Path) -> Iterator[Any]:
    """Plugin settings for tests: the tiny random model on the CPU, a private index folder."""
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    from clip_search_plugin.plugin_settings import PluginSettings

    settings = PluginSettings(engine_python=str(ENGINE_PYTHON), model="tiny-random", device="cpu",
                              tile_size=96.0, cache_folder=str(tmp_path / "indexes"))
    settings.save()
    yield settings
    PluginSettings().save()


@pytest.fixture
def provider(qgis_processing: None, engine_settings: Any) -> Iterator[Any]:
    """The plugin as qgis_process loads it: classFactory(None), then initProcessing()."""
    import clip_search_plugin

    plugin = clip_search_plugin.classFactory(None)
    plugin.initProcessing()
    assert QgsApplication.processingRegistry().providerById("clipsearch") is not None
    yield plugin
    plugin.unload()
    assert QgsApplication.processingRegistry().providerById("clipsearch") is None
    QgsProject.instance().removeAllMapLayers()


def add_raster(name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(shared_raster(name)), Path(name).stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def our_docks(window: Any) -> list[QDockWidget]:
    return [d for d in window.findChildren(QDockWidget) if d.objectName() == "ClipSearchDock"]


def engine_children() -> list[int]:
    """Live engine processes started by this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == os.getpid() and state != "Z" and b"clip_search_plugin.engine" in cmdline:
            found.append(int(stat.parent.name))
    return found
