"""QGIS entry points: initGui / unload. The dock and the controller are created on first use."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

MENU = "&CLIP Search"
ICON = str(Path(__file__).with_name("icon.svg"))


class ClipSearchPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.dock: Any = None
        self.controller: Any = None
        self.provider: Any = None
        self.setup_action: QAction | None = None
        self.setup_dialog: Any = None
        self.recent_errors: deque[str] = deque(maxlen=10)  # the last errors the plugin showed, for diagnostics

    def initProcessing(self) -> None:
        """Register the Processing algorithms (called by QGIS, also under qgis_process where iface is None)."""
        if self.provider is None:
            from qgis.core import QgsApplication

            from .processing.provider import ClipSearchProvider

            self.provider = ClipSearchProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        self.action = QAction(QIcon(ICON), "CLIP Search", self.iface.mainWindow())
        self.action.setObjectName("clipSearchAction")
        self.action.setCheckable(True)
        self.action.setToolTip("Search the active raster in plain language")
        self.action.toggled.connect(self.toggle_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.setup_action = QAction("Set up engine…", self.iface.mainWindow())
        self.setup_action.setObjectName("clipSearchSetupAction")
        self.setup_action.triggered.connect(self.open_setup)
        self.iface.addPluginToRasterMenu(MENU, self.setup_action)

    def toggle_dock(self, visible: bool) -> None:
        if self.dock is None:
            self._create_dock()
        self.dock.setVisible(visible)

    def _create_dock(self) -> None:
        from .control.controller import Controller
        from .ui.dock import ClipSearchDock

        self.dock = ClipSearchDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.controller = Controller(self.iface, self.dock, self.recent_errors)
        self.dock.settingsRequested.connect(self.open_settings)
        self.dock.setupRequested.connect(self.open_setup)
        self.dock.visibilityChanged.connect(self._dock_visibility)

    def _dock_visibility(self, visible: bool) -> None:
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)

    def open_settings(self) -> None:
        from .ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.controller.settings, self.iface.mainWindow())
        dialog.setupRequested.connect(lambda: self.open_setup(dialog))
        if dialog.exec_():
            self.controller.apply_settings(dialog.chosen())

    def open_setup(self, settings_dialog: Any = None) -> Any:
        """The Set up engine dialog (one at a time); a new engine becomes the one in use at once."""
        from .session.settings import PluginSettings
        from .ui.setup_dialog import SetupDialog

        if self.setup_dialog is None:
            settings = self.controller.settings if self.controller is not None else PluginSettings.load()
            self.setup_dialog = SetupDialog(settings.engine_python, self.iface.mainWindow(),
                                            recent_errors=self.recent_errors)
            self.setup_dialog.engineReady.connect(self._use_engine)
            self.setup_dialog.finished.connect(self._setup_closed)
        if settings_dialog is not None:
            self.setup_dialog.engineReady.connect(settings_dialog.set_engine_python)
        self.setup_dialog.show()
        self.setup_dialog.raise_()
        return self.setup_dialog

    def _setup_closed(self, _result: int) -> None:
        if self.setup_dialog is not None:
            self.setup_dialog.deleteLater()
            self.setup_dialog = None

    def _use_engine(self, python: str) -> None:
        from dataclasses import replace

        from .session.settings import PluginSettings

        if self.controller is not None:
            self.controller.apply_settings(replace(self.controller.settings, engine_python=python))
        else:
            replace(PluginSettings.load(), engine_python=python).save()

    def unload(self) -> None:
        if self.provider is not None:
            from qgis.core import QgsApplication

            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.controller is not None:
            self.controller.stop()
            self.controller.deleteLater()
            self.controller = None
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.setup_dialog is not None:
            self.setup_dialog.reject()  # cancels a set-up still running
        if self.setup_action is not None:
            self.iface.removePluginRasterMenu(MENU, self.setup_action)
            self.setup_action.deleteLater()
            self.setup_action = None
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
