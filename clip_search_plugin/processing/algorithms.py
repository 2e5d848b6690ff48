"""Processing algorithms: Search CLIP index and Find similar, and what all of the plugin's algorithms share (Build
CLIP index is in ``algorithms_build``, Score heatmap and Evaluate search quality in ``algorithms_scoring``).

They send the same typed engine requests as the dock (:mod:`..engine.requests`: ``index``, ``locate``, ``info``,
``search``, ``similar``, ``evaluate``), all of one run through one engine session of its own, so they work in the
Processing dialog, Model Builder, batch mode, Python scripts and ``qgis_process`` (where there is no ``iface``).
Requests are made from the parameters before the engine starts where they can be, so a refused value is said at
once; a request's refusal (:class:`InputError`) is the run's error, in the same words.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

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
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from ..engine.answers import InfoAnswer, SearchAnswer
from ..engine.errors import InputError
from ..engine.request_values import Templates
from ..engine.requests import (
    EvaluateRequest,
    InfoRequest,
    LocateRequest,
    ResultOptions,
    SearchRequest,
    SimilarRequest,
)
from ..engine.sources.names import public_name
from ..results import layers
from ..session.settings import PluginSettings
from .run import EngineRun, ResultsStyle, load_as
from .sources import engine_source

ICON = str(Path(__file__).resolve().parent.parent / "icon.svg")
DEVICES = ["auto", "cpu", "cuda", "mps"]
UNITS = ["px", "m"]
# the index a request made before the engine starts names, until open_index has found it (see at_index)
UNOPENED = "(the index, once opened)"
Lookup = LocateRequest | InfoRequest
IndexedRequest = TypeVar("IndexedRequest", SearchRequest, EvaluateRequest)


@contextmanager
def refused_as_processing_error() -> Iterator[None]:
    """A request refusing a value (InputError) while made in here: the run's error, in the same words."""
    try:
        yield
    except InputError as exc:
        raise QgsProcessingException(str(exc)) from None


def at_index(request: IndexedRequest, info: InfoAnswer) -> IndexedRequest:
    """``request`` (made before the engine started) for the index ``info`` describes."""
    return replace(request, index=info.path)


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

    def lookup(self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings) -> Lookup:
        """The first request open_index sends: ``info`` of the index folder given, else ``locate`` of the raster
        layer's index with the plugin's model and tiling settings."""
        folder = self.parameterAsFile(parameters, "INDEX", context)
        with refused_as_processing_error():
            if folder:
                return InfoRequest(folder)
            source = engine_source(self.parameterAsRasterLayer(parameters, "RASTER", context))
            if source is None:
                raise QgsProcessingException("Give a raster layer that has been indexed, or an index folder.")
            return LocateRequest(source.text, settings.model_spec(), settings.tiling(), auth=source.auth)

    @staticmethod
    def lookup_steps(lookup: Lookup) -> int:
        """Engine requests open_index makes: the raster's index is located first, an index folder only opened."""
        return 2 if isinstance(lookup, LocateRequest) else 1

    @staticmethod
    def open_index(lookup: Lookup, feedback: QgsProcessingFeedback, engine: EngineRun) -> InfoAnswer:
        """The index's description (``info``: path, CRS, model, random weights), found from the raster layer
        or given as a folder (``lookup``), and opened in ``engine`` (it stays open for the run)."""
        if isinstance(lookup, LocateRequest):
            status = engine.locate(lookup)
            if status.raster_changed:
                raise QgsProcessingException(
                    f"{public_name(lookup.raster)} changed since it was indexed; run Build CLIP index on it again."
                )
            if not status.searchable:
                raise QgsProcessingException(f"{public_name(lookup.raster)} has no CLIP index yet; run Build CLIP "
                                             "index on it first (or give its index folder).")
            lookup = InfoRequest(status.path)
        info = engine.info(lookup)
        feedback.pushInfo(f"Index: {info.path} ({info.model})")
        return info

    # --- prompt templates ----------------------------------------------------------------------------------
    def add_prompt_parameter(self) -> None:
        self.add(QgsProcessingParameterEnum("PROMPTS", "Prompts", PROMPT_CHOICES, defaultValue=0))

    def templates(
        self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings
    ) -> Templates:
        """The chosen prompts: the plugin's templates (the aerial set unless the user has their own), or "raw"."""
        chosen = settings.templates_param(self.parameterAsEnum(parameters, "PROMPTS", context) == 0)
        return tuple(chosen) if isinstance(chosen, list) else chosen

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

    def result_options(self, parameters: dict[str, Any], context: QgsProcessingContext,
                       min_relative: float | None = None) -> ResultOptions:
        """The results parameters as a search's options (InputError for a value they refuse)."""
        threshold = parameters.get("THRESHOLD")
        return ResultOptions(
            top_k=self.parameterAsInt(parameters, "TOP_K", context),
            threshold=None if threshold in (None, "") else self.parameterAsDouble(parameters, "THRESHOLD", context),
            min_relative=min_relative,
            merge=self.parameterAsBool(parameters, "MERGE", context),
            rerank=self.parameterAsBool(parameters, "RERANK", context),
        )

    def write_results(
        self, parameters: dict[str, Any], context: QgsProcessingContext, results: list[SearchAnswer],
        info: InfoAnswer, title: str, query: str | None = None,
    ) -> dict[str, Any]:
        """Write the regions with the dock's fields (``query``, when given, in place of each result's) in the CRS
        of the index ``info`` describes; loaded when the run ends, the layer is named after ``title`` and styled
        as the dock's."""
        crs = index_crs(info)
        files = any(layers.has_files(result.regions) for result in results)  # a collection: each result's file
        fields = QgsFields()
        for field in layers.result_fields(files):
            fields.append(field)
        sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, fields, QgsWkbTypes.MultiPolygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        for result in results:
            for region in result.regions:
                feature = QgsFeature(fields)
                feature.setGeometry(layers.polygon_geometry(region["geometry"]))
                feature.setAttributes(layers.region_attributes(region, query or result.query, files))
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
        load_as(context, dest, layers.layer_name(title, info.random_weights), ResultsStyle())
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


