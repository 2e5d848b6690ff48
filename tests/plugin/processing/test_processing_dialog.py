"""The Processing dialogs of the algorithms in QGIS: parameters and help shown, runs with the progress bar moving,
results loaded as the dock shows its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsGraduatedSymbolRenderer, QgsProject
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QProgressBar, QTextBrowser

from ..conftest import ARTIFACTS, add_raster, wait_until


def test_search_dialog_shows_parameters_and_help(iface: Any, provider: Any) -> None:
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    add_raster("drone_rgba_alpha.tif")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("clipsearch:searchindex")
    dialog = AlgorithmDialog(algorithm, parent=iface.mainWindow())
    dialog.resize(900, 620)
    dialog.show()
    QTest.qWait(300)
    shown = " ".join(b.toPlainText() for b in dialog.findChildren(QTextBrowser))
    assert "one query per line" in shown and "Number of results" in shown
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(ARTIFACTS / "processing_search_dialog.png"))
    dialog.close()


def run_in_dialog(iface: Any, algorithm_id: str, parameters: dict[str, Any]) -> tuple[list[Any], list[int]]:
    """Fill in the dialog and press Run, as a user does (the algorithm runs in a background task); the layers
    loaded when it ends, and the values the dialog's progress bar showed meanwhile."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    dialog = AlgorithmDialog(algorithm, parent=iface.mainWindow())
    dialog.show()
    dialog.setParameters(parameters)
    shown: list[int] = []
    dialog.findChild(QProgressBar, "progressBar").valueChanged.connect(shown.append)
    finished: list[bool] = []
    dialog.algorithmFinished.connect(lambda ok, _results: finished.append(ok))
    before = set(QgsProject.instance().mapLayers())
    dialog.runAlgorithm()
    wait_until(lambda: finished, 300, f"{algorithm_id} to finish")
    assert finished == [True]
    dialog.close()
    return [layer for lid, layer in QgsProject.instance().mapLayers().items() if lid not in before], shown


def test_dialog_runs_show_progress_and_load_styled_results(iface: Any, provider: Any, tmp_path: Path) -> None:
    raster = add_raster("drone_rgba_alpha.tif")
    _, shown = run_in_dialog(iface, "clipsearch:buildindex", {
        "INPUT": raster, "MODEL": "tiny-random", "TILE_SIZE": 96, "DEVICE": 1, "OUTPUT": str(tmp_path / "index")})
    assert 100 in shown and len({v for v in shown if 0 < v < 100}) > 1, shown

    (layer,), shown = run_in_dialog(iface, "clipsearch:searchindex", {
        "INDEX": str(tmp_path / "index"), "QUERIES": "swimming pool\nparking lot", "TOP_K": 5,
        "OUTPUT": "TEMPORARY_OUTPUT"})
    assert 100 in shown and len({v for v in shown if 0 < v < 100}) >= 2, shown  # at least a step per query
    assert layer.name() == "CLIP: swimming pool; parking lot [random weights]"
    assert isinstance(layer.renderer(), QgsGraduatedSymbolRenderer) and layer.renderer().classAttribute() == "score"
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"
