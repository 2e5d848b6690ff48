"""The CLIP Search dock: widgets from dock.ui, signals out, view updates in. No logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayer, QgsMapLayerProxyModel, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt import uic
from qgis.PyQt.QtCore import QModelIndex, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QDockWidget, QHeaderView, QTableWidgetItem, QWidget

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("dock.ui")))

AREA_WHOLE, AREA_VISIBLE, AREA_SELECTED, AREA_DRAWN = 0, 1, 2, 3
FILE_COLUMN = 6  # results of a collection: the file each lies on (hidden otherwise)
SCOPE_ALL, SCOPE_VISIBLE = 0, 1


class ClipSearchDock(QDockWidget, FORM):  # type: ignore[misc, valid-type]
    layerChanged = pyqtSignal(object)  # QgsRasterLayer or None
    indexRequested = pyqtSignal(int)  # AREA_*
    cancelRequested = pyqtSignal()
    searchRequested = pyqtSignal(str)
    resultSelected = pyqtSignal(int)  # rank
    zoomAllRequested = pyqtSignal()
    moreLikeThisRequested = pyqtSignal(int)  # rank
    exportRequested = pyqtSignal()
    settingsRequested = pyqtSignal()
    pickToggled = pyqtSignal(bool)
    drawExampleToggled = pyqtSignal(bool)
    drawAreaToggled = pyqtSignal(bool)  # the box Index layer covers (AREA_DRAWN)
    markChanged = pyqtSignal(int, int)  # rank, +1 relevant / -1 not relevant / 0 unmarked
    refineRequested = pyqtSignal()
    setupRequested = pyqtSignal()
    chooseWeightsRequested = pyqtSignal()
    copyAddressRequested = pyqtSignal()
    randomWeightsRequested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("ClipSearchDock")
        self.layerCombo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.polygonLayerCombo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        header = self.resultsTable.horizontalHeader()
        for column in range(FILE_COLUMN + 1):  # every column as wide as its contents: the Area column is never cut off
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        self._rows: list[int] = []
        self.layerCombo.layerChanged.connect(lambda layer: self.layerChanged.emit(self.raster_layer()))
        self.indexButton.clicked.connect(lambda: self.indexRequested.emit(self.index_area_mode()))
        self.cancelButton.clicked.connect(self.cancelRequested)
        self.queryEdit.returnPressed.connect(self._emit_search)
        self.searchButton.clicked.connect(self._emit_search)
        self.thresholdCheck.toggled.connect(self.thresholdSpin.setEnabled)
        self.indexAreaCombo.currentIndexChanged.connect(self._area_changed)
        self.resultsTable.itemSelectionChanged.connect(self._row_selected)
        self.zoomAllButton.clicked.connect(self.zoomAllRequested)
        self.moreLikeButton.clicked.connect(self._emit_more_like)
        self.exportButton.clicked.connect(self.exportRequested)
        self.settingsButton.clicked.connect(self.settingsRequested)
        self.setupEngineButton.clicked.connect(self.setupRequested)
        self.pickButton.toggled.connect(self.pickToggled)
        self.drawExampleButton.toggled.connect(self.drawExampleToggled)
        self.drawAreaButton.toggled.connect(self.drawAreaToggled)
        self.relevantButton.clicked.connect(lambda: self._toggle_mark(1))
        self.irrelevantButton.clicked.connect(lambda: self._toggle_mark(-1))
        self.refineButton.clicked.connect(self.refineRequested)
        self.chooseWeightsButton.clicked.connect(self.chooseWeightsRequested)
        self.copyAddressButton.clicked.connect(self.copyAddressRequested)
        self.randomWeightsButton.clicked.connect(self.randomWeightsRequested)
        self._marks: dict[int, int] = {}
        self._resolution_units = ""
        self._web = False
        self.set_web_layer(False)
        self._area_changed(self.indexAreaCombo.currentIndex())
        self.show_results([])

    # --- what the user asked for -------------------------------------------------------------------
    def raster_layer(self) -> QgsRasterLayer | None:
        """The raster the dock works on (None when none is chosen)."""
        layer = self.layerCombo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def is_current_raster(self, layer_id: str) -> bool:
        """Whether the layer of ``layer_id`` is the dock's raster now (answers for other rasters are not shown)."""
        current = self.raster_layer()
        return current is not None and current.id() == layer_id

    def set_raster_layer(self, layer: QgsRasterLayer | None) -> None:
        """Make ``layer`` the dock's raster (layerChanged follows when it is another one)."""
        self.layerCombo.setLayer(layer)

    def hide_layers(self, layers: list[QgsMapLayer]) -> None:
        """Leave ``layers`` out of the raster list (the plugin's own output, e.g. heatmaps)."""
        self.layerCombo.setExceptedLayerList(layers)

    def index_area_mode(self) -> int:
        """What Index layer covers: AREA_WHOLE, AREA_VISIBLE, AREA_SELECTED or AREA_DRAWN."""
        return int(self.indexAreaCombo.currentIndex())

    def index_resolution(self) -> float | None:
        """The resolution a web layer is read at (its CRS's units a pixel); None: Auto."""
        value = float(self.resolutionSpin.value())
        return value if value > 0 and self._web else None

    def polygon_layer(self) -> QgsVectorLayer | None:
        """The polygon layer whose selected polygons Index layer covers (AREA_SELECTED)."""
        layer = self.polygonLayerCombo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def search_options(self) -> dict[str, Any]:
        return {
            "top_k": self.topKSpin.value(),
            "min_relative": self.thresholdSpin.value() if self.thresholdCheck.isChecked() else None,
            "visible_only": self.scopeCombo.currentIndex() == SCOPE_VISIBLE,
            "templates": self.templatesCheck.isChecked(),
            "heatmap": self.heatmapCheck.isChecked(),
            "rerank": self.rerankCheck.isChecked(),
        }

    def selected_rank(self) -> int | None:
        rows = self.resultsTable.selectionModel().selectedRows()
        return self._rows[rows[0].row()] if rows and rows[0].row() < len(self._rows) else None

    def _emit_search(self) -> None:
        self.searchRequested.emit(self.queryEdit.text())

    def _emit_more_like(self) -> None:
        rank = self.selected_rank()
        if rank is not None:
            self.moreLikeThisRequested.emit(rank)

    def _row_selected(self) -> None:
        rank = self.selected_rank()
        for button in (self.moreLikeButton, self.relevantButton, self.irrelevantButton):
            button.setEnabled(rank is not None)
        if rank is not None:
            self.resultSelected.emit(rank)

    def _toggle_mark(self, mark: int) -> None:
        rank = self.selected_rank()
        if rank is None:
            return
        new = 0 if self._marks.get(rank) == mark else mark
        self.markChanged.emit(rank, new)

    def show_marks(self, marks: dict[int, int]) -> None:
        """Show the relevance marks (rank -> +1 / -1) in the Mark column."""
        self._marks = dict(marks)
        for row, rank in enumerate(self._rows):
            mark = marks.get(rank, 0)
            item = QTableWidgetItem({1: "✓", -1: "✗", 0: ""}[mark])
            item.setToolTip({1: "marked relevant", -1: "marked not relevant", 0: ""}[mark])
            item.setTextAlignment(int(Qt.AlignCenter))
            self.resultsTable.setItem(row, 5, item)
        self.refineButton.setEnabled(any(marks.values()))

    def _area_changed(self, index: int) -> None:
        self.polygonLayerCombo.setVisible(index == AREA_SELECTED)
        self.polygonLayerLabel.setVisible(index == AREA_SELECTED)
        self.drawAreaButton.setVisible(index == AREA_DRAWN)
        if index != AREA_DRAWN and self.drawAreaButton.isChecked():
            self.drawAreaButton.setChecked(False)

    def set_web_layer(self, web: bool, units: str = "", decimals: int = 3) -> None:
        """A web layer is the dock's raster (or not): it has no edges, so Whole layer is not offered, and the
        resolution to read it at is (in ``units`` of its CRS)."""
        self._web = web
        whole = self.indexAreaCombo.model().item(AREA_WHOLE)
        whole.setEnabled(not web)
        whole.setToolTip("A web layer has no edges of its own: choose the area to index." if web else "")
        if web and self.indexAreaCombo.currentIndex() == AREA_WHOLE:
            self.indexAreaCombo.setCurrentIndex(AREA_VISIBLE)
        self.resolutionLabel.setVisible(web)
        self.resolutionSpin.setVisible(web)
        if web and units != self._resolution_units:  # another CRS's units: Auto again
            self.resolutionSpin.setDecimals(decimals)
            self.resolutionSpin.setSuffix(f" {units}" if units else "")
            self.resolutionSpin.setValue(0.0)
            self._resolution_units = units

    def set_area_drawn(self, text: str) -> None:
        """Say what box was drawn ("" when none is)."""
        self.drawAreaButton.setText(f"{text} (draw again)" if text else "Draw the box on the map")

    # --- showing state -------------------------------------------------------------------------------
    def set_status(self, text: str, engine_missing: bool = False) -> None:
        """The status line; ``engine_missing`` offers Set up engine under it."""
        self.statusLabel.setText(text)
        self.setupEngineButton.setVisible(engine_missing)

    def show_weights_problem(self, text: str, address: bool) -> None:
        """What is missing for the model to load, with what the user can do about it (no command lines)."""
        self.weightsLabel.setText(text)
        self.copyAddressButton.setVisible(address)
        self.weightsFrame.setVisible(True)

    def hide_weights_problem(self) -> None:
        self.weightsFrame.setVisible(False)

    def set_query(self, text: str) -> None:
        self.queryEdit.setText(text)

    def set_indexing(self, running: bool) -> None:
        self.indexButton.setEnabled(not running)
        self.cancelButton.setEnabled(running)
        self.progressBar.setVisible(running)
        if running:
            self.progressBar.setValue(0)

    def set_progress(self, percent: float) -> None:
        self.progressBar.setValue(int(percent))

    def set_searching(self, running: bool) -> None:
        self.searchButton.setEnabled(not running)
        self.searchButton.setText("Searching…" if running else "Search")

    def show_results(self, regions: list[dict[str, Any]]) -> None:
        """Fill the table with ``regions``; no row is chosen afterwards (a new list starts unchosen)."""
        table = self.resultsTable
        table.blockSignals(True)
        table.clearSelection()
        table.setCurrentIndex(QModelIndex())
        table.setRowCount(len(regions))
        self._rows = [int(r["rank"]) for r in regions]
        decimals = score_decimals([float(r["score"]) for r in regions])
        for row, region in enumerate(regions):
            relative = region.get("relative")
            values = (str(region["rank"]), f"{region['score']:.{decimals}f}",
                      "" if relative is None else f"{relative:.1f}", str(region["tile_count"]), area_text(region))
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                if region.get("file"):
                    item.setToolTip(f"From {region['file']}")
                table.setItem(row, column, item)
            table.setItem(row, FILE_COLUMN, QTableWidgetItem(str(region.get("file") or "")))
        table.setColumnHidden(FILE_COLUMN, not any(region.get("file") for region in regions))
        table.blockSignals(False)
        table.scrollToTop()
        has = bool(regions)
        self.zoomAllButton.setEnabled(has)
        self.exportButton.setEnabled(has)
        for button in (self.moreLikeButton, self.relevantButton, self.irrelevantButton, self.refineButton):
            button.setEnabled(False)
        self.show_marks({})

    def set_picking(self, active: bool) -> None:
        """Show whether the pick tool is the canvas's tool, without emitting pickToggled."""
        self.pickButton.blockSignals(True)
        self.pickButton.setChecked(active)
        self.pickButton.blockSignals(False)

    def set_drawing(self, active: bool) -> None:
        """Show whether the example rectangle tool is the canvas's tool, without emitting drawExampleToggled."""
        self.drawExampleButton.blockSignals(True)
        self.drawExampleButton.setChecked(active)
        self.drawExampleButton.blockSignals(False)

    def set_drawing_area(self, active: bool) -> None:
        """Show whether the area box tool is the canvas's tool, without emitting drawAreaToggled."""
        self.drawAreaButton.blockSignals(True)
        self.drawAreaButton.setChecked(active)
        self.drawAreaButton.blockSignals(False)

    def select_rank(self, rank: int) -> None:
        """Select the row of ``rank`` without emitting resultSelected again."""
        if rank in self._rows:
            self.resultsTable.blockSignals(True)
            self.resultsTable.selectRow(self._rows.index(rank))
            self.resultsTable.blockSignals(False)
            for button in (self.moreLikeButton, self.relevantButton, self.irrelevantButton):
                button.setEnabled(True)


def score_decimals(scores: list[float], least: int = 3, most: int = 6) -> int:
    """Decimals that tell the scores apart (models with weak contrast give scores that differ only in the
    fourth or fifth decimal): the fewest from ``least`` at which distinct scores still read differently."""
    distinct = len(set(scores))
    for decimals in range(least, most + 1):
        if len({f"{s:.{decimals}f}" for s in scores}) == distinct:
            return decimals
    return most


def area_text(region: dict[str, Any]) -> str:
    """A region's area for people: m² below a hectare, hectares below 100 km², else km²; px² without georeference."""
    area = float(region["area"])
    if region["area_units"] != "m2":
        return f"{area:,.0f} px²"
    if area < 10_000:
        return f"{area:,.0f} m²"
    if area < 100_000_000:
        return f"{area / 10_000:,.2f} ha"
    return f"{area / 1_000_000:,.1f} km²"
