"""Web sources as GDAL reads them: the pixel grid over the chosen area, and the XML that GDAL's WMS driver opens.

A web layer has no edges or pixel size of its own, so a build reads it over a bounding box (the area the user
chose, in the layer's CRS) at a ground resolution (the size of a pixel in the CRS's units): a :class:`WebGrid`,
snapped to the service's own pixel grid so that read pixels are the served pixels where the resolutions agree.

- XYZ tiles: GDAL's TMS mini-driver at the zoom level whose pixels are at least as fine as the resolution,
  cropped and resampled to the grid by a VRT (:func:`crop_vrt`); lower zoom levels serve GDAL's overviews.
- WMS: GDAL's WMS mini-driver with the grid as its data window: the server draws the pixels asked for.
- Any other GDAL dataset (a GDAL WMS/TMS description, WMTS:, a remote file read at another resolution): the
  dataset's own grid, cropped and resampled by a VRT.

Every description carries a persistent tile cache folder (a resumed or repeated build downloads nothing again),
a bounded number of parallel connections and a timeout. A tile the server does not have (404: many services
answer so outside their coverage) is empty, like a transparent one; a build that finds no imagery at all says
so (see ``building.build``). Nothing here downloads.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape

from ..errors import InputError
from .names import SourceName, public_url

MERCATOR_HALF = 20037508.342789244  # half the Web Mercator world's side, metres
WEB_MERCATOR = "EPSG:3857"
CONNECTIONS = 4  # parallel requests to one server: polite to public services, enough to keep a CPU busy
TIMEOUT_S = 30
WMS_BLOCK = 512  # pixels a side of one GetMap request
DEFAULT_ZMAX = 18
MAX_PIXELS = 1e11  # a grid beyond this is a mistake (an area or a resolution off by orders of magnitude)


@dataclass(frozen=True)
class WebGrid:
    """The pixels a build reads from a web source: extent (CRS units), resolution, size, and what it costs."""

    crs: str
    extent: tuple[float, float, float, float]
    resolution: float
    width: int
    height: int
    native_resolution: float | None  # the finest the service offers, where it says (XYZ: its top zoom)
    zoom: int | None = None  # the tile level read (XYZ)
    requests: int = 0  # server requests to read the grid once at full resolution

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extent"] = list(self.extent)
        return data


def _snap(bounds: tuple[float, float, float, float], resolution: float,
          anchor: tuple[float, float]) -> tuple[tuple[float, float, float, float], int, int]:
    """``bounds`` grown outward to whole pixels of a grid through ``anchor``: (extent, width, height)."""
    if not resolution > 0 or not math.isfinite(resolution):
        raise InputError(f"The resolution must be a positive number of the CRS's units per pixel; got {resolution}.")
    xmin, ymin, xmax, ymax = bounds
    if not (xmax > xmin and ymax > ymin):
        raise InputError(f"The bounding box must have xmin < xmax and ymin < ymax; got {list(bounds)}.")
    ax, ay = anchor
    c0, c1 = math.floor((xmin - ax) / resolution + 1e-9), math.ceil((xmax - ax) / resolution - 1e-9)
    r0, r1 = math.floor((ay - ymax) / resolution + 1e-9), math.ceil((ay - ymin) / resolution - 1e-9)
    width, height = max(1, c1 - c0), max(1, r1 - r0)
    if width * height > MAX_PIXELS:
        raise InputError(f"That area at {resolution:g} units a pixel is {width:,} x {height:,} pixels; choose a "
                         "smaller area or a coarser resolution.")
    extent = (ax + c0 * resolution, ay - r1 * resolution, ax + c1 * resolution, ay - r0 * resolution)
    return extent, width, height


def xyz_levels(name: SourceName) -> tuple[int, int, int]:
    """(lowest zoom, highest zoom, tile side in pixels) of an XYZ layer, from its QGIS data source."""
    try:
        zmin = int(name.params.get("zmin") or 0)
        zmax = int(name.params.get("zmax") or DEFAULT_ZMAX)
        ratio = float(name.params.get("tilepixelratio") or 1) or 1.0
    except ValueError as exc:
        raise InputError(f"The XYZ layer's zoom levels are not whole numbers ({exc}); check its source.") from exc
    return max(0, zmin), max(0, min(zmax, 30)), 256 * max(1, round(ratio))


def level_resolution(zoom: int, tile_px: int) -> float:
    return 2 * MERCATOR_HALF / (tile_px * 2**zoom)


def xyz_grid(name: SourceName, bounds: tuple[float, float, float, float], resolution: float | None) -> WebGrid:
    """The grid of an XYZ layer over ``bounds`` (EPSG:3857); the top zoom's resolution when none is given."""
    zmin, zmax, tile_px = xyz_levels(name)
    native = level_resolution(zmax, tile_px)
    resolution = resolution or native
    wanted = math.ceil(math.log2(2 * MERCATOR_HALF / (tile_px * resolution)) - 1e-6)
    zoom = min(zmax, max(zmin, wanted))
    extent, width, height = _snap(bounds, resolution, (-MERCATOR_HALF, MERCATOR_HALF))
    side = level_resolution(zoom, tile_px) * tile_px
    columns = math.ceil((extent[2] + MERCATOR_HALF) / side - 1e-9) - math.floor((extent[0] + MERCATOR_HALF) / side)
    rows = math.ceil((MERCATOR_HALF - extent[1]) / side - 1e-9) - math.floor((MERCATOR_HALF - extent[3]) / side)
    return WebGrid(WEB_MERCATOR, extent, resolution, width, height, native, zoom, columns * rows)