def index_crs(info: InfoAnswer) -> QgsCoordinateReferenceSystem:
    """The CRS of an index's raster (none for a raster without georeference)."""
    wkt = info.crs_wkt
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
        lookup = self.lookup(parameters, context, settings)
        searches = self.searches(parameters, context, settings)
        with EngineRun(settings, feedback, 1 + self.lookup_steps(lookup) + len(searches)) as engine:
            info = self.open_index(lookup, feedback, engine)
            results = []
            for search in searches:  # one request each: the progress bar moves query by query
                results.append(engine.search(at_index(search, info)))
                feedback.pushInfo(f"{results[-1].query!r}: {len(results[-1].regions)} region(s)"
                                  f"{results[-1].ranking_note()}")
        if info.random_weights:
            feedback.pushWarning("This index uses random weights: scores and ranks are meaningless.")
        return self.write_results(parameters, context, results, info, "; ".join(s.label for s in searches))

    def searches(
        self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings
    ) -> list[SearchRequest]:
        """A search request for each line of the queries that has text (each checks its own query)."""
        lines = [line for line in self.parameterAsString(parameters, "QUERIES", context).splitlines() if line.strip()]
        if not lines:
            raise QgsProcessingException("Give at least one query, e.g. 'swimming pool' (one per line).")
        min_relative = parameters.get("MIN_RELATIVE")
        with refused_as_processing_error():
            options = self.result_options(parameters, context, None if min_relative in (None, "") else
                                          self.parameterAsDouble(parameters, "MIN_RELATIVE", context))
            templates = self.templates(parameters, context, settings)
            return [SearchRequest(UNOPENED, line, templates, options=options) for line in lines]


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
        lookup = self.lookup(parameters, context, settings)
        with refused_as_processing_error():
            options = self.result_options(parameters, context)
        with EngineRun(settings, feedback, 2 + self.lookup_steps(lookup)) as engine:
            info = self.open_index(lookup, feedback, engine)
            results = [engine.search(self.similar_request(info, source, context, options))]
        title = f"like {self.reference_name(parameters, context)}"
        feedback.pushInfo(f"{len(results[0].regions)} region(s) {title}{results[0].ranking_note()}")
        return self.write_results(parameters, context, results, info, title, title)

    def reference_name(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """The reference layer's name (a file's: its name), for the output's name."""
        layer = self.parameterAsVectorLayer(parameters, "REFERENCE", context)
        return layer.name() if layer is not None and layer.name() else "the reference features"

    @staticmethod
    def similar_request(
        info: InfoAnswer, source: Any, context: QgsProcessingContext, options: ResultOptions
    ) -> SimilarRequest:
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
                boxes.append((box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()))
        if not boxes:
            raise QgsProcessingException("The reference layer has no features with an area (or none are selected).")
        with refused_as_processing_error():
            return SimilarRequest(info.path, bbox=tuple(boxes), options=options)
