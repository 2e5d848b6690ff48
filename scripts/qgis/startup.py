"""Run by `make run` inside QGIS (--code): open the CLIP Search dock on the sample raster.

Optional, for looking at the desktop on a machine with no screen and for tests:
- CLIP_SEARCH_DEMO_QUERY=TEXT: click Index layer, then search for TEXT once the index is ready;
- CLIP_SEARCH_DEMO_HEATMAP=1: tick Heatmap before that search;
- CLIP_SEARCH_DEMO_CHOOSE=1: after that search, choose the first result (outlined, the map zoomed to it);
- CLIP_SEARCH_DEMO_STOP=1: before that, start indexing with small tiles, Cancel it part-way, then click Index
  layer again (which resumes it);
- CLIP_SEARCH_SCREENSHOT=PATH: save a screenshot of the main window after CLIP_SEARCH_SCREENSHOT_AFTER
  seconds (default 12), or as soon as the demo search has shown its results;
- CLIP_SEARCH_DOCK_SCREENSHOT=PATH: save a picture of the dock alone at the same moment;
- CLIP_SEARCH_REPORT=PATH: write what QGIS loaded (active plugins, dock state), every message the message bar
  showed, what it shows at that moment, and any Python error, as JSON at that moment;
- CLIP_SEARCH_DEMO_WEB=SOURCE with CLIP_SEARCH_DEMO_EXTENT="XMIN YMIN XMAX YMAX" (EPSG:3857): add that XYZ
  layer (QGIS's data source), zoom the map there and index the visible extent; the question asked before the
  download is saved as a screenshot of the screen at CLIP_SEARCH_QUESTION_SCREENSHOT=PATH, then answered
  "Download and index" (the demo query follows as above);
- CLIP_SEARCH_QUIT=1: close QGIS afterwards.
"""

import json
import os
import sys
import time
from dataclasses import replace

from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import active_plugins, iface, plugins

DONE = {"finished": False}
SEEN: dict[str, list[float]] = {}  # every message the message bar showed ("title: text") -> [shown, gone] (s)
ERRORS: list[str] = []  # Python errors raised in QGIS (each also opens QGIS's error dialog)


def record_errors() -> None:
    shown = sys.excepthook

    def record(kind: type, value: BaseException, tb: object) -> None:
        ERRORS.append(f"{kind.__name__}: {value}")
        shown(kind, value, tb)

    sys.excepthook = record


def bar_messages() -> list[str]:
    return [f"{item.title()}: {item.text()}" for item in iface.messageBar().items()]


def watch_bar() -> None:
    """Note when each message comes onto the message bar and when it leaves it."""
    bar = iface.messageBar()

    def changed(*_widget: object) -> None:
        now, shown = time.monotonic(), set(bar_messages())
        for message in shown:
            SEEN.setdefault(message, [now, -1.0])
        for message, times in SEEN.items():
            if message not in shown and times[1] < 0:
                times[1] = now

    bar.widgetAdded.connect(changed)
    bar.widgetRemoved.connect(changed)


def open_dock() -> None:
    plugin = plugins.get("clip_search_plugin")
    if plugin is not None and plugin.action is not None and not plugin.action.isChecked():
        plugin.action.trigger()
    if plugin is None or not os.environ.get("CLIP_SEARCH_DEMO_QUERY"):
        return
    if os.environ.get("CLIP_SEARCH_DEMO_STOP") == "1":
        controller = plugin.controller
        controller.apply_settings(replace(controller.settings, tile_size=24.0))  # a build that takes a while
        plugin.dock.indexButton.click()
        QTimer.singleShot(500, lambda: stop_part_way(plugin))
        return
    if os.environ.get("CLIP_SEARCH_DEMO_WEB"):
        add_web_layer(plugin)
        return
    plugin.dock.indexButton.click()
    QTimer.singleShot(1000, lambda: search_when_indexed(plugin))


def add_web_layer(plugin: object) -> None:
    """The XYZ layer on the map, zoomed to the demo's extent, the only layer shown; then Index layer."""
    layer = QgsRasterLayer(os.environ["CLIP_SEARCH_DEMO_WEB"], "Orthophoto (XYZ tiles)", "wms")
    project = QgsProject.instance()
    for other in project.mapLayers().values():
        project.layerTreeRoot().findLayer(other.id()).setItemVisibilityChecked(False)
    project.addMapLayer(layer)
    iface.setActiveLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(QgsRectangle(*map(float, os.environ["CLIP_SEARCH_DEMO_EXTENT"].split())))
    canvas.refresh()
    dock = plugin.dock  # type: ignore[attr-defined]
    dock.indexAreaCombo.setCurrentIndex(1)  # Visible extent
    QTimer.singleShot(3000, lambda: (dock.indexButton.click(), QTimer.singleShot(3000, answer_question)))


