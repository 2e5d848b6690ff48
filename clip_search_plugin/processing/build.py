"""The Processing algorithm Build CLIP index: tiles a raster (a file, a remote file, a web layer over an extent, or
several files or a folder of sheets as one collection) and embeds the tiles into an index folder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..engine.embedding.backends import CHOICES as BACKEND_CHOICES
from ..engine.embedding.models import DEFAULT_PRESET, PRESETS
from ..engine.requests import CollectRequest, IndexRequest
from ..engine.settings import ModelSpec, TilingSettings
from ..engine.sources.names import public_name
from ..session.settings import PluginSettings, parse_scales
from .algorithms import DEVICES, UNITS, ClipSearchAlgorithm, refused_as_processing_error
from .run import BUILD_WEIGHT, EngineRun
from .sources import COLLECTION, collection, engine_source, read_over


class BuildIndexAlgorithm(ClipSearchAlgorithm):
    SUMMARY = (
        "Cuts a raster into overlapping tiles, embeds each with a CLIP model and stores the vectors in an "
        "index folder, ready for Search CLIP index and Find similar. The model runs in the CLIP Search engine "
        "environment (set in the plugin's settings), on the GPU when there is one."
    )
    SOURCE_HELP: tuple[tuple[str, str], ...] = (
        ("Raster layer", "the raster to index: any file GDAL reads (GeoTIFF, JPEG2000, VRT…), a remote file "
         "(/vsicurl/…, e.g. a Cloud-Optimised GeoTIFF) or a web layer (XYZ, WMS, WMTS: give the Extent)."),
        ("Extent", "the area to index (any CRS: it is taken into the layer's). Needed for a web layer, which has "
         "no edges of its own; optional otherwise."),
        ("Resolution", "the size of a pixel to read at, in the units of the layer's CRS. Empty: the layer's own "
         "(an XYZ layer's finest zoom). Needed for a WMS layer, which draws at any scale."),
    )
    BUILD_HELP: tuple[tuple[str, str], ...] = (
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
        ("Backend", "how tiles are embedded: auto (the fastest way that gives the model's own vectors on this "
         "computer, checked on tiles of the raster first; on a CPU usually onnx-int8 for builds of 1,000 tiles or "
         "more), torch (the model itself), onnx, onnx-int8 or openvino. A backend whose vectors disagree is refused "
         "and the build says so."),
        ("Build on", "optional: empty to build in this process; local:N for N worker processes on this computer, "
         "or tcp://HOST:PORT for a running Dask scheduler (default: the plugin's settings). On a cluster the raster "
         "and the index folder must be on storage every worker reads and writes."),
        ("Index folder", "optional: where to write the index. Empty: the CLIP Search index folder (settings), "
         "where the dock finds it too."),
    )
    PARAM_HELP = SOURCE_HELP + BUILD_HELP

    def name(self) -> str:
        return "buildindex"

    def displayName(self) -> str:
        return "Build CLIP index"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        settings = PluginSettings.load()
        self.add_source_parameters()
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
        self.add(QgsProcessingParameterEnum("BACKEND", "Backend", list(BACKEND_CHOICES), defaultValue=0),
                 advanced=True)
        self.add(QgsProcessingParameterString("CLUSTER", "Build on", defaultValue=settings.cluster, optional=True),
                 advanced=True)
        self.add(QgsProcessingParameterFolderDestination(
            "OUTPUT", "Index folder", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputFolder("INDEX", "Built index folder"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles indexed"))

    def add_source_parameters(self) -> None:
        """What is indexed: a raster layer, over an extent, at a resolution."""
        self.add(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.add(QgsProcessingParameterExtent("EXTENT", "Extent", optional=True))
        self.add(QgsProcessingParameterNumber("RESOLUTION", "Resolution", QgsProcessingParameterNumber.Double, None,
                                              optional=True, minValue=0.0))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = PluginSettings.load()
        request, collect = self.index_request(parameters, context)
        shown = f"{len(collect.files)} files as one collection" if collect is not None else public_name(request.raster)
        feedback.pushInfo(f"Indexing {shown} with {request.model.name}…")
        mosaic = ""
        with EngineRun(settings, feedback, 1 + (collect is not None) + BUILD_WEIGHT, request.device) as engine:
            if collect is not None:
                mosaic = str(engine.call(collect)["path"])
                feedback.pushInfo(f"The collection's mosaic: {mosaic}")
                with refused_as_processing_error():
                    request = replace(request, raster=mosaic)
            result = engine.build(request, BUILD_WEIGHT)
        feedback.pushInfo(f"{result.tiles} tiles in {result.seconds:.1f} s with {result.model} "
                          f"(backend {result.backend}); index: {result.path}")
        if result.backend_note:
            feedback.pushWarning(result.backend_note)
        return {"INDEX": result.path, "TILES": result.tiles} | ({"MOSAIC": mosaic} if collect is not None else {})

    def index_request(self, parameters: dict[str, Any],
                      context: QgsProcessingContext) -> tuple[IndexRequest, CollectRequest | None]:
        """The ``index`` request of the parameters (the request, its model and its tiling check their values), and
        the ``collect`` request that comes first for several rasters (their mosaic is then what is indexed)."""
        scales_text = self.parameterAsString(parameters, "SCALES", context)
        try:
            scales = parse_scales(scales_text) or [1.0]
        except ValueError:
            raise QgsProcessingException(
                f"Scales must be numbers separated by spaces, e.g. 1 2 4; got {scales_text!r}."
            ) from None
        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context)
        weights = checkpoint or self.parameterAsString(parameters, "WEIGHTS", context) or None
        name = self.parameterAsString(parameters, "MODEL", context).strip() or ModelSpec().name
        with refused_as_processing_error():
            tiling = TilingSettings(
                tile_size=self.parameterAsDouble(parameters, "TILE_SIZE", context),
                tile_units=UNITS[self.parameterAsEnum(parameters, "TILE_UNITS", context)],
                overlap=self.parameterAsDouble(parameters, "OVERLAP", context),
                scales=tuple(scales),
            )
            raster, auth, collect, tiling = self.source(parameters, context, tiling)
            request = IndexRequest(
                raster, ModelSpec(name, weights), tiling,
                device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                output=self.parameterAsString(parameters, "OUTPUT", context), auth=auth,
                backend=BACKEND_CHOICES[self.parameterAsEnum(parameters, "BACKEND", context)],
                cluster=self.parameterAsString(parameters, "CLUSTER", context).strip() or None,
            )
        return request, collect

    def source(self, parameters: dict[str, Any], context: QgsProcessingContext,
               tiling: TilingSettings) -> tuple[str, dict[str, str] | None, CollectRequest | None, TilingSettings]:
        """What is indexed (the raster layer's source), its credentials, no collect request, and the tiling over
        the extent at the resolution."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        source = engine_source(layer)
        if source is None or layer is None:
            raise QgsProcessingException("Give the raster layer to index.")
        return source.text, source.auth, None, read_over(self, parameters, context, layer, source, tiling)


class BuildCollectionAlgorithm(BuildIndexAlgorithm):
    SUMMARY = (
        "Indexes several raster files in one CRS (layers, or every raster file in a folder: the sheets of an "
        "orthophoto, say) as one index: a mosaic of them is cut into tiles and embedded, and every search result "
        "says which file it lies on (its 'file' field). Search it with Search CLIP index (its index folder)."
    )
    PARAM_HELP = (
        ("Rasters", "two or more raster files in one CRS (sheets in another CRS are refused by name: reproject "
         "them first)."),
        ("Folder of sheets", "instead of the layers: every raster file directly in this folder."),
        ("Extent", "optional: index only this area of the layers (any CRS); not for a folder."),
        *BuildIndexAlgorithm.BUILD_HELP,
    )

    def name(self) -> str:
        return "buildcollection"

    def displayName(self) -> str:
        return "Build CLIP index of a collection"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        super().initAlgorithm(config)
        self.addOutput(QgsProcessingOutputFile("MOSAIC", "Collection mosaic (VRT)"))

    def add_source_parameters(self) -> None:
        self.add(QgsProcessingParameterMultipleLayers("LAYERS", "Rasters", QgsProcessing.TypeRaster, optional=True))
        self.add(QgsProcessingParameterFile("FOLDER", "Folder of sheets", QgsProcessingParameterFile.Folder,
                                            optional=True))
        self.add(QgsProcessingParameterExtent("EXTENT", "Extent", optional=True))

    def source(self, parameters: dict[str, Any], context: QgsProcessingContext,
               tiling: TilingSettings) -> tuple[str, dict[str, str] | None, CollectRequest | None, TilingSettings]:
        """The collection of the layers (made by a collect request first) or of the folder, and the tiling over
        the extent."""
        many = self.parameterAsLayerList(parameters, "LAYERS", context)
        folder = self.parameterAsFile(parameters, "FOLDER", context)
        if bool(many) == bool(folder):
            raise QgsProcessingException("Give the Rasters (two or more) or a Folder of sheets, one of them.")
        if folder:
            if parameters.get("EXTENT") not in (None, ""):
                raise QgsProcessingException("A folder of sheets is indexed whole: leave the Extent empty, or give "
                                             "the sheets as layers.")
            return folder, None, None, tiling
        collect = collection(many)
        source = engine_source(many[0])
        assert source is not None
        return COLLECTION, None, collect, read_over(self, parameters, context, many[0], source, tiling)
