"""Settings dialog: model, device, tiling, engine Python, cache folder, result layers."""

from __future__ import annotations

from dataclasses import replace

from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QWidget,
)

from .engine.models import PRESETS
from .plugin_settings import PluginSettings


class SettingsDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("CLIP Search settings")
        self._settings = settings
        form = QFormLayout(self)
        self.model = QComboBox()
        self.model.setEditable(True)
        for name, preset in PRESETS.items():
            self.model.addItem(name)
            self.model.setItemData(self.model.count() - 1, preset.description, 3)  # tooltip role
        self.model.setCurrentText(settings.model)
        self.pretrained = QLineEdit(settings.pretrained)
        self.pretrained.setPlaceholderText("weights tag, checkpoint file, or empty for the preset's")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setCurrentText(settings.device)
        self.tile_size = QDoubleSpinBox()
        self.tile_size.setRange(1, 100_000)
        self.tile_size.setValue(settings.tile_size)
        self.tile_units = QComboBox()
        self.tile_units.addItems(["px", "m"])
        self.tile_units.setCurrentText(settings.tile_units)
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.9)
        self.overlap.setSingleStep(0.05)
        self.overlap.setValue(settings.overlap)
        self.scales = QLineEdit(settings.scales)
        self.scales.setToolTip("Multiples of the tile size, separated by spaces, e.g. 1 2 4")
        self.engine_python = QLineEdit(settings.engine_python)
        self.cache_folder = QLineEdit(settings.cache_folder)
        self.cache_folder.setPlaceholderText("default: the user cache folder")
        self.replace_results = QCheckBox("Replace the previous results of a raster")
        self.replace_results.setChecked(settings.replace_results)
        for label, widget in (
            ("Model", self.model),
            ("Weights", self.pretrained),
            ("Device", self.device),
            ("Tile size", self.tile_size),
            ("Tile units", self.tile_units),
            ("Overlap", self.overlap),
            ("Scales", self.scales),
            ("Engine Python", self.engine_python),
            ("Index folder", self.cache_folder),
            ("", self.replace_results),
        ):
            form.addRow(label, widget)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def chosen(self) -> PluginSettings:
        return replace(
            self._settings,
            model=self.model.currentText().strip(),
            pretrained=self.pretrained.text().strip(),
            device=self.device.currentText(),
            tile_size=self.tile_size.value(),
            tile_units=self.tile_units.currentText(),
            overlap=self.overlap.value(),
            scales=self.scales.text(),
            engine_python=self.engine_python.text().strip(),
            cache_folder=self.cache_folder.text().strip(),
            replace_results=self.replace_results.isChecked(),
        )
