"""Processing algorithms: Build CLIP index, Search CLIP index, Find similar, Score heatmap, Evaluate search
quality.

They send the same engine requests as the dock (``index``, ``locate``, ``search``, ``similar``, ``evaluate``), each run
through an engine process of its own, so they work in the Processing dialog, Model Builder, batch mode,
Python scripts and ``qgis_process`` (where there is no ``iface``).
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
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from . import layers
from .engine.models import DEFAULT_PRESET, PRESETS
from .engine_client import EngineClient, EngineUnavailable, raster_changed, searchable
from .plugin_settings import PluginSettings, parse_scales

ICON = str(Path(__file__).with_name("icon.svg"))
DEVICES = ["auto", "cpu", "cuda", "mps"]
UNITS = ["px", "m"]
Event = dict[str, Any]


def run_engine(
    settings: PluginSettings, requests: list[tuple[str, dict[str, Any]]], feedback: QgsProcessingFeedback | None,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Send ``requests`` in order to an engine process of this run's own; their results, or raise
    QgsProcessingException with the engine's message. Progress and log lines go to ``feedback``;
    cancelling in Processing cancels the running request and ends the process."""
    client = EngineClient(settings.engine_python, device or settings.device, extra_env=settings.engine_env())
    try:
        client.start()
    except EngineUnavailable as exc:
        raise QgsProcessingException(str(exc)) from exc
    results = []
    try:
        for number, (method, params) in enumerate(requests):

            def report(event: Event, number: int = number) -> None:
                if feedback is None:
                    return
                if event.get("event") == "progress" and event.get("total"):
                    feedback.setProgress(100.0 * (number + event["done"] / event["total"]) / len(requests))
                elif event.get("event") == "log":
                    feedback.pushDebugInfo(str(event.get("message", "")))

            answer = client.run(method, params, feedback.isCanceled if feedback is not None else None, report)
            if answer["event"] == "error":
                raise QgsProcessingException(answer["error"]["message"])
            results.append(answer["result"])
            if feedback is not None:
                feedback.setProgress(100.0 * (number + 1) / len(requests))
    finally:
        client.stop()
    return results


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
    """What the three algorithms share: group, icon, help, the index parameters and the results sink."""

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

    def index_folder(
        self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings,
        feedback: QgsProcessingFeedback,
    ) -> str:
        folder = self.parameterAsFile(parameters, "INDEX", context)
        if folder:
            return str(folder)
        raster = raster_file(self.parameterAsRasterLayer(parameters, "RASTER", context))
        if raster is None:
            raise QgsProcessingException("Give a raster layer that has been indexed, or an index folder.")
        params = {"raster": raster, "model": settings.model_params(), "tiling": settings.tiling_params()}
        (status,) = run_engine(settings, [("locate", params)], None)
        if searchable(status):
            feedback.pushInfo(f"Index: {status['path']} ({status['manifest'].get('model')})")
            return str(status["path"])
        if raster_changed(status):
            raise QgsProcessingException(
                f"{raster} changed since it was indexed; run Build CLIP index on it again."
            )
        raise QgsProcessingException(
            f"{raster} has no CLIP index yet; run Build CLIP index on it first (or give its index folder)."
        )

    # --- prompt templates ----------------------------------------------------------------------------------
    def add_prompt_parameter(self) -> None:
        self.add(QgsProcessingParameterEnum("PROMPTS", "Prompts", PROMPT_CHOICES, defaultValue=0))

    def templates_param(
        self, parameters: dict[str, Any], context: QgsProcessingContext, settings: PluginSettings
    ) -> str | list[str]:
        return settings.templates_param(self.parameterAsEnum(parameters, "PROMPTS", context) == 0)

    # --- results as features ---------------------------------------------------------------------------
    def add_results_parameters(self) -> None:
        top_k = QgsProcessingParameterNumber("TOP_K", "Number of best tiles", QgsProcessingParameterNumber.Integer,
                                             20, minValue=1, maxValue=100_000)
        self.add(top_k)
        self.add(QgsProcessingParameterNumber(
            "THRESHOLD", "Minimum score", QgsProcessingParameterNumber.Double, None, optional=True,
            minValue=-1.0, maxValue=1.0))
        self.add(QgsProcessingParameterBoolean("MERGE", "Merge overlapping tiles into regions", True))
        self.add(QgsProcessingParameterFeatureSink("OUTPUT", "Results", QgsProcessing.TypeVectorPolygon))

    def search_params(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        threshold = parameters.get("THRESHOLD")
        return {
            "top_k": self.parameterAsInt(parameters, "TOP_K", context),
            "threshold": None if threshold in (None, "") else self.parameterAsDouble(parameters, "THRESHOLD", context),
            "merge": self.parameterAsBool(parameters, "MERGE", context),
        }

    def write_results(
        self, parameters: dict[str, Any], context: QgsProcessingContext, results: list[dict[str, Any]],
        crs: QgsCoordinateReferenceSystem,
    ) -> dict[str, Any]:
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
                feature.setAttributes(layers.region_attributes(region, result["query"]))
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
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
    ("Number of best tiles", "how many best tiles to take (per query) before merging (default 20)."),
    ("Minimum score", "optional: leave out tiles whose cosine similarity is below this."),
    ("Merge overlapping tiles into regions", "off: one polygon per tile."),
    ("Results", "the polygon layer to write (any format QGIS writes, or a temporary layer)."),
)


