"""Reading rasters with rasterio: georeference checks, band choice, stretch, windowed chunk reads.

The whole raster is never read at full resolution. ``describe_raster`` makes one decimated read (from
overviews where present) to compute the stretch; ``read_chunk`` reads one window, optionally resampled,
with its validity mask.

Every read goes through here: GDAL's failures on a damaged file (truncated, flipped bits, zeroed blocks)
become a one-line :class:`DamagedRasterError` naming the file, the pixel window and what to do; a header
declaring more than its file holds is refused before a build plans tiles (:func:`check_plausible`).
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window as RioWindow

from ..errors import DamagedRasterError, RasterError
from ..settings import TilingSettings
from ..sources.access import attempt, gdal_words, reading
from ..sources.datasets import GDAL_ERRORS, fingerprint_file, gdal_reason, open_dataset
from ..sources.names import over_network
from ..sources.resolve import reopen, resolve
from .grid import Window
from .tiff_header import advice, check_plausible, damaged_header

# QGIS shows a raster without georeference with x = column and y = -row; so do we.
PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024
BLOCK_CACHE_MB = 64


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about a raster, all plain values."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str
    is_geographic: bool
    linear_units_factor: float
    transform: tuple[float, float, float, float, float, float]
    georeferenced: bool
    bands: tuple[int, int, int]
    stretch: tuple[tuple[float, float], ...] | None
    fingerprint: str
    # where the pixels come from when not a plain local file: kind, public name, extent and resolution read
    source: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    dataset: str = field(default="", compare=False, hash=False, repr=False)  # what GDAL opens ("" : path)

    @property
    def remote(self) -> bool:
        """Read over the network (a web layer or a remote file): reads are retried, failures name the server."""
        return self.source is not None and over_network(str(self.source.get("kind")))

    @property
    def title(self) -> str:
        """A short name for messages: the file's name, or the web source's host and layer."""
        return str(self.source.get("title") or self.path) if self.source else os.path.basename(self.path)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the raster in its CRS."""
        corners = [self.affine @ (c, r) for c in (0, self.width) for r in (0, self.height)]
        xs = [p[0] for p in corners]
        ys = [p[1] for p in corners]
        return (min(xs), min(ys), max(xs), max(ys))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtype": self.dtype,
            "crs_wkt": self.crs_wkt,
            "is_geographic": self.is_geographic,
            "linear_units_factor": self.linear_units_factor,
            "transform": list(self.transform),
            "georeferenced": self.georeferenced,
            "bands": list(self.bands),
            "stretch": [list(s) for s in self.stretch] if self.stretch is not None else None,
            "fingerprint": self.fingerprint,
        } | ({"source": self.source} if self.source is not None else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RasterInfo:
        stretch = data.get("stretch")
        t = [float(v) for v in data["transform"]]
        b = [int(v) for v in data["bands"]]
        return cls(
            path=str(data["path"]),
            width=int(data["width"]),
            height=int(data["height"]),
            count=int(data["count"]),
            dtype=str(data["dtype"]),
            crs_wkt=str(data["crs_wkt"]),
            is_geographic=bool(data["is_geographic"]),
            linear_units_factor=float(data["linear_units_factor"]),
            transform=(t[0], t[1], t[2], t[3], t[4], t[5]),
            georeferenced=bool(data["georeferenced"]),
            bands=(b[0], b[1], b[2]),
            stretch=tuple((float(lo), float(hi)) for lo, hi in stretch) if stretch else None,
            fingerprint=str(data["fingerprint"]),
            source=data.get("source"),
        )


def unreadable(path: str, window: Window, exc: BaseException, purpose: str = "") -> DamagedRasterError:
    """The error for pixels of ``path`` that GDAL could not read: the file, the window, GDAL's reason, what to do."""
    where = f"columns {window.col_off}-{window.col_end - 1}, rows {window.row_off}-{window.row_end - 1}{purpose}"
    return DamagedRasterError(f"Cannot read {path}: the pixels in {where} could not be read "
                              f"({gdal_reason(exc, path)}). {advice(path)}")


def choose_bands(colorinterp: list[ColorInterp], requested: tuple[int, ...] | None) -> tuple[int, int, int]:
    """1-based source bands for red, green, blue.

    Requested bands win (one band is replicated to grey). Otherwise red/green/blue from the colour
    interpretation; otherwise the first three non-alpha bands; one or two bands give grey from the first.
    """
    count = len(colorinterp)
    if requested is not None:
        bad = [b for b in requested if b > count]
        if bad:
            raise RasterError(f"Band(s) {bad} requested but the raster has {count} band(s).")
        if len(requested) == 1:
            return (requested[0],) * 3
        return (requested[0], requested[1], requested[2])
    by_interp = {ci: i + 1 for i, ci in enumerate(colorinterp)}
    if all(c in by_interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return (by_interp[ColorInterp.red], by_interp[ColorInterp.green], by_interp[ColorInterp.blue])
    usable = [i + 1 for i, ci in enumerate(colorinterp) if ci != ColorInterp.alpha]
    if not usable:
        raise RasterError("The raster has only an alpha band; choose a raster with image bands.")
    if len(usable) >= 3:
        return (usable[0], usable[1], usable[2])
    return (usable[0],) * 3


def _georeference(ds: Any) -> tuple[Affine, str, bool]:
    """(transform, CRS WKT, georeferenced) of an open dataset, or a clear error for GCP-only rasters."""
    transform: Affine = ds.transform
    gcps, _ = ds.gcps
    if transform.is_identity and gcps:
        raise RasterError(
            "This raster is georeferenced only by ground control points (GCPs), which have no single "
            "pixel-to-map transform. Warp it first, e.g. `gdalwarp -r bilinear in.tif warped.tif` "
            "(QGIS: Raster > Projections > Warp), and index the warped raster."
        )
    if transform.is_identity and ds.crs is None:
        return PIXEL_TRANSFORM, "", False
    if not all(math.isfinite(v) for v in transform[:6]):
        raise damaged_header(ds.name, f"its geotransform {tuple(transform[:6])} is not all finite numbers")
    if abs(transform.determinant) == 0:
        raise RasterError("The raster's geotransform is degenerate (zero pixel size); fix its georeference.")
    return transform, ds.crs.to_wkt() if ds.crs else "", True


def describe_raster(path: str, bands: tuple[int, ...] | None = None) -> RasterInfo:
    """Open ``path`` and gather its :class:`RasterInfo`, computing the stretch for non-uint8 data."""
    path = os.path.abspath(path)
    with open_dataset(path) as ds:
        try:
            check_plausible(ds, path)
            return _describe(ds, path, bands)
        except GDAL_ERRORS as exc:  # a damaged header GDAL reports only when asked (CRS, bands, tags)
            raise damaged_header(path, gdal_reason(exc, path)) from exc
        except (OSError, struct.error) as exc:
            raise damaged_header(path, str(exc)) from exc


def describe_source(text: str, tiling: TilingSettings, auth: dict[str, str] | None = None) -> RasterInfo:
    """The :class:`RasterInfo` of any source (see :mod:`..sources`) as a build with ``tiling`` reads it."""
    resolved = resolve(text, tiling, auth)
    if resolved.source is None:
        return describe_raster(text, tiling.bands)
    remote = over_network(resolved.source["kind"])
    title = str(resolved.source.get("title") or resolved.public)

    def described() -> RasterInfo:
        with open_dataset(resolved.dataset) as ds:
            try:
                return _describe(ds, resolved.public, tiling.bands, resolved.fingerprint or
                                 fingerprint_file(resolved.public))
            except GDAL_ERRORS as exc:
                raise DamagedRasterError(f"Cannot read {title} ({gdal_words(exc)}).") from exc

    with reading(resolved.public if remote else None):
        info = attempt(described, remote, title, "opening", (RasterError,))
    return replace(info, source=resolved.source, dataset=resolved.dataset)


def _describe(ds: Any, path: str, bands: tuple[int, ...] | None, fingerprint: str | None = None) -> RasterInfo:
    transform, crs_wkt, georeferenced = _georeference(ds)
    chosen = choose_bands(list(ds.colorinterp), bands)
    dtype = ds.dtypes[chosen[0] - 1]
    stretch = None if all(ds.dtypes[b - 1] == "uint8" for b in chosen) else compute_stretch(ds, chosen)
    crs = ds.crs
    return RasterInfo(
        path=path,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=dtype,
        crs_wkt=crs_wkt,
        is_geographic=bool(crs is not None and crs.is_geographic),
        linear_units_factor=_linear_units_factor(crs),
        transform=(transform.a, transform.b, transform.c, transform.d, transform.e, transform.f),
        georeferenced=georeferenced,
        bands=chosen,
        stretch=stretch,
        fingerprint=fingerprint or fingerprint_file(path),
    )


def _linear_units_factor(crs: Any) -> float:
    if crs is None or crs.is_geographic:
        return 1.0
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - CRS without linear units: treat its unit as metres
        return 1.0


def compute_stretch(ds: Any, bands: tuple[int, int, int]) -> tuple[tuple[float, float], ...]:
    """Per-band 2-98 percentile cut (as QGIS's default multiband renderer), from one decimated read."""
    factor = max(1.0, max(ds.width, ds.height) / STRETCH_SAMPLE_SIDE)
    shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    unique = sorted(set(bands))
    try:
        data = ds.read(unique, out_shape=(len(unique), *shape), resampling=Resampling.nearest, masked=True)
    except GDAL_ERRORS as exc:
        whole = Window(0, 0, ds.width, ds.height)
        raise unreadable(ds.name, whole, exc, " (read at reduced resolution for the contrast stretch)") from exc
    result: dict[int, tuple[float, float]] = {}
    for i, band in enumerate(unique):
        band_data = data[i]
        values = np.asarray(band_data.compressed(), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise RasterError("The raster has no valid pixels (all nodata or transparent); nothing to index.")
        lo, hi = np.percentile(values, STRETCH_PERCENTILES)
        if hi <= lo:
            hi = lo + 1.0
        result[band] = (float(lo), float(hi))
    return tuple(result[b] for b in bands)


def to_uint8(data: np.ndarray, stretch: tuple[tuple[float, float], ...] | None) -> np.ndarray:
    """Bands-first data (3, H, W) to uint8 with the raster's stretch (identity for uint8)."""
    if stretch is None:
        return data.astype(np.uint8, copy=False)
    out = np.empty(data.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(stretch):
        band = (data[i].astype(np.float32) - lo) * (255.0 / (hi - lo))
        np.clip(np.nan_to_num(band, nan=0.0), 0, 255, out=band)
        out[i] = band.astype(np.uint8)
    return out


def all_valid(ds: Any, bands: list[int]) -> bool:
    """True when GDAL reports every pixel of these bands valid (no nodata, alpha or mask band)."""
    return all(ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid] for b in bands)


def bounded_block_cache(info: RasterInfo | None = None) -> contextlib.AbstractContextManager[None]:
    """GDAL's block cache limited while a build reads (and GDAL set up for ``info``'s server, when remote).

    Chunks are read once, so a large cache buys nothing; at GDAL's default (5% of RAM) it would keep
    every block read and make memory grow with the raster's area. rasterio takes the size in bytes (64 alone
    was a cache of 64 bytes, under which GDAL's WMS driver fetched a tile again for every band it filled).
    """
    return reading(info.path if info is not None and info.remote else None, GDAL_CACHEMAX=BLOCK_CACHE_MB << 20)


def open_source(info: RasterInfo) -> Any:
    """Open what ``info`` reads: the file, or the web or remote source (a failure names the server's answer)."""
    dataset = info.dataset or (reopen(info.source, info.bands) if info.source else info.path)
    return attempt(lambda: open_dataset(dataset), info.remote, info.title, "opening", (RasterError,))


def read_chunk(ds: Any, info: RasterInfo, window: Window, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` resampled to ``out_shape`` (rows, cols); a remote source's transient failures are retried.

    Returns ``(rgb, valid)``: uint8 (rows, cols, 3) with invalid pixels zeroed, and a bool mask of
    pixels that are valid in all three chosen bands (nodata, alpha, NaN and outside-mask are invalid).
    """
    where = f"pixels {window.col_off}-{window.col_end - 1} x {window.row_off}-{window.row_end - 1}"
    return attempt(lambda: _read_chunk(ds, info, window, out_shape), info.remote, info.title, where,
                   (DamagedRasterError,))


def _read_chunk(ds: Any, info: RasterInfo, window: Window, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
    downsampling = out_shape[0] < window.height or out_shape[1] < window.width
    resampling = Resampling.average if downsampling else Resampling.bilinear
    unique = sorted(set(info.bands))
    try:
        data = ds.read(unique, window=rio_window, out_shape=(len(unique), *out_shape), resampling=resampling)
        if all_valid(ds, unique):  # no nodata, alpha or mask: reading GDAL's all-255 mask would only cost memory
            valid = np.ones(out_shape, dtype=bool)
        else:
            masks = ds.read_masks(
                unique, window=rio_window, out_shape=(len(unique), *out_shape), resampling=Resampling.nearest
            )
            valid = np.all(masks > 0, axis=0)
    except GDAL_ERRORS as exc:  # a damaged block (in a reader thread too): one line naming file and window
        raise unreadable(info.path, window, exc) from exc
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    position = {b: i for i, b in enumerate(unique)}
    rgb = to_uint8(data[[position[b] for b in info.bands]], info.stretch)
    rgb[:, ~valid] = 0
    return np.ascontiguousarray(rgb.transpose(1, 2, 0)), valid
