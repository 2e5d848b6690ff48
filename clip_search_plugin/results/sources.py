"""What the engine is given for a QGIS raster layer: the one rule, for the dock and Processing alike.

A layer is read by the engine as its source string: a local file's path (a VRT too), a remote file GDAL reads
(``/vsicurl/https://…``), or exactly ``layer.source()`` of a web layer (the ``wms`` provider's XYZ, WMS and WMTS
layers). Layers the engine cannot read (ArcGIS MapServer, PostGIS rasters, virtual rasters…) are refused with what
to do instead. A layer's ``authcfg`` is resolved here, through QGIS's authentication manager, into the credentials
the engine keeps in memory (``auth``); what is shown of a source (messages, logs) is its public name, without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from qgis.core import QgsApplication, QgsAuthMethodConfig

from ..engine.errors import InputError
from ..engine.sources.names import ARCGIS, FILE, FOLDER, XYZ, SourceName, read_source

ARCGIS_PROVIDERS = ("arcgismapserver", "arcgisfeatureserver")
ARCGIS_ADVICE = ("CLIP Search cannot read ArcGIS MapServer layers yet. If the service is cached, add it as an XYZ "
                 "layer with the address …/MapServer/tile/{z}/{y}/{x}, and index that.")
AUTHCFG = re.compile(r"(?:^|[&|\s])authcfg='?(\w+)'?")


class SourceRefused(ValueError):
    """The engine cannot read this layer; the message says why and what to do instead."""


@dataclass(frozen=True)
class LayerSource:
    """A raster layer as the engine reads it: the source string, how it reads, and its credentials (memory only)."""

    text: str  # what the engine is given (may hold credentials: never shown)
    name: SourceName  # the source, read
    auth: dict[str, str] | None = field(default=None, repr=False)  # from the layer's authcfg

    @property
    def kind(self) -> str:
        return self.name.kind

    @property
    def is_web(self) -> bool:
        """A web layer (XYZ, WMS, WMTS): it has no edges of its own, so a build needs an area."""
        return self.name.is_web

    @property
    def is_local(self) -> bool:
        return self.name.kind in (FILE, FOLDER)

    @property
    def is_xyz(self) -> bool:
        return self.name.kind == XYZ

    @property
    def public(self) -> str:
        """The source without credentials: what a message or a log may say."""
        return self.name.public()


def layer_source(layer: Any, with_auth: bool = True) -> LayerSource:
    """What the engine reads for ``layer``; SourceRefused (saying what to do instead) for a layer it cannot read.
    ``with_auth``: its authcfg resolved too (which may ask for QGIS's master password)."""
    provider, name = layer.providerType(), layer.name()
    if provider in ARCGIS_PROVIDERS:
        raise SourceRefused(f"{name} is an ArcGIS MapServer layer. {ARCGIS_ADVICE}")
    if provider not in ("gdal", "wms"):
        raise SourceRefused(f"{name} is a {provider} layer, which CLIP Search cannot read: it indexes raster files "
                            "(GeoTIFF and other GDAL formats), remote files (Cloud-Optimised GeoTIFF) and web layers "
                            "(XYZ, WMS, WMTS). Save the layer as a GeoTIFF (Export ▸ Save As…) to index it.")
    source = str(layer.source())
    text = source.split("|")[0] if provider == "gdal" else source
    try:
        read = read_source(text)
    except InputError as exc:
        raise SourceRefused(f"{name}: {exc}") from None
    if read.kind == ARCGIS:
        raise SourceRefused(f"{name} is an ArcGIS MapServer layer. {ARCGIS_ADVICE}")
    return LayerSource(text, read, layer_auth(source, name) if with_auth else None)


def layer_auth(source: str, name: str) -> dict[str, str] | None:
    """The credentials of the layer's ``authcfg`` (QGIS's authentication manager), as the engine takes them."""
    found = AUTHCFG.search(source)
    if found is None:
        return None
    config = QgsAuthMethodConfig()
    manager = QgsApplication.authManager()
    if not manager.loadAuthenticationConfig(found.group(1), config, True) or not config.isValid(True):
        raise SourceRefused(f"{name} uses an authentication configuration that cannot be read: unlock QGIS's "
                            "authentication database (Settings ▸ Options ▸ Authentication), or check the layer's "
                            "authentication in its properties.")
    method = config.method()
    if method == "Basic":
        user, password = config.config("username"), config.config("password")
        return {"user": user, "password": password} if user or password else None
    if method == "APIHeader":
        headers = [f"{key}: {value}" for key, value in config.configMap().items() if key and value]
        return {"header": headers[0]} if headers else None
    raise SourceRefused(f"{name} uses {method} authentication, which CLIP Search cannot pass on yet; use Basic "
                        "authentication (user name and password) for this layer.")
