"""What a build would read, before anything is downloaded: its tiles, the server requests, the download, the time.

The dock shows it (with the layer's terms) before the first download from a web layer; the figures are
estimates: the requests are exact for a read at the base scale, the bytes and seconds are typical values.
"""

from __future__ import annotations

import math

from ..answers import SurveyAnswer
from ..settings import TilingSettings
from ..sources.web import CONNECTIONS, WMS_BLOCK
from ..tiling.raster_io import describe_source
from .build import plan_tiles

# Typical sizes of one served image of aerial imagery: a 256-pixel JPEG tile, a PNG tile, a 512-pixel GetMap.
TILE_KB = {"jpeg": 25.0, "png": 110.0}
REQUESTS_PER_SECOND = 4.0  # one connection's pace with a typical public tile service
TILES_PER_SECOND = {"cpu": 20.0, "cuda": 400.0}  # ViT-B-32 embedding (measured: BENCHMARKS.md), before bigger models


def _kilobytes(kind: str, name: str) -> float:
    image = "jpeg" if any(k in name.lower() for k in (".jpg", ".jpeg", "jpeg")) else "png"
    per = TILE_KB[image]
    return per * (WMS_BLOCK / 256) ** 2 if kind == "wms" else per


def survey(raster: str, tiling: TilingSettings, device: str, auth: dict[str, str] | None = None) -> SurveyAnswer:
    """What building ``raster`` with ``tiling`` on ``device`` would read and cost."""
    info = describe_source(raster, tiling, auth)
    _, tiles = plan_tiles(info, tiling)
    source = info.source or {}
    kind = str(source.get("kind", "file"))
    base_requests = int(source.get("requests", 0)) if info.remote else 0
    requests = math.ceil(base_requests * sum(1 / s**2 for s in tiling.scales))  # larger scales read coarser levels
    rate = TILES_PER_SECOND["cuda" if device.startswith("cuda") else "cpu"]
    seconds = len(tiles) / rate + requests / (CONNECTIONS * REQUESTS_PER_SECOND)
    extent = source.get("extent")
    files = source.get("files")
    return SurveyAnswer(
        name=info.path, kind=kind, title=info.title, crs=str(source.get("crs") or ""), width=info.width,
        height=info.height, tiles=len(tiles), requests=requests,
        download_mb=round(requests * _kilobytes(kind, info.path) / 1024, 1), seconds=round(seconds, 1),
        extent=list(extent) if extent else None, resolution=source.get("resolution"),
        native_resolution=source.get("native_resolution"), zoom=source.get("zoom"),
        files=len(files) if files else None)
