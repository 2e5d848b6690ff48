"""A source string made into what GDAL opens, with its provenance: the one place each kind of source is set up.

- a local file: itself (a VRT reading it at another resolution when one is asked for);
- a folder of sheets: a mosaic VRT of them written in the cache (see :mod:`.collection`);
- a remote file (``/vsicurl/``, ``/vsis3/`` ...): itself, or a VRT at the asked resolution;
- a web layer (XYZ, WMS, WMTS, a GDAL description): the grid over the area's bounds at the resolution
  (see :mod:`.web`), read through GDAL's WMS driver with a persistent tile cache.

The provenance (``source``) goes into the manifest: kind, public name (no credentials), the extent and
resolution read, the zoom level and the number of server requests a full read takes.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..settings import TilingSettings, area_bounds
from . import names, web
from .access import attempt, reading, remember, tile_cache
from .datasets import GDAL_ERRORS, GDAL_TYPES, fingerprint_file, open_dataset
from .names import SourceName, read_source

Stamp = Callable[[], dict[str, str]]  # what else identifies a source's content (a remote file's version)
RGBA = [("Byte", "Red"), ("Byte", "Green"), ("Byte", "Blue"), ("Byte", "Alpha")]


@dataclass(frozen=True)
class Resolved:
    """What a build opens for a source, and what it records of it."""

    name: SourceName
    public: str  # the name kept in the manifest (RasterInfo.path): a local path, or the source without credentials
    dataset: str  # what GDAL opens
    source: dict[str, Any] | None  # provenance; None for a plain local file read as it is
    # made when asked for (a HEAD request, a file's fingerprint: not for reading an index's source again);
    # None: the local file's content fingerprint
    fingerprinted: Callable[[], str] | None = None

    @property
    def fingerprint(self) -> str | None:
        return self.fingerprinted() if self.fingerprinted is not None else None


def resolve(text: str, tiling: TilingSettings, auth: dict[str, str] | None = None) -> Resolved:
    """``text`` (see :mod:`.names`) as GDAL will read it under ``tiling`` (its area and resolution)."""
    name = read_source(text)
    public = os.path.abspath(text) if name.is_local else name.public()
    remember(public, name, auth)
    if name.kind == names.FOLDER:
        from .collection import folder_mosaic

        return folder_mosaic(name, public, tiling)
    if name.kind == names.ARCGIS:
        raise InputError("ArcGIS MapServer layers cannot be read yet. If the service is cached, add it as an XYZ "
                         "layer with the address .../MapServer/tile/{z}/{y}/{x}, and index that.")
    if not name.is_web:
        return _file(name, public, tiling)
    bounds = area_bounds(tiling.area)
    if bounds is None:
        raise InputError(f"{name.title()} is a web layer, which has no edges of its own: give the area to index "
                         "(--bbox XMIN YMIN XMAX YMAX in the layer's CRS; in QGIS, the visible extent, selected "
                         "polygons or a drawn box).")
    if name.kind == names.XYZ:
        grid = web.xyz_grid(name, bounds, tiling.resolution)
        assert grid.zoom is not None
        side = web.level_resolution(grid.zoom, web.xyz_levels(name)[2])
        transform = (side, 0.0, -web.MERCATOR_HALF, 0.0, -side, web.MERCATOR_HALF)
        xml = web.tms_xml(name, grid.zoom, tile_cache(public))
        return _web(name, public, grid, web.crop_vrt(xml, transform, grid, _wkt(grid.crs), RGBA))
    if name.kind == names.WMS:
        grid = web.wms_grid(name, bounds, tiling.resolution)
        return _web(name, public, grid, web.wms_xml(name, grid, tile_cache(public)))
    dataset = _wmts_name(name) if name.kind == names.WMTS else name.text
    return _cropped(name, public, dataset, bounds, tiling.resolution, True)


def _file(name: SourceName, public: str, tiling: TilingSettings) -> Resolved:
    """A local or remote file: itself, or cropped and resampled when a resolution is asked for."""
    dataset = public if name.is_local else name.text
    remote = name.kind == names.REMOTE
    if tiling.resolution is None:
        if not remote:
            from .collection import vrt_members

            members = vrt_members(public) if public.lower().endswith(".vrt") else None
            source = {"kind": names.FILE, "name": public, "title": name.title(), "files": members} if members \
                else None
            return Resolved(name, public, dataset, source)
        provenance = {"kind": names.REMOTE, "name": public, "title": name.title()}
        return Resolved(name, public, dataset, provenance, lambda: _fingerprint(provenance | _remote_stamp(name)))
    return _cropped(name, public, dataset, area_bounds(tiling.area), tiling.resolution, remote)


def _cropped(name: SourceName, public: str, dataset: str, bounds: tuple[float, float, float, float] | None,
             resolution: float | None, remote: bool) -> Resolved:
    """``dataset`` over ``bounds`` (its own, when None) at ``resolution`` (its own, when None), through a VRT."""
    with reading(public if remote else None):

        def described() -> tuple[tuple[float, ...], str, list[tuple[str, str]], tuple[float, float, float, float]]:
            with open_dataset(dataset) as ds:
                bands = [(GDAL_TYPES.get(t, "Byte"), c.name.capitalize()) for t, c in zip(ds.dtypes, ds.colorinterp,
                                                                                          strict=True)]
                crs = ds.crs.to_string() if ds.crs else ""
                return tuple(ds.transform)[:6], crs, bands, (*ds.bounds,)

        failed: tuple[type[BaseException], ...] = (InputError, *GDAL_ERRORS)
        transform, crs, bands, own = attempt(described, remote, name.title(), "opening", failed)
    if transform[1] or transform[3]:
        raise InputError(f"{name.title()} is rotated or sheared; warp it north-up first (gdalwarp), then index it.")
    if not crs:
        raise InputError(f"{name.title()} has no CRS, so an area or a resolution in CRS units has no meaning; "
                         "index it without them, or assign its CRS first.")
    grid = web.dataset_grid(transform, crs, bounds or own, resolution)
    vrt = web.crop_vrt(dataset, transform, grid, _wkt(crs), bands)
    kind = name.kind if name.is_web else names.REMOTE if remote else names.FILE
    stamp: Stamp = (lambda: _remote_stamp(name)) if kind == names.REMOTE else \
        (lambda: {"file": fingerprint_file(public)}) if kind == names.FILE else dict
    return _web(name, public, grid, vrt, kind, stamp)


def _web(name: SourceName, public: str, grid: web.WebGrid, dataset: str, kind: str | None = None,
         stamp: Stamp = dict) -> Resolved:
    """A source read on ``grid``: its provenance, and its fingerprint from that and ``stamp`` (when asked for)."""
    provenance = {"kind": kind or name.kind, "name": public, "title": name.title(), **grid.to_dict()}
    return Resolved(name, public, dataset, provenance, lambda: _fingerprint(provenance | stamp()))


def _wmts_name(name: SourceName) -> str:
    layer, matrix_set = name.params.get("layers", ""), name.params.get("tilematrixset", "")
    return f"WMTS:{name.url},layer={layer},tilematrixset={matrix_set}"


def _wkt(crs: str) -> str:
    from rasterio.crs import CRS

    return str(CRS.from_user_input(crs).to_wkt())


def _fingerprint(provenance: dict[str, Any]) -> str:
    stable = {k: v for k, v in provenance.items() if k not in ("requests", "title")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:32]


def _remote_stamp(name: SourceName) -> dict[str, str]:
    """What the server says of a remote file's version (size, ETag, Last-Modified), for the 'changed' rule."""
    if not name.url.lower().startswith(("http://", "https://")):
        return {}
    try:
        request = urllib.request.Request(name.url, method="HEAD")
        # http(s) only, checked above (see DESIGN.md, bandit)
        with urllib.request.urlopen(request, timeout=10) as answer:  # nosec B310
            return {k: answer.headers.get(k, "") for k in ("Content-Length", "ETag", "Last-Modified")}
    except (OSError, ValueError):
        return {}  # GDAL's own reading says what is wrong with the server, in its words


def reopen(info_source: dict[str, Any], bands: tuple[int, ...] | None = None) -> str:
    """What GDAL opens for an index's recorded source (for reading it again, e.g. an example box)."""
    extent, resolution = info_source.get("extent"), info_source.get("resolution")
    tiling = TilingSettings(bands=bands, area=tuple(extent) if extent else None, resolution=resolution)
    return resolve(str(info_source["name"]), tiling).dataset
