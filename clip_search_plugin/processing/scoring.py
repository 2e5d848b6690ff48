"""Processing algorithms that score an index: Score heatmap (every tile against a query, as a raster) and Evaluate
search quality (searches scored against label polygons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..engine.requests import EvaluateRequest, ResultOptions, SearchRequest
from ..results import layers
from ..session.settings import PluginSettings
from .algorithms import INDEX_HELP, PROMPT_HELP, UNOPENED, ClipSearchAlgorithm, at_index, refused_as_processing_error
from .run import EngineRun, HeatmapStyle, load_as


class ScoreHeatmapAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Writes a raster of how well each place matches a text description: every tile of the index is scored "
        "and each cell keeps the best score of the tiles covering it. Band 1 is the relative score (standard "
        "deviations above the index's typical tile for the query: the same scale for every query), band 2 the "
        "cosine score. Cells are a quarter of the smallest tile; places no tile covers are no data."
    )
    PARAM_HELP = (
        *INDEX_HELP,
        ("Query", "what to map, in plain language, e.g. 'swimming pool'."),
        *PROMPT_HELP,
        ("Heatmap", "the GeoTIFF to write (or a temporary file)."),
    )

    def name(self) -> str:
        return "scoreheatmap"

    def displayName(self) -> str:
        return "Score heatmap"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.add_index_parameters()
        self.add(QgsProcessingParameterString("QUERY", "Query"))
        self.add_prompt_parameter()
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", "Heatmap"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = PluginSettings.load()
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(output).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"The heatmap is written as a GeoTIFF; choose a .tif file, not {output}.")
        lookup = self.lookup(parameters, context, settings)
        with refused_as_processing_error():
            search = SearchRequest(UNOPENED, self.parameterAsString(parameters, "QUERY", context),
                                   self.templates(parameters, context, settings),
                                   options=ResultOptions(top_k=1, heatmap=output))
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        with EngineRun(settings, feedback, 2 + self.lookup_steps(lookup)) as engine:
            info = self.open_index(lookup, feedback, engine)
            result = engine.search(at_index(search, info))
        feedback.pushInfo(f"Heatmap of {result.query!r}: index mean score {result.score_mean:.4f}, "
                          f"standard deviation {result.score_std:.4f}")
        if result.random_weights:
            feedback.pushWarning("This index uses random weights: the heatmap is meaningless.")
        load_as(context, output, layers.heatmap_name(result.query), HeatmapStyle())
        return {"OUTPUT": result.heatmap}


TEMPLATE_SET_CHOICES = ["aerial", "raw"]


class EvaluateAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Measures search quality on your own imagery: searches an indexed raster for each labelled class and "
        "scores the results against the label polygons. Per query and overall: precision and recall at k, "
        "average precision (mAP over queries) and nDCG@k, next to a random baseline (the index's tiles in "
        "random order). Writes results.csv (every query), results.md (means) and pr.png (precision-recall "
        "curves) into the output folder. A result is a hit when at least half of it lies on a label of the "
        "query's class and it finds a labelled object no better-ranked result found."
    )
    PARAM_HELP = (
        *INDEX_HELP,
        ("Label polygons", "a polygon layer with a class field, in any CRS (reprojected to the raster's)."),
        ("Class field", "the field holding each polygon's class."),
        ("Queries", "optional: one 'class = query' per line, e.g. 'pond = a small pond'; empty: each class "
         "name is searched for as it is."),
        ("Prompt sets", "compare searching with the aerial prompt templates and with the text as typed."),
        ("Number of results", "results (places) per query (at least the largest k)."),
        ("Minimum overlap", "the share of a result's area that must lie on a label of the query's class."),
        ("Output folder", "where results.csv, results.md and pr.png are written."),
    )

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return "Evaluate search quality"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.add_index_parameters()
        self.add(QgsProcessingParameterFeatureSource("LABELS", "Label polygons", [QgsProcessing.TypeVectorPolygon]))
        self.add(QgsProcessingParameterField("CLASS_FIELD", "Class field", "class", "LABELS"))
        self.add(QgsProcessingParameterString("QUERIES", "Queries", multiLine=True, optional=True))
        self.add(QgsProcessingParameterEnum("TEMPLATE_SETS", "Prompt sets", ["aerial prompt templates",
                                                                            "the query as typed"],
                                            allowMultiple=True, defaultValue=[0, 1]))
        self.add(QgsProcessingParameterNumber("TOP_K", "Number of results", QgsProcessingParameterNumber.Integer,
                                              20, minValue=1, maxValue=10_000))
        self.add(QgsProcessingParameterNumber("MIN_OVERLAP", "Minimum overlap", QgsProcessingParameterNumber.Double,
                                              0.5, minValue=0.01, maxValue=1.0), advanced=True)
        self.add(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.addOutput(QgsProcessingOutputFile("CSV", "Results table (CSV)"))
        self.addOutput(QgsProcessingOutputFile("MARKDOWN", "Summary (Markdown)"))
        self.addOutput(QgsProcessingOutputFile("PLOT", "Precision-recall plot (PNG)"))
        self.addOutput(QgsProcessingOutputNumber("MAP", "mAP of the first prompt set"))
        self.addOutput(QgsProcessingOutputNumber("RANDOM_MAP", "mAP of the random baseline"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = PluginSettings.load()
        labels = self.parameterAsCompatibleSourceLayerPath(
            parameters, "LABELS", context, ["gpkg", "shp", "geojson"], "gpkg", feedback)
        if not labels:
            raise QgsProcessingException(self.invalidSourceError(parameters, "LABELS"))
        lookup = self.lookup(parameters, context, settings)
        evaluation = self.evaluation(parameters, context, labels)
        Path(evaluation.output).mkdir(parents=True, exist_ok=True)
        with EngineRun(settings, feedback, 2 + self.lookup_steps(lookup)) as engine:
            info = self.open_index(lookup, feedback, engine)
            result = engine.call(at_index(evaluation, info))
        means = result["means"]
        for mean in means:
            feedback.pushInfo(f"{mean['templates']:>7} {mean['ranking']:>6}: mAP {mean['AP']:.3f}")
        if result.get("random_weights"):
            feedback.pushWarning("This index uses random weights: expect figures near the random baseline.")
        first = next(m for m in means if m["ranking"] == "mean")
        random = next(m for m in means if m["ranking"] == "random")
        files = result["files"]
        return {"OUTPUT_FOLDER": evaluation.output, "CSV": files["csv"], "MARKDOWN": files["markdown"],
                "PLOT": files["plot"], "MAP": first["AP"], "RANDOM_MAP": random["AP"]}

    def evaluation(self, parameters: dict[str, Any], context: QgsProcessingContext, labels: str) -> EvaluateRequest:
        """The ``evaluate`` request of the parameters (the k of the figures: 5, 10, 20 up to the number of results,
        and that number)."""
        top_k = self.parameterAsInt(parameters, "TOP_K", context)
        with refused_as_processing_error():
            return EvaluateRequest(
                UNOPENED, labels, self.parameterAsString(parameters, "OUTPUT_FOLDER", context),
                class_field=self.parameterAsString(parameters, "CLASS_FIELD", context),
                queries=self.parameterAsString(parameters, "QUERIES", context).strip() or None,
                template_sets=tuple(TEMPLATE_SET_CHOICES[i]
                                    for i in self.parameterAsEnums(parameters, "TEMPLATE_SETS", context)),
                top_k=top_k, ks=tuple(sorted({k for k in (5, 10, 20) if k <= top_k} | {top_k})),
                min_overlap=self.parameterAsDouble(parameters, "MIN_OVERLAP", context),
            )
