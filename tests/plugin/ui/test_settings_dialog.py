"""The Settings dialog in real QGIS: what to fix is said, and the settings chosen are stored and used."""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDialogButtonBox

from ..conftest import ARTIFACTS, Loader


def test_settings_dialog_says_what_to_fix_and_stores_settings(iface: Any, engine_settings: Any, load: Loader) -> None:
    from clip_search_plugin.session.settings import PluginSettings

    plugin = load()
    seen: dict[str, Any] = {}

    def interact() -> None:
        dialog = QApplication.activeModalWidget()
        try:
            dialog.scales.setText("1 two")
            dialog.cluster.setText("my cluster")
            dialog.engine_python.setFilePath("/nonexistent/python")
            dialog.model.setCurrentText("RemoteCLIP-ViT-B-32")
            dialog.templates.setPlainText("an aerial photo of {}\na photo without a place for the query")
            seen["details"] = dialog.model_details.text()
            dialog.model.setCurrentText("GeoRSCLIP-ViT-H-14")
            seen["other details"] = dialog.model_details.text()

            dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok).click()
            seen["refused"] = dialog.isVisible()
            seen["problem"] = dialog.problem.text()
            dialog.scales.setText("1 2")
            dialog.cluster.setText(" tcp://127.0.0.1:8786 ")
            dialog.engine_python.setFilePath(engine_settings.engine_python)
            dialog.model.setCurrentText("tiny-random")
            dialog.templates.setPlainText("  an aerial photo of {}\n{} from above  ")
            dialog.tile_size.setValue(128)
            dialog.replace_results.setChecked(False)
            dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok).click()
        finally:
            if dialog.isVisible():
                dialog.reject()

    # a picture for the README: the dialog with the default settings, as a new user sees it
    from clip_search_plugin.ui.settings_dialog import SettingsDialog

    picture = SettingsDialog(PluginSettings(engine_python="/home/analyst/clip_search_plugin/.venv-engine/bin/python"))
    picture.resize(640, picture.sizeHint().height())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert picture.grab().save(str(ARTIFACTS / "settings_dialog.png"))
    picture.deleteLater()

    QTimer.singleShot(300, interact)
    plugin.dock.settingsButton.click()  # modal: returns when the dialog closes
    assert seen["refused"], "invalid settings were accepted"
    assert "Scales must be positive numbers" in seen["problem"] and "/nonexistent/python does not exist" in seen[
        "problem"]
    assert "Prompt template line 2" in seen["problem"]
    assert "Unknown cluster 'my cluster'" in seen["problem"] and "tcp://HOST:PORT" in seen["problem"]
    # each preset says where its weights come from, under what licence, and its published figures
    assert "RemoteCLIP-ViT-B-32" in seen["details"] and "chendelong/RemoteCLIP" in seen["details"]
    assert "Hugging Face Zilun/GeoRSCLIP" in seen["other details"] and "Licence: weights: 'cc'" in seen[
        "other details"] and "RSITMD 40.38" in seen["other details"]
    stored = PluginSettings.load()
    assert (stored.scales, stored.tile_size, stored.replace_results) == ("1 2", 128.0, False)
    assert stored.cluster == "tcp://127.0.0.1:8786"  # where Index layer builds from now on
    assert stored.templates == "an aerial photo of {}\n{} from above"
    assert stored.templates_param() == ["an aerial photo of {}", "{} from above"]
    assert stored.templates_param(False) == "raw"
    assert plugin.controller.settings == stored
    plugin.unload()
