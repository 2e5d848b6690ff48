"""Processing algorithms: Search CLIP index and Find similar, and what all of the plugin's algorithms share (Build
CLIP index is in ``algorithms_build``, Score heatmap and Evaluate search quality in ``algorithms_scoring``).

They send the same engine requests as the dock (``index``, ``locate``, ``info``, ``search``, ``similar``,
``evaluate``), all of one run through one engine process of its own, so they work in the Processing dialog, Model
Builder, batch mode, Python scripts and ``qgis_process`` (where there is no ``iface``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from ..results import layers
from ..session.client import raster_changed, searchable
from ..session.settings import PluginSettings
from .run import EngineRun, ResultsStyle, load_as

ICON = str(Path(__file__).resolve().parent.parent / "icon.svg")
DEVICES = ["auto", "cpu", "cuda", "mps"]
UNITS = ["px", "m"]


def raster_file(layer: QgsRasterLayer | None) -> str | None:
    if layer is None:
        return None
    path = layers.raster_path(layer)
    if path is None:
        raise QgsProcessingException(
            f"{layer.name()} is a {layer.providerType()} layer; CLIP Search indexes raster files (GDAL formats)."
        )
    return path


def help_text(summary: str, parameters: tuple[tuple[str, str], ...]) -> str:
    items = "".join(f"<li><b>{name}</b>: {text}</li>" for name, text in parameters)
    return f"<p>{summary}</p><ul>{items}</ul>"


class ClipSearchAlgorithm(QgsProcessingAlgorithm):
    """What the algorithms share: group, icon, help, the index parameters and lookup, the results sink."""

    PARAM_HELP: tuple[tuple[str, str], ...] = ()
    SUMMARY = ""

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def shortHelpString(self) -> str:
        return help_text(self.SUMMARY, self.PARAM_HELP)

    def helpUrl(self) -> str:
        return "https://github.com/clip-search/clip_search_plugin#processing"

    def createInstance(self) -> ClipSearchAlgorithm:
        return type(self)()

    def add(self, parameter: QgsProcessingParameterDefinition, advanced: bool = False) -> None:
        described = dict(self.PARAM_HELP)
        if parameter.description() in described:
            parameter.setHelp(described[parameter.description()])
        if advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    # --- an index given as a raster layer or a folder ------------------------------------------------------
    def add_index_parameters(self) -> None:
        self.add(QgsProcessingParameterRasterLayer("RASTER", "Raster layer", optional=True))
        self.add(QgsProcessingParameterFile(
            "INDEX", "Index folder", behavior=QgsProcessingParameterFile.Folder, optional=True))

    def lookup_steps(self, parameters: dict[str, Any], context: QgsProcessingContext) -> int:
        """Engine requests open_index makes: the raster's index is located first, an index folder only opened."""
        return 1 if self.parameterAsFile(parameters, "INDEX", context) else 2

    def open_index(
        self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings,
        feedback: QgsProcessingFeedback, engine: EngineRun,
    ) -> dict[str, Any]:
        """The index's description (``info``: path, CRS, model, random weights), found from the raster layer
        with the plugin's settings or given as a folder, and opened in ``engine`` (it stays open for the run)."""
        folder = self.parameterAsFile(parameters, "INDEX", context)
        if not folder:
            raster = raster_file(self.parameterAsRasterLayer(parameters, "RASTER", context))
            if raster is None:
                raise QgsProcessingException("Give a raster layer that has been indexed, or an index folder.")
            params = {"raster": raster, "model": settings.model_params(), "tiling": settings.tiling_params()}
            status = engine.call("locate", params)
            if raster_changed(status):
                raise QgsProcessingException(
                    f"{raster} changed since it was indexed; run Build CLIP index on it again."
                )
            if not searchable(status):
                raise QgsProcessingException(
                    f"{raster} has no CLIP index yet; run Build CLIP index on it first (or give its index folder)."
                )
            folder = str(status["path"])
        info = engine.call("info", {"index": str(folder)})
        feedback.pushInfo(f"Index: {info['path']} ({info.get('model')})")
        return info

    # --- prompt templates ----------------------------------------------------------------------------------
    def add_prompt_parameter(self) -> None:
        self.add(QgsProcessingParameterEnum("PROMPTS", "Prompts", PROMPT_CHOICES, defaultValue=0))

    def templates_param(
        self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings
    ) -> str | list[str]:
        return settings.templates_param(self.parameterAsEnum(parameters, "PROMPTS", context) == 0)

    # --- results as features ---------------------------------------------------------------------------
    def add_results_parameters(self) -> None:
        top_k = QgsProcessingParameterNumber("TOP_K", "Number of results", QgsProcessingParameterNumber.Integer,
                                             20, minValue=1, maxValue=100_000)
        self.add(top_k)
        self.add(QgsProcessingParameterNumber(
            "THRESHOLD", "Minimum score", QgsProcessingParameterNumber.Double, None, optional=True,
            minValue=-1.0, maxValue=1.0))
        self.add(QgsProcessingParameterBoolean("MERGE", "Merge overlapping tiles into regions", True))
        self.add(QgsProcessingParameterBoolean("RERANK", "Re-rank with look-alikes", True), advanced=True)
        self.add(QgsProcessingParameterFeatureSink("OUTPUT", "Results", QgsProcessing.TypeVectorPolygon))

    def search_params(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        threshold = parameters.get("THRESHOLD")
        return {
            "top_k": self.parameterAsInt(parameters, "TOP_K", context),
            "threshold": None if threshold in (None, "") else self.parameterAsDouble(parameters, "THRESHOLD", context),
            "merge": self.parameterAsBool(parameters, "MERGE", context),
            "rerank": self.parameterAsBool(parameters, "RERANK", context),
        }

    def write_results(
        self, parameters: dict[str, Any], context: QgsProcessingContext, results: list[dict[str, Any]],
        info: dict[str, Any], title: str, query: str | None = None,
    ) -> dict[str, Any]:
        """Write the regions with the dock's fields (``query``, when given, in place of each result's) in the CRS
        of the index ``info`` describes; loaded when the run ends, the layer is named after ``title`` and styled
        as the dock's."""
        crs = index_crs(info)
        fields = QgsFields()
        for field in layers.result_fields():
            fields.append(field)
        sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, fields, QgsWkbTypes.MultiPolygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        for result in results:
            for region in result["regions"]:
                feature = QgsFeature(fields)
                feature.setGeometry(layers.polygon_geometry(region["geometry"]))
                feature.setAttributes(layers.region_attributes(region, query or result["query"]))
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
        load_as(context, dest, layers.layer_name(title, bool(info.get("random_weights"))), ResultsStyle())
        return {"OUTPUT": dest}


PROMPT_CHOICES = ["Prompt templates (the aerial set, or your own from the plugin settings)", "The query as typed"]
PROMPT_HELP = (
    ("Prompts", "search with the average of the query put into each prompt template (more robust), or with "
     "the text exactly as typed."),
)
INDEX_HELP = (
    ("Raster layer", "an indexed raster: its index with the plugin's current model and tiling settings, or "
     "else its most recent index. Or leave it empty and give the index folder."),
    ("Index folder", "an index folder written by Build CLIP index (used instead of the raster layer)."),
)
RESULTS_HELP = (
    ("Number of results", "how many results (places) per query, best first (default 20); fewer when the index "
     "(or the area, or the minimum score) leaves fewer separate places."),
    ("Minimum score", "optional: leave out tiles whose cosine similarity is below this."),
    ("Merge overlapping tiles into regions", "on: a result is a best tile and the matching tiles overlapping it; "
     "off: one polygon per tile."),
    ("Re-rank with look-alikes", "on (default): each tile is scored together with the tiles that look most like "
     "it (its mutual nearest neighbours in the index), which gives better results for common and rare things "
     "alike; off: tiles are ranked by their own score only."),
    ("Results", "the polygon layer to write (any format QGIS writes, or a temporary layer)."),
)


def ranking_note(result: dict[str, Any]) -> str:
    """How the engine ranked a search's tiles, for the log."""
    return ", re-ranked with look-alikes" if result.get("reranked") else ", ranked by each tile's own score"


def index_crs(info: dict[str, Any]) -> QgsCoordinateReferenceSystem:
    """The CRS of an index's raster (none for a raster without georeference)."""
    wkt = info.get("crs_wkt")
    return QgsCoordinateReferenceSystem.fromWkt(wkt) if wkt else QgsCoordinateReferenceSystem()


class SearchIndexAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Finds the places that match a text description in an indexed raster. Each query returns its best "
        "results: a result is a best tile and the matching tiles that overlap it. The output has one polygon "
        "per result with its rank, score (cosine similarity), query, tile count and area (on the ground), in "
        "the raster's CRS."
    )
    PARAM_HELP = (
        *INDEX_HELP,
        ("Queries", "what to find, in plain language, one query per line, e.g. 'swimming pool'. Add 'but not …' "
         "to push results away from something."),
        *PROMPT_HELP,
        *RESULTS_HELP,
        ("Minimum relative score", "optional: leave out tiles less than this many standard deviations above the "
         "index's typical tile for the query (the same scale for every query; 2 to 3 is a clear match)."),
    )

    def name(self) -> str:
        return "searchindex"

    def displayName(self) -> str:
        return "Search CLIP index"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.add_index_parameters()
        self.add(QgsProcessingParameterString("QUERIES", "Queries", multiLine=True))
        self.add_prompt_parameter()
        self.add_results_parameters()
        self.add(QgsProcessingParameterNumber(
            "MIN_RELATIVE", "Minimum relative score", QgsProcessingParameterNumber.Double, None, optional=True,
            minValue=-10.0, maxValue=100.0), advanced=True)

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = PluginSettings.load()
        queries = [q.strip() for q in self.parameterAsString(parameters, "QUERIES", context).splitlines()]
        queries = [q for q in queries if q]
        if not queries:
            raise QgsProcessingException("Give at least one query, e.g. 'swimming pool' (one per line).")
        common = {**self.search_params(parameters, context),
                  "templates": self.templates_param(parameters, context, settings)}
        if parameters.get("MIN_RELATIVE") not in (None, ""):
            common["min_relative"] = self.parameterAsDouble(parameters, "MIN_RELATIVE", context)
        steps = 1 + self.lookup_steps(parameters, context) + len(queries)
        with EngineRun(settings, feedback, steps) as engine:
            info = self.open_index(parameters, context, settings, feedback, engine)
            results = []
            for query in queries:  # one request each: the progress bar moves query by query
                results.append(engine.call("search", {**common, "index": info["path"], "query": query}))
                feedback.pushInfo(f"{results[-1]['query']!r}: {len(results[-1]['regions'])} region(s)"
                                  f"{ranking_note(results[-1])}")
        if info.get("random_weights"):
            feedback.pushWarning("This index uses random weights: scores and ranks are meaningless.")
        return self.write_results(parameters, context, results, info, "; ".join(queries))


class FindSimilarAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Finds places that look like reference features, e.g. a few hand-drawn examples or results of an "
        "earlier search. The imagery inside each reference feature's bounding box is embedded and the "
        "average is searched for; tiles touching the references themselves are left out."
    )
    PARAM_HELP = (
        *INDEX_HELP,
        ("Reference features", "features whose imagery is the example (any geometry; their bounding boxes are "
         "used). Tick 'Selected features only' to use the selection."),
        *RESULTS_HELP,
    )

    def name(self) -> str:
        return "findsimilar"

    def displayName(self) -> str:
        return "Find similar"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.add_index_parameters()
        self.add(QgsProcessingParameterFeatureSource("REFERENCE", "Reference features"))
        self.add_results_parameters()

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = PluginSettings.load()
        source = self.parameterAsSource(parameters, "REFERENCE", context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "REFERENCE"))
        with EngineRun(settings, feedback, 2 + self.lookup_steps(parameters, context)) as engine:
            info = self.open_index(parameters, context, settings, feedback, engine)
            results = [engine.call("similar", self.similar_params(info, source, context, parameters))]
        title = f"like {self.reference_name(parameters, context)}"
        feedback.pushInfo(f"{len(results[0]['regions'])} region(s) {title}{ranking_note(results[0])}")
        return self.write_results(parameters, context, results, info, title, title)

    def reference_name(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """The reference layer's name (a file's: its name), for the output's name."""
        layer = self.parameterAsVectorLayer(parameters, "REFERENCE", context)
        return layer.name() if layer is not None and layer.name() else "the reference features"

    def similar_params(
        self, info: dict[str, Any], source: Any, context: QgsProcessingContext, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        """The ``similar`` request: the bounding boxes of the reference features in the index's CRS."""
        crs = index_crs(info)
        transform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
        boxes = []
        for feature in source.getFeatures():
            if not feature.hasGeometry():
                continue
            geometry = feature.geometry()
            if crs.isValid() and source.sourceCrs().isValid():
                geometry.transform(transform)
            box = geometry.boundingBox()
            if box.width() > 0 and box.height() > 0:
                boxes.append([box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()])
        if not boxes:
            raise QgsProcessingException("The reference layer has no features with an area (or none are selected).")
        return {"index": info["path"], "bbox": boxes, **self.search_params(parameters, context)}
