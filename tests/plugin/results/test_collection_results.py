"""Results of a collection (an index of several files) in real QGIS: each says which file it lies on, in the
results layer's optional ``file`` field and in the dock's File column; results of one raster have neither."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsCoordinateReferenceSystem
from qgis.PyQt.QtCore import QCoreApplication, QEvent

from clip_search_plugin.engine.answers import SearchAnswer
from clip_search_plugin.results import layers
from clip_search_plugin.ui.dock import FILE_COLUMN, ClipSearchDock


def region(rank: int, file: str | None) -> dict[str, Any]:
    square = [[[rank, 0], [rank + 1, 0], [rank + 1, 1], [rank, 1], [rank, 0]]]
    found = {"rank": rank, "score": 0.3 - rank / 100, "relative": 2.0, "geometry": {"type": "Polygon",
             "coordinates": square}, "area": 1.0, "area_units": "m2", "tile_count": 1, "members": []}
    return found | ({"file": file} if file else {})


def answer(regions: list[dict[str, Any]]) -> SearchAnswer:
    return SearchAnswer(query="a roof", model="tiny", random_weights=True, crs_wkt="", seconds=0.1, regions=regions,
                        score_mean=0.1, score_std=0.1, requested=20, fewer=True, searched_tiles=9,
                        below_threshold=False, reranked=True)


def test_results_of_a_collection_say_which_file_each_lies_on(iface: Any) -> None:
    crs = QgsCoordinateReferenceSystem("EPSG:26913")
    sheets = [region(1, "sheet_r00_c00.tif"), region(2, "sheet_r01_c01.tif")]
    layer = layers.build_results_layer(answer(sheets), crs, "raster-id")
    assert layer.fields().names()[-1] == "file"
    assert [f["file"] for f in layer.getFeatures()] == ["sheet_r00_c00.tif", "sheet_r01_c01.tif"]
    single = layers.build_results_layer(answer([region(1, None)]), crs, "raster-id")
    assert "file" not in single.fields().names()
    dock = ClipSearchDock(iface.mainWindow())
    try:
        dock.show_results(sheets)
        table = dock.resultsTable
        assert not table.isColumnHidden(FILE_COLUMN)
        assert table.horizontalHeaderItem(FILE_COLUMN).text() == "File"
        assert table.item(1, FILE_COLUMN).text() == "sheet_r01_c01.tif"
        assert table.item(1, 0).toolTip() == "From sheet_r01_c01.tif"
        dock.show_results([region(1, None)])
        assert table.isColumnHidden(FILE_COLUMN)
    finally:
        dock.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