def wms_grid(name: SourceName, bounds: tuple[float, float, float, float], resolution: float | None) -> WebGrid:
    """The grid of a WMS layer over ``bounds`` (the layer's CRS); a WMS draws at any scale, so it is asked for."""
    if resolution is None:
        raise InputError("A WMS layer draws at any scale: give the resolution to read it at (the size of a pixel "
                         "in the layer's CRS units, e.g. --resolution 0.5).")
    extent, width, height = _snap(bounds, resolution, (0.0, 0.0))
    requests = math.ceil(width / WMS_BLOCK) * math.ceil(height / WMS_BLOCK)
    return WebGrid(wms_crs(name), extent, resolution, width, height, None, None, requests)


def dataset_grid(transform: tuple[float, ...], crs: str, bounds: tuple[float, float, float, float],
                 resolution: float | None, block: int = 256) -> WebGrid:
    """The grid over ``bounds`` of a GDAL dataset with a north-up ``transform`` (its own pixels by default)."""
    native = abs(transform[0])
    resolution = resolution or native
    extent, width, height = _snap(bounds, resolution, (transform[2], transform[5]))
    source_px = (extent[2] - extent[0]) / native * (extent[3] - extent[1]) / native
    return WebGrid(crs, extent, resolution, width, height, native, None, math.ceil(source_px / block**2))


def wms_crs(name: SourceName) -> str:
    return name.params.get("crs") or name.params.get("srs") or WEB_MERCATOR


def _cache(folder: str) -> str:
    return f"<Cache><Path>{escape(folder)}</Path><Depth>2</Depth></Cache>"


def _common(cache: str, bands: int, block: int) -> str:
    return (f"<BlockSizeX>{block}</BlockSizeX><BlockSizeY>{block}</BlockSizeY><BandsCount>{bands}</BandsCount>"
            f"<MaxConnections>{CONNECTIONS}</MaxConnections><Timeout>{TIMEOUT_S}</Timeout>"
            f"<ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes>{_cache(cache)}")


def tms_url(template: str) -> str:
    """A QGIS XYZ URL template ({x} {y} {z}, {-y} for TMS rows) in GDAL's words (${x} ${y} ${z})."""
    if "{q}" in template:
        raise InputError("XYZ layers addressed by quadkey ({q}) are not supported; use the service's {x}/{y}/{z} "
                         "address if it has one.")
    for key in ("x", "y", "z"):
        if "{" + key + "}" not in template and not (key == "y" and "{-y}" in template):
            raise InputError(f"The XYZ address has no {{{key}}}: {public_url(template)}. Check the layer's URL.")
    return re.sub(r"\{-?([xyz])\}", lambda m: "${" + m.group(1) + "}", template)


