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
import hashlib
import math
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from ..errors import DamagedRasterError, RasterError
from .grid import Window

# QGIS shows a raster without georeference with x = column and y = -row; so do we.
PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024
FINGERPRINT_SAMPLE = 1 << 20
BLOCK_CACHE_MB = 64
# What GDAL raises on a damaged file: rasterio's errors, GDAL's own CPLE_* errors, a CRS it cannot parse.
GDAL_ERRORS: tuple[type[Exception], ...] = (RasterioError, CPLE_BaseError, CRSError)
# How far a codec packs pixels (deflate about 1,000 to 1, LZW a few thousand; TIFF codes for none, LZW, JPEG,
# deflate twice, PackBits): a first block needing more was declared larger than it is. ZSTD, LERC, WebP
# pack constant pixels further, but no real block reaches a million to one.
MAX_PACKING = {1: 16, 5: 10_000, 7: 10_000, 8: 10_000, 32946: 10_000, 32773: 10_000}
MAX_PACKING_OTHERS = 1_000_000
REASON_CHARS = 200
TIFF_TAGS = (259, 273, 278, 279, 284, 322, 323, 324, 325)  # compression, strips, planar configuration, tiles


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
        }

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
        )


def fingerprint_file(path: str) -> str:
    """A content fingerprint: size plus the first, middle and last MiB (fast on huge rasters)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - FINGERPRINT_SAMPLE // 2), max(0, size - FINGERPRINT_SAMPLE)}):
            f.seek(offset)
            digest.update(f.read(FINGERPRINT_SAMPLE))
    return digest.hexdigest()[:32]


def gdal_reason(exc: BaseException, path: str) -> str:
    """GDAL's own words for a failure, on one line: the innermost message of the exception chain, which
    names the defect (e.g. "TIFFFillTile:Read error at row 0, ...; got 0 bytes, expected 148616")."""
    chain = [exc]
    while (cause := chain[-1].__cause__) is not None and len(chain) < 8:
        chain.append(cause)
    messages = [re.sub(r"\s+", " ", str(e)).strip() for e in reversed(chain)]
    text = next((m for m in messages if m and "See previous exception" not in m), type(exc).__name__)
    text = re.sub(f"^({re.escape(path)}|{re.escape(os.path.basename(path))}): ?", "", text)  # we name the file
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def _advice(path: str) -> str:
    command = f'gdalinfo -checksum "{path}"'
    return f"The file is damaged or incomplete: check it with {command} and copy it again from its source."


def unreadable(path: str, window: Window, exc: BaseException, purpose: str = "") -> DamagedRasterError:
    """The error for pixels of ``path`` that GDAL could not read: the file, the window, GDAL's reason, what to do."""
    where = f"columns {window.col_off}-{window.col_end - 1}, rows {window.row_off}-{window.row_end - 1}{purpose}"
    return DamagedRasterError(f"Cannot read {path}: the pixels in {where} could not be read "
                              f"({gdal_reason(exc, path)}). {_advice(path)}")


def damaged_header(path: str, reason: str) -> DamagedRasterError:
    return DamagedRasterError(f"Cannot read {path}: its header is damaged ({reason}). {_advice(path)}")


