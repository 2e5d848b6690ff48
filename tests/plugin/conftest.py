"""Fixtures for plugin tests: real QGIS (offscreen, through pytest-qgis), the real engine process running
the tiny random-weight model, and the shared real rasters."""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.faulthandler import fault_handler_stderr_fd_key  # the terminal's stderr, kept by pytest
from qgis.core import Qgis, QgsApplication, QgsPointXY, QgsProject, QgsRasterLayer
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QMouseEvent
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget, QMenu, QVBoxLayout, QWidget

# QGIS computes a raster layer's statistics to draw it, and GDAL would keep them in RASTER.aux.xml beside it: the
# shared rasters are read by the tests, never written (read when GDAL needs the setting, so set before any is opened)
os.environ["GDAL_PAM_ENABLED"] = "NO"
REPO = Path(__file__).resolve().parents[2]
RASTERS = REPO.parent / "shared" / "data" / "rasters"
ENGINE_PYTHON = REPO / ".venv-engine" / "bin" / "python"
ARTIFACTS = REPO / "build" / "test-artifacts"
EXIT_WATCHDOG_S = 300  # QGIS exits in seconds; a hang is reported with stacks, not waited out


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


@pytest.fixture(autouse=True, scope="session")
def tasks_end_before_qgis_exits(qgis_app: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """At the end of the run, before QGIS exits (its task manager waits for every running task): tasks still
    running are cancelled and waited for, and named if they do not end; should QGIS's exit still hang, every
    thread's stack is written out and the run ends after a few minutes instead of waiting for ever."""
    yield
    manager = QgsApplication.taskManager()
    left = [task.description() for task in manager.activeTasks()]
    manager.cancelAll()
    deadline = time.monotonic() + 60
    while manager.countActiveTasks() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    terminal = request.config.stash.get(fault_handler_stderr_fd_key, None)  # stderr itself is captured here
    if left and terminal is not None:
        os.write(terminal, f"\ntasks still running at the end of the run, cancelled: {left}\n".encode())
    faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True, file=terminal if terminal is not None else sys.stderr)


class RecordingMessageBar(QgsMessageBar):
    """QGIS's real message bar above the map (a message pushed over another hides it, closing the newer one
    shows the older again), remembering every message pushed, as pytest-qgis's stand-in bar does."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.messages: dict[Any, list[str]] = {level: [] for level in (Qgis.Info, Qgis.Warning, Qgis.Critical,
                                                                       Qgis.Success)}
        self.widgetAdded.connect(self._record)

    def _record(self, _widget: Any) -> None:
        # the signal's argument may arrive as a plain QWidget; the item just pushed is the bar's current one
        item = self.currentItem()
        if item is not None:
            self.messages[item.level()].append(f"{item.title()}:{item.text()}")

    def get_messages(self, level: Any) -> list[str]:
        return self.messages[level]

    def shown(self) -> list[str]:
        """The messages on the bar now, the one in view first (the others wait beneath it)."""
        items = list(self.items())
        current = self.currentItem()
        ordered = ([current] if current in items else []) + [i for i in reversed(items) if i is not current]
        return [f"{item.title()}:{item.text()}" for item in ordered]


def complete_iface(iface: Any) -> Any:
    """pytest-qgis's stand-in interface lacks a few QGIS calls the plugin makes; add them for real:
    the raster menu is a real QMenu on the main window, docks really dock into it, and the message bar is
    QGIS's own above the map."""
    window = iface.mainWindow()
    if getattr(iface, "_raster_menu", None) is None:
        iface._raster_menu = window.menuBar().addMenu("&Raster")
        centre = QWidget(window)
        column = QVBoxLayout(centre)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        iface._message_bar = RecordingMessageBar(centre)
        column.addWidget(iface._message_bar)
        column.addWidget(iface.mapCanvas(), 1)
        window.setCentralWidget(centre)
        iface.messageBar = lambda: iface._message_bar
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
    completed = complete_iface(qgis_iface)
    bar = completed.messageBar()
    bar.clearWidgets()  # each test starts with an empty message bar and no messages recorded
    for messages in bar.messages.values():
        messages.clear()
    yield completed
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def engine_settings(tmp_path: Path) -> Iterator[Any]:
    """Plugin settings for tests: the tiny random model on the CPU, a private index folder."""
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    from clip_search_plugin.session.settings import PluginSettings

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


def indexed(plugin: Any, layer: QgsRasterLayer, timeout: float = 180) -> dict[str, Any]:
    """Click Index layer and wait until the task has finished and the index is ready (its status, as the engine
    sends it)."""
    controller = plugin.controller
    plugin.dock.indexButton.click()
    wait_until(lambda: not controller.indexing.running(layer.id()), timeout, "the index task to finish")
    status = wait_until(lambda: getattr(controller.rasters.status(layer.id()), "ready", False)
                        and controller.rasters.status(layer.id()), 30, "the index status to be ready")
    return status.to_dict()


def engine_client(controller: Any) -> Any:
    """The dock's engine process (its client) as it is now: None before the first request, perhaps not running."""
    return controller.engine.session.running_client


def running_engine(controller: Any) -> Any:
    """The dock's engine process when it is running, else None."""
    client = engine_client(controller)
    return client if client is not None and client.running else None


def result_ids() -> set[str]:
    """The ids of the project's results layers now."""
    from clip_search_plugin.results import layers

    return {lyr.id() for lyr in layers.results_layers(QgsProject.instance())}


def new_results(before: set[str], what: str = "a results layer") -> Any:
    """Wait for a results layer that was not among ``before``."""
    from clip_search_plugin.results import layers

    return wait_until(lambda: next((lyr for lyr in layers.results_layers(QgsProject.instance())
                                    if lyr.id() not in before), None), 60, what)


def search(plugin: Any, query: str) -> Any:
    """Type a query, press Enter, and wait for its results layer."""
    before = result_ids()
    plugin.dock.queryEdit.setText(query)
    QTest.keyClick(plugin.dock.queryEdit, Qt.Key_Return)
    return new_results(before)


Loader = Callable[[], Any]


@pytest.fixture
def load(iface: Any) -> Iterator[Loader]:
    """Load the plugin as QGIS does and open its dock; whatever a failed test left loaded is unloaded."""
    import clip_search_plugin

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


def click_map(canvas: Any, point: Any) -> None:
    """A plain left click on the map at ``point`` (map units)."""
    pixel = canvas.getCoordinateTransform().transform(point)
    QTest.mouseClick(canvas.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(round(pixel.x()), round(pixel.y())))
    QTest.qWait(50)


def drag_rectangle(canvas: Any, box: Any) -> None:
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
