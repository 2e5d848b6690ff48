"""The plugin in real QGIS: load and unload, and the Set up engine dialog it opens from the dock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QAction, QApplication, QMenu

from .conftest import ARTIFACTS, Loader, add_raster, alive, our_docks, wait_until


def test_plugin_loads_opens_its_dock_and_unloads_cleanly(iface: Any, engine_settings: Any, load: Loader) -> None:
    window = iface.mainWindow()
    receivers_before = iface.receivers(iface.currentLayerChanged)
    add_raster("colorado_rgb_015m.tif")
    plugin = load()
    assert plugin.action.objectName() == "clipSearchAction"
    assert [d.isVisible() for d in our_docks(window)] == [True]
    wait_until(lambda: plugin.controller.engine.session.pid is not None, 60, "the engine")
    pid = plugin.controller.engine.session.pid
    wait_until(lambda: "Not indexed" in plugin.dock.statusLabel.text(), 30, "the index status")

    plugin.unload()
    QTest.qWait(50)
    assert our_docks(window) == [] or all(not d.isVisible() for d in our_docks(window))
    assert plugin.action is None and plugin.dock is None and plugin.controller is None
    assert iface.receivers(iface.currentLayerChanged) == receivers_before
    assert not [a for a in iface._raster_menu.findChildren(QAction) if a.objectName() == "clipSearchAction"]
    assert not [m for m in iface._raster_menu.findChildren(QMenu) if m.title() == "&CLIP Search" and m.actions()]
    wait_until(lambda: not alive(pid), 10, "the engine process to end")

    again = load()  # reloadable (as with Plugin Reloader)
    assert len([d for d in our_docks(window) if d.isVisible()]) == 1
    again.unload()


def test_missing_engine_offers_set_up_which_makes_a_working_one(iface: Any, engine_settings: Any, load: Loader,
                                                                tmp_path: Path) -> None:
    from clip_search_plugin.setup import plan as setup

    from .setup.test_engine_setup import base_python, package_folder

    wheels, versions = package_folder(tmp_path)
    engine_settings.engine_python = "/nonexistent/engine/python"
    engine_settings.save()
    plugin = load()
    dock = plugin.dock
    assert dock.setupEngineButton.isVisible()  # offered at once, before any raster is chosen
    add_raster("colorado_rgb_015m.tif")
    wait_until(lambda: "does not exist" in dock.statusLabel.text(), 30, "the engine error")
    assert "click Set up engine" in dock.statusLabel.text() and dock.setupEngineButton.isVisible()
    dock.indexButton.click()
    wait_until(lambda: iface.messageBar().get_messages(Qgis.Critical), 30, "an error message")
    assert "click Set up engine" in iface.messageBar().get_messages(Qgis.Critical)[-1]

    # the dock's button opens the set-up, which looks at the computer and the engine in use
    dock.setupEngineButton.click()
    dialog = plugin.setup_dialog
    assert dialog is not None and dialog.isVisible()
    wait_until(lambda: dialog.setupButton.isEnabled(), 60, "the dialog to look at the computer")
    assert "No NVIDIA GPU" in dialog.computerLabel.text() and "CPU build" in dialog.planLabel.text()
    assert "does not exist" in dialog.engineLabel.text() or "did not run" in dialog.engineLabel.text()
    dialog.pythonCombo.setEditText(base_python())
    dialog.folderWidget.setFilePath(str(tmp_path / "engines"))
    dialog.wheelsWidget.setFilePath(str(wheels))
    dialog.requirements = versions
    dialog.setupButton.click()
    assert dialog.cancelButton.isEnabled() and not dialog.setupButton.isEnabled()
    wait_until(lambda: dialog.task is None, 300, "the set-up task to finish")
    log = dialog.logView.toPlainText()
    assert "Step 1 of 4: Creating the virtual environment" in log and "done: installed torch 2.15.0" in log, log[-2000:]
    assert "engine ready on cpu" in log and dialog.progressBar.value() == 100
    [made] = setup.made_environments(tmp_path / "engines")
    # the new engine is the one in use at once: saved in the settings, and the dock works
    assert plugin.controller.settings.engine_python == str(setup.env_python(made))
    wait_until(lambda: "Not indexed" in dock.statusLabel.text(), 60, "the dock to use the new engine")
    assert not dock.setupEngineButton.isVisible()
    text = dialog.copy_diagnostics()
    assert QApplication.clipboard().text() == text
    assert "QGIS: 3." in text and f"Engine Python: {setup.env_python(made)}" in text and "Self-test encode: ok" in text
    assert "Last errors:\n  The engine Python /nonexistent/engine/python does not exist" in text  # what the dock said
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(ARTIFACTS / "setup_dialog.png"))
    dialog.reject()
    plugin.unload()
