"""Settings dialog: model, device, tiling, engine Python, cache folder, where builds run, result layers. Its
widgets come from settings_dialog.ui; the text labels (model details, problems) never get squeezed below the
height their wrapped lines need: the dialog grows instead."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QDialog, QWidget

from ..engine import request_values as values
from ..engine.embedding.presets import PRESETS
from ..engine.errors import InputError
from ..engine.query.templates import AERIAL_TEMPLATES, parse_templates
from ..session.client import EngineUnavailable, check_engine_python
from ..session.settings import PluginSettings, parse_scales

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("settings_dialog.ui")))


class SettingsDialog(QDialog, FORM):  # type: ignore[misc, valid-type]
    setupRequested = pyqtSignal()

    def __init__(self, settings: PluginSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self._settings = settings
        for name, preset in PRESETS.items():
            self.model.addItem(name)
            self.model.setItemData(self.model.count() - 1, preset.description, Qt.ToolTipRole)
        self.pretrained.lineEdit().setPlaceholderText("empty for the preset's weights; a tag or a checkpoint file")
        self.engine_python.lineEdit().setPlaceholderText("e.g. …/.venv-engine/bin/python")
        self.cache_folder.lineEdit().setPlaceholderText("default: the user cache folder")
        self.cluster.setPlaceholderText("empty: this computer; local:N; tcp://HOST:PORT")
        self.templates.setPlaceholderText("Empty: the built-in aerial set:\n" + "\n".join(AERIAL_TEMPLATES))
        self._show_settings(settings)
        self.model_details.setText(model_details(settings.model))
        self.model.currentTextChanged.connect(self._show_model_details)
        self.setup_button.clicked.connect(self.setupRequested)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

    def _show_settings(self, settings: PluginSettings) -> None:
        self.model.setCurrentText(settings.model)
        self.pretrained.setFilePath(settings.pretrained)
        self.device.setCurrentText(settings.device)
        self.backend.setCurrentText(settings.backend)
        self.tile_size.setValue(settings.tile_size)
        self.tile_units.setCurrentText(settings.tile_units)
        self.overlap.setValue(settings.overlap)
        self.scales.setText(settings.scales)
        self.engine_python.setFilePath(settings.engine_python)
        self.cache_folder.setFilePath(settings.cache_folder)
        self.cluster.setText(settings.cluster)
        self.replace_results.setChecked(settings.replace_results)
        self.templates.setPlainText(settings.templates)

    def _show_model_details(self, name: str) -> None:
        self.model_details.setText(model_details(name))
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
        try:
            values.cluster(self.cluster.text())
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
            backend=self.backend.currentText(),
            tile_size=self.tile_size.value(),
            tile_units=self.tile_units.currentText(),
            overlap=self.overlap.value(),
            scales=self.scales.text(),
            engine_python=self.engine_python.filePath().strip(),
            cache_folder=self.cache_folder.filePath().strip(),
            cluster=self.cluster.text().strip(),
            replace_results=self.replace_results.isChecked(),
            templates=self.templates.toPlainText().strip(),
        )

    def set_engine_python(self, python: str) -> None:
        """A set-up made a new engine while this dialog was open: show it here too."""
        self.engine_python.setFilePath(python)


def model_details(name: str) -> str:
    """What the settings say about a model: a preset's details, or how to give another model's weights."""
    preset = PRESETS.get(name.strip())
    if preset is None:
        return ("An open_clip architecture (e.g. ViT-B-32) or hf-hub:ORG/NAME; give its weights below as a tag or a "
                "checkpoint file.")
    return preset.details()
