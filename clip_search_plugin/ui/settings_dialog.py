"""Settings dialog: model, device, tiling, engine Python, cache folder, result layers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from ..engine.embedding.presets import PRESETS
from ..engine.errors import InputError
from ..engine.query.templates import AERIAL_TEMPLATES, parse_templates
from ..session.client import EngineUnavailable, check_engine_python
from ..session.settings import PluginSettings, parse_scales


def file_widget(path: str, mode: int, placeholder: str = "", filters: str = "") -> QgsFileWidget:
    widget = QgsFileWidget()
    widget.setStorageMode(mode)
    widget.setFilePath(path)
    widget.setFilter(filters)
    widget.lineEdit().setPlaceholderText(placeholder)
    return widget


class SettingsDialog(QDialog):
    setupRequested = pyqtSignal()

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
        self.model_details = QLabel()
        self.model_details.setWordWrap(True)
        self.model_details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # never squeezed below the height its wrapped lines need (the dialog grows instead)
        self.model_details.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        self.model.currentTextChanged.connect(self._show_model_details)
        self._show_model_details(settings.model)
        self.pretrained = file_widget(
            settings.pretrained, QgsFileWidget.GetFile, "empty for the preset's weights; a tag or a checkpoint file",
            "Checkpoints (*.pt *.pth *.bin *.safetensors);;All files (*)",
        )
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
        self.engine_python = file_widget(
            settings.engine_python, QgsFileWidget.GetFile, "e.g. …/.venv-engine/bin/python"
        )
        self.engine_python.setToolTip(
            "The Python of the engine environment (made by Set up engine, `make env`, or a venv with "
            "requirements-engine.txt)."
        )
        self.setup_button = QPushButton("Set up engine…")
        self.setup_button.setToolTip("Make the engine's own environment for this computer, or check the one in use.")
        self.setup_button.clicked.connect(self.setupRequested)
        self.cache_folder = file_widget(
            settings.cache_folder, QgsFileWidget.GetDirectory, "default: the user cache folder"
        )
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b00020;")
        self.problem.setVisible(False)
        self.problem.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        self.replace_results = QCheckBox("Replace the previous results of a raster")
        self.replace_results.setChecked(settings.replace_results)
        self.templates = QPlainTextEdit(settings.templates)
        self.templates.setPlaceholderText(
            "Empty: the built-in aerial set:\n" + "\n".join(AERIAL_TEMPLATES)
        )
        self.templates.setToolTip(
            "Prompt templates, one per line, each with {} where the query goes. The query vector is the "
            "average of the templates' text embeddings. Empty: the built-in aerial set."
        )
        self.templates.setMinimumHeight(90)
        for label, widget in (
            ("Model", self.model),
            ("", self.model_details),
            ("Weights", self.pretrained),
            ("Device", self.device),
            ("Tile size", self.tile_size),
            ("Tile units", self.tile_units),
            ("Overlap", self.overlap),
            ("Scales", self.scales),
            ("Engine Python", self.engine_python),
            ("", self.setup_button),
            ("Index folder", self.cache_folder),
            ("Prompt templates", self.templates),
            ("", self.replace_results),
            ("", self.problem),
        ):
            form.addRow(label, widget)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _show_model_details(self, name: str) -> None:
        preset = PRESETS.get(name.strip())
        if preset is None:
            self.model_details.setText("An open_clip architecture (e.g. ViT-B-32) or hf-hub:ORG/NAME; give its "
                                       "weights below as a tag or a checkpoint file.")
        else:
            self.model_details.setText(preset.details())
        self._fit()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._fit()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit()  # narrower: the wrapped lines need more height

    def _fit(self) -> None:
        """Grow the dialog when the text it shows needs more height than it has (never shrink it)."""
        layout = self.layout()
        if layout is None:
            return
        layout.activate()
        needed = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else self.sizeHint().height()
        if needed > self.height():
            self.resize(self.width(), needed)

    def problems(self) -> list[str]:
        """What must be fixed before these settings can be used (empty when they are fine)."""
        found = []
        if not self.model.currentText().strip():
            found.append("Choose a model.")
        try:
            check_engine_python(self.engine_python.filePath().strip())
        except EngineUnavailable as exc:
            found.append(str(exc))
        try:
            scales = parse_scales(self.scales.text())
        except ValueError:
            scales = []
        if not scales or any(v <= 0 for v in scales):
            found.append("Scales must be positive numbers separated by spaces, e.g. 1 2 4.")
        weights = self.pretrained.filePath().strip()
        if ("/" in weights or "\\" in weights) and not Path(weights).is_file():
            found.append(f"The checkpoint file {weights} does not exist.")
        if self.templates.toPlainText().strip():
            try:
                parse_templates(self.templates.toPlainText())
            except InputError as exc:
                found.append(str(exc))
        folder = self.cache_folder.filePath().strip()
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            found.append(f"The index folder {folder} is a file; choose a folder.")
        return found

    def accept(self) -> None:
        found = self.problems()
        self.problem.setText("\n".join(found))
        self.problem.setVisible(bool(found))
        if not found:
            super().accept()
        else:
            self._fit()

    def chosen(self) -> PluginSettings:
        return replace(
            self._settings,
            model=self.model.currentText().strip(),
            pretrained=self.pretrained.filePath().strip(),
            device=self.device.currentText(),
            tile_size=self.tile_size.value(),
            tile_units=self.tile_units.currentText(),
            overlap=self.overlap.value(),
            scales=self.scales.text(),
            engine_python=self.engine_python.filePath().strip(),
            cache_folder=self.cache_folder.filePath().strip(),
            replace_results=self.replace_results.isChecked(),
            templates=self.templates.toPlainText().strip(),
        )

    def set_engine_python(self, python: str) -> None:
        """A set-up made a new engine while this dialog was open: show it here too."""
        self.engine_python.setFilePath(python)
