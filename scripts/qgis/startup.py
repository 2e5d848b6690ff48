"""Run by `make run` inside QGIS (--code): open the CLIP Search dock on the sample raster.

Optional, for looking at the desktop on a machine with no screen and for tests:
- CLIP_SEARCH_DEMO_QUERY=TEXT: click Index layer, then search for TEXT once the index is ready;
- CLIP_SEARCH_DEMO_HEATMAP=1: tick Heatmap before that search;
- CLIP_SEARCH_SCREENSHOT=PATH: save a screenshot of the main window after CLIP_SEARCH_SCREENSHOT_AFTER
  seconds (default 12), or as soon as the demo search has shown its results;
- CLIP_SEARCH_DOCK_SCREENSHOT=PATH: save a picture of the dock alone at the same moment;
- CLIP_SEARCH_REPORT=PATH: write what QGIS loaded (active plugins, dock state) as JSON at that moment;
- CLIP_SEARCH_QUIT=1: close QGIS afterwards.
"""

import json
import os

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import active_plugins, iface, plugins

DONE = {"finished": False}


def open_dock() -> None:
    plugin = plugins.get("clip_search_plugin")
    if plugin is not None and plugin.action is not None and not plugin.action.isChecked():
        plugin.action.trigger()
    if plugin is not None and os.environ.get("CLIP_SEARCH_DEMO_QUERY"):
        plugin.dock.indexButton.click()
        QTimer.singleShot(1000, lambda: search_when_indexed(plugin))


def search_when_indexed(plugin: object) -> None:
    controller = plugin.controller  # type: ignore[attr-defined]
    if controller.tasks:
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


QTimer.singleShot(1500, open_dock)
QTimer.singleShot(int(float(os.environ.get("CLIP_SEARCH_SCREENSHOT_AFTER", "12")) * 1000), finish)
