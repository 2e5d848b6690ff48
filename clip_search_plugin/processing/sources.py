"""What the algorithms read: a raster layer (a file, a remote file or a web layer, by the dock's one rule), an
extent and a resolution for web layers, or several raster files or a folder of sheets as one collection.

Each refusal is the run's error (QgsProcessingException) in words that name the parameter to give.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsRasterLayer,
    QgsUnitTypes,
)

from ..engine.requests import CollectRequest
from ..engine.settings import TilingSettings
from ..engine.sources.names import WMS
from ..results.sources import LayerSource, SourceRefused, layer_source

COLLECTION = "(the collection, once made)"  # the raster an index request names until collect has made it


def engine_source(layer: QgsRasterLayer | None) -> LayerSource | None:
    """What the engine reads for ``layer`` (None for no layer); the run's error for a layer it cannot read."""
    if layer is None:
        return None
    try:
        return layer_source(layer)
    except SourceRefused as exc:
        raise QgsProcessingException(str(exc)) from None


def optional_number(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], name: str,
                    context: QgsProcessingContext) -> float | None:
    """A number parameter left empty (or 0) as None."""
    if parameters.get(name) in (None, ""):
        return None
    value = algorithm.parameterAsDouble(parameters, name, context)
    return value if value > 0 else None


def read_over(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext,
              layer: QgsRasterLayer, source: LayerSource, tiling: TilingSettings) -> TilingSettings:
    """``tiling`` over the EXTENT (any CRS, taken into the layer's) at the RESOLUTION (the layer's CRS units).
    A web layer has no edges of its own, so it needs the extent; a WMS draws at any scale, so also the resolution."""
    has_extent = parameters.get("EXTENT") not in (None, "")
    resolution = optional_number(algorithm, parameters, "RESOLUTION", context)
    if source.is_web and not has_extent:
        raise QgsProcessingException(f"{layer.name()} is a web layer, which has no edges of its own: give the Extent "
                                     "to index (in any CRS: it is taken into the layer's).")
    if source.kind == WMS and resolution is None:
        unit = QgsUnitTypes.toString(layer.crs().mapUnits())
        raise QgsProcessingException(f"{layer.name()} is a WMS layer, which draws at any scale: give the Resolution "
                                     f"to read it at (the size of a pixel, in {unit} of {layer.crs().authid()}).")
    if not has_extent:
        return replace(tiling, resolution=resolution)
    box = algorithm.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
    if box.isEmpty():
        raise QgsProcessingException("The Extent is empty; give an area with a width and a height.")
    return replace(tiling, area=(box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()),
                   resolution=resolution)


def collection(layers: list[Any]) -> CollectRequest:
    """The ``collect`` request of several raster file layers (one CRS: the engine refuses others by name)."""
    files = []
    for layer in layers:
        source = engine_source(layer)
        if source is None or not source.is_local:
            raise QgsProcessingException(f"{layer.name()} is not a raster file; a collection is made of raster files "
                                         "(GeoTIFF, JPEG 2000 …) on this computer.")
        files.append(source.text)
    if len(files) < 2:
        raise QgsProcessingException("Give two or more raster layers to index as one collection (or one Raster "
                                     "layer).")
    label = f"{layers[0].name()}_and_{len(files) - 1}_more"
    return CollectRequest(tuple(files), label)
