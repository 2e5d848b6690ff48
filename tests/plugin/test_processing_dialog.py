"""The Processing dialog of Search CLIP index opens in QGIS with its parameters and help."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QTextBrowser

from .conftest import ARTIFACTS, add_raster


def test_search_dialog_shows_parameters_and_help(iface: Any, provider: Any) -> None:
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    add_raster("drone_rgba_alpha.tif")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("clipsearch:searchindex")
    dialog = AlgorithmDialog(algorithm, parent=iface.mainWindow())
    dialog.resize(900, 620)
    dialog.show()
    QTest.qWait(300)
    shown = " ".join(b.toPlainText() for b in dialog.findChildren(QTextBrowser))
    assert "one query per line" in shown and "Number of best tiles" in shown
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(ARTIFACTS / "processing_search_dialog.png"))
    dialog.close()
