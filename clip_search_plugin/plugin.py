"""QGIS entry points: initGui / unload. The dock and the controller are created on first use."""

from __future__ import annotations

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

    def initProcessing(self) -> None:
        """Register the Processing algorithms (called by QGIS, also under qgis_process where iface is None)."""
        if self.provider is None:
            from qgis.core import QgsApplication

            from .provider import ClipSearchProvider

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

    def toggle_dock(self, visible: bool) -> None:
        if self.dock is None:
            self._create_dock()
        self.dock.setVisible(visible)

    def _create_dock(self) -> None:
        from .controller import Controller
        from .dock import ClipSearchDock

        self.dock = ClipSearchDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.controller = Controller(self.iface, self.dock)
        self.dock.settingsRequested.connect(self.open_settings)
        self.dock.visibilityChanged.connect(self._dock_visibility)

    def _dock_visibility(self, visible: bool) -> None:
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.controller.settings, self.iface.mainWindow())
        if dialog.exec_():
            self.controller.apply_settings(dialog.chosen())

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
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
