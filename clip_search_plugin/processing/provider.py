"""The CLIP Search Processing provider (Processing Toolbox, Model Builder, batch mode, qgis_process)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import FindSimilarAlgorithm, SearchIndexAlgorithm
from .build import BuildCollectionAlgorithm, BuildIndexAlgorithm
from .scoring import EvaluateAlgorithm, ScoreHeatmapAlgorithm


class ClipSearchProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "clipsearch"

    def name(self) -> str:
        return "CLIP Search"

    def longName(self) -> str:
        return "CLIP Search: search aerial imagery in plain language"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).resolve().parent.parent / "icon.svg"))

    def loadAlgorithms(self) -> None:
        for algorithm in (BuildIndexAlgorithm(), BuildCollectionAlgorithm(), SearchIndexAlgorithm(),
                          FindSimilarAlgorithm(), ScoreHeatmapAlgorithm(), EvaluateAlgorithm()):
            self.addAlgorithm(algorithm)
