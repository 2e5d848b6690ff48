"""The Processing algorithm Build CLIP index: tiles a raster and embeds the tiles into an index folder."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..engine.embedding.models import DEFAULT_PRESET, PRESETS
from ..engine.requests import IndexRequest
from ..engine.settings import ModelSpec, TilingSettings
from ..session.settings import PluginSettings, parse_scales
from .algorithms import DEVICES, UNITS, ClipSearchAlgorithm, raster_file, refused_as_processing_error
from .run import BUILD_WEIGHT, EngineRun


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
        request = self.index_request(parameters, context)
        feedback.pushInfo(f"Indexing {request.raster} with {request.model.name}…")
        with EngineRun(settings, feedback, 1 + BUILD_WEIGHT, request.device) as engine:
            result = engine.build(request, BUILD_WEIGHT)
        feedback.pushInfo(f"{result.tiles} tiles in {result.seconds:.1f} s with {result.model}; index: {result.path}")
        return {"INDEX": result.path, "TILES": result.tiles}

    def index_request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> IndexRequest:
        """The ``index`` request of the parameters (the request, its model and its tiling check their values)."""
        raster = raster_file(self.parameterAsRasterLayer(parameters, "INPUT", context)) or ""  # "": refused below
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
            return IndexRequest(
                raster, ModelSpec(name, weights), tiling,
                device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                output=self.parameterAsString(parameters, "OUTPUT", context),
            )