def answer_question() -> None:
    """A picture of the screen with the question on it, then Download and index."""
    found = [w for w in QApplication.topLevelWidgets()
             if w.objectName() == "clipSearchDownloadQuestion" and w.isVisible()]
    if not found:
        QTimer.singleShot(500, answer_question)
        return
    path = os.environ.get("CLIP_SEARCH_QUESTION_SCREENSHOT")
    if path:
        QApplication.primaryScreen().grabWindow(0).save(path)
    found[0].download_button.click()
    plugin = plugins.get("clip_search_plugin")
    QTimer.singleShot(1000, lambda: search_when_indexed(plugin))


def stop_part_way(plugin: object) -> None:
    """Cancel the build once it is a quarter done; click Index layer again a few seconds after it stopped."""
    dock = plugin.dock  # type: ignore[attr-defined]
    if dock.progressBar.value() < 25:
        QTimer.singleShot(200, lambda: stop_part_way(plugin))
        return
    dock.cancelButton.click()
    QTimer.singleShot(500, lambda: resume_when_stopped(plugin))


def resume_when_stopped(plugin: object) -> None:
    if plugin.controller.indexing.running():  # type: ignore[attr-defined]
        QTimer.singleShot(200, lambda: resume_when_stopped(plugin))
        return
    dock = plugin.dock  # type: ignore[attr-defined]
    QTimer.singleShot(4000, lambda: (dock.indexButton.click(), search_when_indexed(plugin)))  # after QGIS's notice


def search_when_indexed(plugin: object) -> None:
    controller = plugin.controller  # type: ignore[attr-defined]
    if controller.indexing.running():
        QTimer.singleShot(500, lambda: search_when_indexed(plugin))
        return
    dock = plugin.dock  # type: ignore[attr-defined]
    dock.queryEdit.setText(os.environ["CLIP_SEARCH_DEMO_QUERY"])
    dock.heatmapCheck.setChecked(os.environ.get("CLIP_SEARCH_DEMO_HEATMAP") == "1")
    dock.searchButton.click()
    finish_when_shown(dock, 120)


def finish_when_shown(dock: object, polls: int) -> None:
    """Finish once the results table has rows (the first search also loads the model)."""
    if dock.resultsTable.rowCount() > 0 or polls <= 0:  # type: ignore[attr-defined]
        if os.environ.get("CLIP_SEARCH_DEMO_CHOOSE") == "1" and dock.resultsTable.rowCount():  # type: ignore[attr-defined]
            dock.resultsTable.selectRow(0)  # type: ignore[attr-defined]
        QTimer.singleShot(1500, finish)  # let the canvas draw the results layer
    else:
        QTimer.singleShot(500, lambda: finish_when_shown(dock, polls - 1))


def finish() -> None:
    if DONE["finished"]:
        return
    DONE["finished"] = True
    plugin = plugins.get("clip_search_plugin")
    dock = getattr(plugin, "dock", None)
    report = os.environ.get("CLIP_SEARCH_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as f:
            json.dump({
                "active_plugins": list(active_plugins),
                "dock_visible": bool(dock is not None and dock.isVisible()),
                "status": dock.statusLabel.text() if dock is not None else "",
                "raster_layers": [lyr.name() for lyr in QgsProject.instance().mapLayers().values()],
                "results_rows": dock.resultsTable.rowCount() if dock is not None else 0,
                "messages_seen": SEEN,
                "messages_now": bar_messages(),
                "python_errors": ERRORS,
            }, f)
    path = os.environ.get("CLIP_SEARCH_SCREENSHOT")
    if path:
        iface.mainWindow().grab().save(path)
    path = os.environ.get("CLIP_SEARCH_DOCK_SCREENSHOT")
    if path and dock is not None:
        dock.grab().save(path)
    if os.environ.get("CLIP_SEARCH_QUIT") == "1":
        QgsProject.instance().removeAllMapLayers()  # no "scratch layers will be lost" prompt
        QgsProject.instance().setDirty(False)  # nothing to save: no "save changes?" prompt
        iface.actionExit().trigger()


record_errors()
watch_bar()
QTimer.singleShot(1500, open_dock)
QTimer.singleShot(int(float(os.environ.get("CLIP_SEARCH_SCREENSHOT_AFTER", "12")) * 1000), finish)