def tms_xml(name: SourceName, zoom: int, cache: str) -> str:
    """GDAL's description of an XYZ layer at ``zoom``: the whole Web Mercator world, 4 bands (alpha last)."""
    _, _, tile_px = xyz_levels(name)
    origin = "bottom" if "{-y}" in name.url else "top"
    return (f"<GDAL_WMS><Service name=\"TMS\"><ServerUrl>{escape(tms_url(name.url))}</ServerUrl></Service>"
            f"<DataWindow><UpperLeftX>{-MERCATOR_HALF!r}</UpperLeftX><UpperLeftY>{MERCATOR_HALF!r}</UpperLeftY>"
            f"<LowerRightX>{MERCATOR_HALF!r}</LowerRightX><LowerRightY>{-MERCATOR_HALF!r}</LowerRightY>"
            f"<TileLevel>{zoom}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>"
            f"<YOrigin>{origin}</YOrigin></DataWindow><Projection>{WEB_MERCATOR}</Projection>"
            f"{_common(cache, 4, tile_px)}</GDAL_WMS>")


def wms_xml(name: SourceName, grid: WebGrid, cache: str) -> str:
    """GDAL's description of a WMS layer whose data window is ``grid``: one GetMap per 512-pixel block."""
    p = name.params
    image = p.get("format") or "image/png"
    version = p.get("version") or "1.3.0"
    xmin, ymin, xmax, ymax = grid.extent
    service = (f"<Service name=\"WMS\"><Version>{escape(version)}</Version><ServerUrl>{escape(name.url)}</ServerUrl>"
               f"<CRS>{escape(grid.crs)}</CRS><SRS>{escape(grid.crs)}</SRS><ImageFormat>{escape(image)}</ImageFormat>"
               f"<Layers>{escape(p.get('layers', ''))}</Layers><Styles>{escape(p.get('styles', ''))}</Styles>"
               "<Transparent>TRUE</Transparent></Service>")
    window = (f"<DataWindow><UpperLeftX>{xmin!r}</UpperLeftX><UpperLeftY>{ymax!r}</UpperLeftY>"
              f"<LowerRightX>{xmax!r}</LowerRightX><LowerRightY>{ymin!r}</LowerRightY>"
              f"<SizeX>{grid.width}</SizeX><SizeY>{grid.height}</SizeY></DataWindow>")
    return f"<GDAL_WMS>{service}{window}<Projection>{escape(grid.crs)}</Projection>" \
           f"{_common(cache, 4, WMS_BLOCK)}</GDAL_WMS>"


def crop_vrt(dataset: str, transform: tuple[float, ...], grid: WebGrid, crs_wkt: str,
             bands: list[tuple[str, str]]) -> str:
    """A VRT (as text) showing ``grid`` of ``dataset`` (whose north-up geotransform is ``transform``), resampled
    where the resolutions differ. ``bands``: (GDAL data type, colour interpretation) of each band."""
    xmin, ymin, xmax, ymax = grid.extent
    a, e = transform[0], transform[4]
    src = (f"<SrcRect xOff=\"{(xmin - transform[2]) / a!r}\" yOff=\"{(ymax - transform[5]) / e!r}\" "
           f"xSize=\"{(xmax - xmin) / a!r}\" ySize=\"{(ymax - ymin) / -e!r}\"/>"
           f"<DstRect xOff=\"0\" yOff=\"0\" xSize=\"{grid.width}\" ySize=\"{grid.height}\"/>")
    parts = [f"<VRTDataset rasterXSize=\"{grid.width}\" rasterYSize=\"{grid.height}\">",
             f"<SRS>{escape(crs_wkt)}</SRS>",
             f"<GeoTransform>{xmin!r}, {grid.resolution!r}, 0, {ymax!r}, 0, {-grid.resolution!r}</GeoTransform>"]
    for number, (dtype, interp) in enumerate(bands, start=1):
        parts.append(f"<VRTRasterBand dataType=\"{dtype}\" band=\"{number}\"><ColorInterp>{interp}</ColorInterp>"
                     f"<SimpleSource resampling=\"average\"><SourceFilename relativeToVRT=\"0\">{escape(dataset)}"
                     f"</SourceFilename><SourceBand>{number}</SourceBand>{src}</SimpleSource></VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)