def open_dataset(path: str) -> Any:
    """Open a raster for reading, turning rasterio's errors into a message that says what to do."""
    if not os.path.exists(path):
        raise RasterError(f"Raster not found: {path}. Check the path, or re-add the layer in QGIS.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except GDAL_ERRORS as exc:
        raise DamagedRasterError(
            f"Cannot read {path} as a raster ({gdal_reason(exc, path)}). Check that it is a complete "
            "GDAL-readable image (e.g. open it in QGIS, or run gdalinfo on it), or copy it again from its source."
        ) from exc


def _tiff_tags(path: str, ifd_offset: int) -> dict[int, tuple[int, int]]:
    """{tag: (count, first value)} of the layout tags (:data:`TIFF_TAGS`) in the TIFF directory at ``ifd_offset``."""
    with open(path, "rb") as f:
        order = {b"II": "<", b"MM": ">"}.get(f.read(2))
        if order is None:
            return {}
        big = struct.unpack(order + "H", f.read(2))[0] == 43  # BigTIFF: 8-byte counts and value fields
        number, size = ("Q", 20) if big else ("I", 12)
        f.seek(ifd_offset)
        entries = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))[0]
        table, field = f.read(min(entries, 4096) * size), struct.calcsize(number)
        tags = {}
        for at in range(0, len(table) - size + 1, size):
            tag, kind = struct.unpack_from(order + "HH", table, at)
            code = {3: "H", 4: "I", 16: "Q"}.get(kind)  # SHORT, LONG, LONG8
            if tag not in TIFF_TAGS or code is None:
                continue
            count = struct.unpack_from(order + number, table, at + 4)[0]
            if count * struct.calcsize(code) <= field:  # the value is in the entry, else where the entry points
                tags[tag] = (count, struct.unpack_from(order + code, table, at + 4 + field)[0])
            else:
                f.seek(struct.unpack_from(order + number, table, at + 4 + field)[0])
                tags[tag] = (count, struct.unpack(order + code, f.read(struct.calcsize(code)))[0])
    return tags


def check_plausible(ds: Any, path: str) -> None:
    """Refuse a GeoTIFF whose header declares more pixels than its file holds.

    One flipped bit can make 383 columns 2,147,483,647, which GDAL opens: a build would plan billions of
    tiles before a read failed. The TIFF directory must list an offset for every strip or tile the size
    needs (a sparse file lists zeros), and its first block's bytes must hold its pixels at a packing its
    codec reaches (:data:`MAX_PACKING`).
    """
    ifd = ds.get_tag_item("IFD_OFFSET", "TIFF", bidx=1) if ds.driver == "GTiff" else None
    tags = _tiff_tags(path, int(ifd)) if ifd else {}
    if not tags:
        return
    tiled = 322 in tags  # TileWidth; else strips of RowsPerStrip rows (one strip when it is absent)
    rows = tags[323][1] if tiled and 323 in tags else min(tags.get(278, (1, ds.height))[1], ds.height)
    cols = tags[322][1] if tiled else ds.width
    planes = ds.count if tags.get(284, (1, 1))[1] == 2 else 1  # PlanarConfiguration 2: a block per band
    blocks = math.ceil(ds.width / max(cols, 1)) * math.ceil(ds.height / max(rows, 1)) * planes
    declared = f"it declares {ds.width} x {ds.height} pixels"
    listed, first = tags.get(324 if tiled else 273, (blocks, 0))[0], tags.get(325 if tiled else 279, (0, 0))[1]
    if listed < blocks:
        raise damaged_header(path, f"{declared} in {blocks} blocks but lists only {listed}")
    dtype = np.dtype("complex64" if ds.dtypes[0] == "complex_int16" else ds.dtypes[0])  # numpy has no complex int16
    raw = rows * cols * (ds.count // planes) * dtype.itemsize
    if first and raw > MAX_PACKING.get(tags.get(259, (1, 1))[1], MAX_PACKING_OTHERS) * first:
        raise damaged_header(path, f"{declared}, far more than its first block of {first} bytes can hold")


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


def _describe(ds: Any, path: str, bands: tuple[int, ...] | None) -> RasterInfo:
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
        fingerprint=fingerprint_file(path),
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


@contextlib.contextmanager
def bounded_block_cache() -> Iterator[None]:
    """GDAL's block cache limited while a build reads.

    Chunks are read once, so a large cache buys nothing; at GDAL's default (5% of RAM) it would keep
    every block read and make memory grow with the raster's area.
    """
    with rasterio.Env(GDAL_CACHEMAX=BLOCK_CACHE_MB):
        yield


def read_chunk(ds: Any, info: RasterInfo, window: Window, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` resampled to ``out_shape`` (rows, cols).

    Returns ``(rgb, valid)``: uint8 (rows, cols, 3) with invalid pixels zeroed, and a bool mask of
    pixels that are valid in all three chosen bands (nodata, alpha, NaN and outside-mask are invalid).
    """
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