def results_crs(results: list[dict[str, Any]]) -> QgsCoordinateReferenceSystem:
    wkt = next((r.get("crs_wkt") for r in results if r.get("crs_wkt")), None)
    return QgsCoordinateReferenceSystem.fromWkt(wkt) if wkt else QgsCoordinateReferenceSystem()


class BuildIndexAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Cuts a raster into overlapping tiles, embeds each with a CLIP model and stores the vectors in an "
        "index folder, ready for Search CLIP index and Find similar. The model runs in the CLIP Search engine "
        "environment (set in the plugin's settings), on the GPU when there is one."
    )
    PARAM_HELP = (
        ("Raster layer", "the raster to index: any file GDAL reads (GeoTIFF, JPEG2000, VRT…)."),
        ("Model", "a preset (" + ", ".join(PRESETS) + "), an open_clip architecture such as ViT-B-32, "
         "or hf-hub:ORG/NAME."),
        ("Weights", "optional: a weights tag of the architecture, or 'none' for random weights (tests only). "
         "Empty: the preset's weights."),
        ("Checkpoint file", "optional: a local open_clip checkpoint (.pt, .pth, .safetensors); it overrides "
         "Weights. Loaded safely: no code in it runs."),
        ("Tile size", "edge of the base tile, in the units below (default 224 pixels)."),
        ("Tile units", "pixels of the raster, or metres on the ground."),
        ("Overlap", "fraction of a tile shared with its neighbour (0 to 0.9, default 0.5)."),
        ("Scales", "multiples of the tile size, separated by spaces, e.g. '1 2 4' to find small and large "
         "things in one index."),
        ("Device", "auto (GPU when available), cpu, cuda or mps."),
        ("Index folder", "optional: where to write the index. Empty: the CLIP Search index folder (settings), "
         "where the dock finds it too."),
    )

    def name(self) -> str:
        return "buildindex"

    def displayName(self) -> str:
        return "Build CLIP index"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        settings = PluginSettings.load()
        self.add(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.add(QgsProcessingParameterString("MODEL", "Model", defaultValue=settings.model or DEFAULT_PRESET))
        self.add(QgsProcessingParameterString("WEIGHTS", "Weights", optional=True), advanced=True)
        self.add(QgsProcessingParameterFile(
            "CHECKPOINT", "Checkpoint file", optional=True,
            fileFilter="Checkpoints (*.pt *.pth *.bin *.safetensors);;All files (*)"), advanced=True)
        self.add(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size", QgsProcessingParameterNumber.Double, 224.0, minValue=1.0))
        self.add(QgsProcessingParameterEnum("TILE_UNITS", "Tile units", ["pixels", "metres"], defaultValue=0))
        self.add(QgsProcessingParameterNumber(
            "OVERLAP", "Overlap", QgsProcessingParameterNumber.Double, 0.5, minValue=0.0, maxValue=0.9))
        self.add(QgsProcessingParameterString("SCALES", "Scales", defaultValue="1"))
        self.add(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0), advanced=True)
        self.add(QgsProcessingParameterFolderDestination(
            "OUTPUT", "Index folder", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputFolder("INDEX", "Built index folder"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles indexed"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = PluginSettings.load()
        raster = raster_file(self.parameterAsRasterLayer(parameters, "INPUT", context))
        scales_text = self.parameterAsString(parameters, "SCALES", context)
        try:
            scales = parse_scales(scales_text) or [1.0]
        except ValueError:
            raise QgsProcessingException(
                f"Scales must be numbers separated by spaces, e.g. 1 2 4; got {scales_text!r}."
            ) from None
        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context)
        weights = checkpoint or self.parameterAsString(parameters, "WEIGHTS", context) or None
        device = DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]
        params: dict[str, Any] = {
            "raster": raster,
            "model": {"name": self.parameterAsString(parameters, "MODEL", context).strip(), "pretrained": weights},
            "tiling": {
                "tile_size": self.parameterAsDouble(parameters, "TILE_SIZE", context),
                "tile_units": UNITS[self.parameterAsEnum(parameters, "TILE_UNITS", context)],
                "overlap": self.parameterAsDouble(parameters, "OVERLAP", context),
                "scales": scales,
            },
            "device": device,
        }
        output = self.parameterAsString(parameters, "OUTPUT", context)
        if output:
            params["output"] = output
        feedback.pushInfo(f"Indexing {raster} with {params['model']['name']}…")
        (result,) = run_engine(settings, [("index", params)], feedback, device)
        feedback.pushInfo(
            f"{result['tiles']} tiles in {result['seconds']:.1f} s with {result['model']}; index: {result['path']}"
        )
        return {"INDEX": result["path"], "TILES": result["tiles"]}


class SearchIndexAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Finds the places that match a text description in an indexed raster. Each query returns its best "
        "tiles; overlapping tiles are merged into regions. The output has one polygon per region with its "
        "rank, score (cosine similarity), query, tile count and area, in the raster's CRS."
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
        index = self.index_folder(parameters, context, settings, feedback)
        common = {"index": index, **self.search_params(parameters, context),
                  "templates": self.templates_param(parameters, context, settings)}
        if parameters.get("MIN_RELATIVE") not in (None, ""):
            common["min_relative"] = self.parameterAsDouble(parameters, "MIN_RELATIVE", context)
        results = run_engine(settings, [("search", {**common, "query": q}) for q in queries], feedback)
        for result in results:
            feedback.pushInfo(f"{result['query']!r}: {len(result['regions'])} region(s)")
            if result.get("random_weights"):
                feedback.pushWarning("This index uses random weights: scores and ranks are meaningless.")
        return self.write_results(parameters, context, results, results_crs(results))


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
        index = self.index_folder(parameters, context, settings, feedback)
        (info,) = run_engine(settings, [("info", {"index": index})], None)
        crs = QgsCoordinateReferenceSystem.fromWkt(info["crs_wkt"]) if info.get("crs_wkt") else source.sourceCrs()
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
        params = {"index": index, "bbox": boxes, **self.search_params(parameters, context)}
        results = run_engine(settings, [("similar", params)], feedback)
        feedback.pushInfo(f"{len(results[0]['regions'])} region(s) similar to {len(boxes)} reference feature(s)")
        return self.write_results(parameters, context, results, crs if crs.isValid() else results_crs(results))


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
        query = self.parameterAsString(parameters, "QUERY", context).strip()
        if not query:
            raise QgsProcessingException("Give the text to map, e.g. 'swimming pool'.")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(output).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"The heatmap is written as a GeoTIFF; choose a .tif file, not {output}.")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        index = self.index_folder(parameters, context, settings, feedback)
        params = {"index": index, "query": query, "top_k": 1, "heatmap": output,
                  "templates": self.templates_param(parameters, context, settings)}
        (result,) = run_engine(settings, [("search", params)], feedback)
        feedback.pushInfo(f"Heatmap of {result['query']!r}: index mean score {result['score_mean']:.4f}, "
                          f"standard deviation {result['score_std']:.4f}")
        if result.get("random_weights"):
            feedback.pushWarning("This index uses random weights: the heatmap is meaningless.")
        return {"OUTPUT": result["heatmap"]}


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
        ("Number of best tiles", "results per query before merging (at least the largest k)."),
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
        self.add(QgsProcessingParameterNumber("TOP_K", "Number of best tiles", QgsProcessingParameterNumber.Integer,
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
        sets = [TEMPLATE_SET_CHOICES[i] for i in self.parameterAsEnums(parameters, "TEMPLATE_SETS", context)]
        if not sets:
            raise QgsProcessingException("Choose at least one prompt set.")
        top_k = self.parameterAsInt(parameters, "TOP_K", context)
        ks = sorted({k for k in (5, 10, 20) if k <= top_k} | {top_k})
        output = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
        Path(output).mkdir(parents=True, exist_ok=True)
        index = self.index_folder(parameters, context, settings, feedback)
        params = {
            "index": index, "labels": labels, "output": output,
            "class_field": self.parameterAsString(parameters, "CLASS_FIELD", context) or "class",
            "queries": self.parameterAsString(parameters, "QUERIES", context).strip() or None,
            "template_sets": sets, "top_k": top_k, "ks": ks,
            "min_overlap": self.parameterAsDouble(parameters, "MIN_OVERLAP", context),
        }
        (result,) = run_engine(settings, [("evaluate", params)], feedback)
        means = result["means"]
        for mean in means:
            feedback.pushInfo(f"{mean['templates']:>7} {mean['ranking']:>6}: mAP {mean['AP']:.3f}")
        if result.get("random_weights"):
            feedback.pushWarning("This index uses random weights: expect figures near the random baseline.")
        first = next(m for m in means if m["ranking"] == "mean")
        random = next(m for m in means if m["ranking"] == "random")
        files = result["files"]
        return {"OUTPUT_FOLDER": output, "CSV": files["csv"], "MARKDOWN": files["markdown"], "PLOT": files["plot"],
                "MAP": first["AP"], "RANDOM_MAP": random["AP"]}
