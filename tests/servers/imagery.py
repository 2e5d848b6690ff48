"""Test-data makers for web imagery: XYZ tiles, Cloud-Optimised GeoTIFFs and multi-sheet collections.

Needs rasterio and numpy, so it runs in the ENGINE environment only. The QGIS tests (no rasterio) run it as a
program with the engine's Python, from the repository root::

    python -m tests.servers.imagery xyz RASTER ROOT --zoom Z --format png|jpeg
    python -m tests.servers.imagery cog RASTER OUT
    python -m tests.servers.imagery sheets RASTER FOLDER --cols C --rows R [--format GTiff|JP2OpenJPEG]

Each command prints a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

WEB_MERCATOR = "EPSG:3857"
ORIGIN = 20037508.342789244  # half the Web-Mercator world width, metres
MAX_MOSAIC_PIXELS = 100_000_000
TILE_DRIVERS = {"png": ("PNG", "png", {}), "jpeg": ("JPEG", "jpg", {"QUALITY": "90"})}
SHEET_DRIVERS = {  # lossless both: sheets must add up to the raster
    "GTiff": ("tif", {"COMPRESS": "DEFLATE"}),
    "JP2OpenJPEG": ("jp2", {"REVERSIBLE": "YES", "QUALITY": "100"}),
}


@dataclass(frozen=True)
class XyzInfo:
    """What ``make_xyz_tiles`` wrote. Ranges are inclusive; bounds are (left, bottom, right, top) in EPSG:3857."""

    zoom: int
    x_range: tuple[int, int]
    y_range: tuple[int, int]
    footprint_3857: tuple[float, float, float, float]
    tiles_bounds_3857: tuple[float, float, float, float]
    pixel_m: float
    tile_px: int
    ext: str
    written: int  # tiles written (tiles of the range wholly outside the raster are not)


def tile_side_m(zoom: int) -> float:
    """The side of one XYZ tile at ``zoom``, in Web-Mercator metres."""
    return 2 * ORIGIN / 2**zoom


def pixel_size_m(zoom: int, tile_px: int = 256) -> float:
    """The Web-Mercator pixel size at ``zoom``."""
    return tile_side_m(zoom) / tile_px


def tile_of(x_3857: float, y_3857: float, zoom: int) -> tuple[int, int]:
    """The standard (Google / OSM) tile column and row holding a Web-Mercator point: origin top-left, y down."""
    side = tile_side_m(zoom)
    return math.floor((x_3857 + ORIGIN) / side), math.floor((ORIGIN - y_3857) / side)


def tile_bounds(x: int, y: int, zoom: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of tile (x, y) in EPSG:3857."""
    side = tile_side_m(zoom)
    left, top = -ORIGIN + x * side, ORIGIN - y * side
    return left, top - side, left + side, top


def footprint_3857(raster: Path) -> tuple[float, float, float, float]:
    """The raster's bounds in EPSG:3857 (densified edges, so a rotated footprint is enclosed)."""
    with rasterio.open(raster) as src:
        return transform_bounds(src.crs, WEB_MERCATOR, *src.bounds, densify_pts=21)


def zoom_for(raster: Path, pixel_m: float | None = None, tile_px: int = 256) -> int:
    """The zoom whose Web-Mercator pixel is closest (in ratio) to ``pixel_m``, by default the raster's own."""
    if pixel_m is None:
        left, bottom, right, top = footprint_3857(raster)
        with rasterio.open(raster) as src:
            pixel_m = ((right - left) / src.width + (top - bottom) / src.height) / 2
    return min(range(0, 25), key=lambda z: abs(math.log(pixel_size_m(z, tile_px) / pixel_m)))


def _rgb_and_mask(src: rasterio.io.DatasetReader) -> tuple[np.ndarray, np.ndarray]:
    """Three uint8 bands for tiles (grey repeated; other types stretched min..max) and the validity mask."""
    colour = [i + 1 for i, c in enumerate(src.colorinterp) if c != ColorInterp.alpha][:3]
    data = src.read(colour)
    mask = src.dataset_mask()
    if data.dtype != np.uint8:
        valid = data[:, mask > 0].astype("float64")
        low, high = (valid.min(), valid.max()) if valid.size else (0.0, 1.0)
        data = np.clip((data - low) * 255.0 / max(high - low, 1e-12), 0, 255).astype(np.uint8)
    if data.shape[0] < 3:
        data = np.repeat(data[:1], 3, axis=0)
    return data, mask


def _warp_mosaic(raster: Path, info: XyzInfo) -> np.ndarray:
    """The raster warped (bilinear) onto the tile grid of ``info``: 4 bands, RGB and validity (0 / 255)."""
    (x0, x1), (y0, y1) = info.x_range, info.y_range
    width, height = (x1 - x0 + 1) * info.tile_px, (y1 - y0 + 1) * info.tile_px
    if width * height > MAX_MOSAIC_PIXELS:
        raise ValueError(f"{width} x {height} pixels of tiles at zoom {info.zoom}: too many for a test mosaic")
    left, _, _, top = info.tiles_bounds_3857
    dst_transform = Affine(info.pixel_m, 0, left, 0, -info.pixel_m, top)
    with rasterio.open(raster) as src:
        rgb, mask = _rgb_and_mask(src)
        source = np.concatenate([rgb, mask[None]], axis=0)
        mosaic = np.zeros((4, height, width), np.uint8)
        reproject(
            source, mosaic, src_transform=src.transform, src_crs=src.crs, dst_transform=dst_transform,
            dst_crs=WEB_MERCATOR, resampling=Resampling.bilinear, src_alpha=4, dst_alpha=4,
        )
    return mosaic


def _write_image(path: Path, data: np.ndarray, driver: str, options: dict[str, str]) -> None:
    """A plain (not georeferenced) PNG or JPEG; rasterio buffers it in memory and copies it out on close."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0],
            dtype="uint8", **options,
        ) as dst:
            dst.write(data)


def make_xyz_tiles(raster: Path, root: Path, zoom: int, fmt: str = "png", tile_px: int = 256) -> XyzInfo:
    """Cut the raster into Web-Mercator XYZ tiles ``root/{z}/{x}/{y}.{png|jpg}`` at one zoom.

    Tiles wholly outside the raster are not written; in edge tiles the pixels outside the raster (and
    transparent ones) are WHITE, like the uniform white ``root/blank.{png|jpg}`` also written here.
    """
    driver, ext, options = TILE_DRIVERS[fmt.lower()]
    footprint = footprint_3857(raster)
    left, bottom, right, top = footprint
    last = 2**zoom - 1
    x0, y0 = (max(0, min(last, v)) for v in tile_of(left, top, zoom))
    x1, y1 = (max(0, min(last, v)) for v in tile_of(math.nextafter(right, -math.inf),
                                                    math.nextafter(bottom, math.inf), zoom))
    tiles_bounds = (tile_bounds(x0, y1, zoom)[0], tile_bounds(x0, y1, zoom)[1],
                    tile_bounds(x1, y0, zoom)[2], tile_bounds(x1, y0, zoom)[3])
    info = XyzInfo(zoom, (x0, x1), (y0, y1), footprint, tiles_bounds, pixel_size_m(zoom, tile_px), tile_px, ext, 0)
    mosaic = _warp_mosaic(raster, info)
    rgb = np.where(mosaic[3:] > 0, mosaic[:3], 255).astype(np.uint8)
    written = 0
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            rows = slice((y - y0) * tile_px, (y - y0 + 1) * tile_px)
            cols = slice((x - x0) * tile_px, (x - x0 + 1) * tile_px)
            if not mosaic[3, rows, cols].any():
                continue
            (root / str(zoom) / str(x)).mkdir(parents=True, exist_ok=True)
            _write_image(root / str(zoom) / str(x) / f"{y}.{ext}", rgb[:, rows, cols], driver, options)
            written += 1
    _write_image(root / f"blank.{ext}", np.full((3, tile_px, tile_px), 255, np.uint8), driver, options)
    return XyzInfo(**{**asdict(info), "written": written})


def make_cog(raster: Path, path: Path, blocksize: int = 256) -> Path:
    """A Cloud-Optimised GeoTIFF of the raster (DEFLATE, internal overviews; GDAL's COG driver when present)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env() as env:
        has_cog = "COG" in env.drivers()
    if has_cog:
        rasterio.shutil.copy(raster, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=str(blocksize))
        return path
    with tempfile.TemporaryDirectory() as folder:  # older GDAL: tiled GTiff, overviews copied in, IFDs first
        staged = Path(folder) / "staged.tif"
        rasterio.shutil.copy(raster, staged, driver="GTiff", TILED="YES", BLOCKXSIZE=str(blocksize),
                             BLOCKYSIZE=str(blocksize), COMPRESS="DEFLATE")
        with rasterio.open(staged, "r+") as dst:
            factors = [2**i for i in range(1, 8) if max(dst.width, dst.height) / 2**i >= blocksize / 2]
            dst.build_overviews(factors or [2], Resampling.average)
        rasterio.shutil.copy(staged, path, driver="GTiff", TILED="YES", BLOCKXSIZE=str(blocksize),
                             BLOCKYSIZE=str(blocksize), COMPRESS="DEFLATE", COPY_SRC_OVERVIEWS="YES")
    return path


def _edges(size: int, parts: int) -> list[int]:
    return [round(size * i / parts) for i in range(parts + 1)]


def cut_sheets(raster: Path, folder: Path, cols: int, rows: int, fmt: str = "GTiff") -> list[Path]:
    """Cut the raster into ``cols`` x ``rows`` non-overlapping georeferenced sheets ``sheet_rRR_cCC.tif``.

    Each sheet keeps the CRS, band count, data type, nodata and colour interpretation (alpha included);
    JPEG 2000 sheets are lossless. Returned row by row.
    """
    ext, options = SHEET_DRIVERS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    sheets = []
    with rasterio.open(raster) as src:
        if cols > src.width or rows > src.height:
            raise ValueError(f"{cols} x {rows} sheets do not fit a {src.width} x {src.height} raster")
        xs, ys = _edges(src.width, cols), _edges(src.height, rows)
        has_alpha = ColorInterp.alpha in src.colorinterp
        extra = {"ALPHA": "YES"} if fmt == "JP2OpenJPEG" and has_alpha else {}
        for r in range(rows):
            for c in range(cols):
                window = Window(xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r])
                path = folder / f"sheet_r{r:02d}_c{c:02d}.{ext}"
                with rasterio.open(
                    path, "w", driver=fmt, width=int(window.width), height=int(window.height), count=src.count,
                    dtype=src.dtypes[0], crs=src.crs, transform=src.transform @ Affine.translation(xs[c], ys[r]),
                    nodata=src.nodata,
                    **options, **extra,
                ) as dst:
                    dst.colorinterp = src.colorinterp
                    dst.write(src.read(window=window))
                sheets.append(path)
    return sheets


def main(argv: list[str] | None = None) -> int:
    """The command line, for tests that have no rasterio; prints a JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.imagery", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    xyz = commands.add_parser("xyz", help="Web-Mercator XYZ tiles at one zoom")
    xyz.add_argument("raster", type=Path)
    xyz.add_argument("root", type=Path)
    xyz.add_argument("--zoom", type=int, help="default: the zoom nearest the raster's own pixel size")
    xyz.add_argument("--format", choices=sorted(TILE_DRIVERS), default="png")
    xyz.add_argument("--tile-px", type=int, default=256)
    cog = commands.add_parser("cog", help="a Cloud-Optimised GeoTIFF")
    cog.add_argument("raster", type=Path)
    cog.add_argument("out", type=Path)
    sheets = commands.add_parser("sheets", help="a collection of georeferenced sheets")
    sheets.add_argument("raster", type=Path)
    sheets.add_argument("folder", type=Path)
    sheets.add_argument("--cols", type=int, required=True)
    sheets.add_argument("--rows", type=int, required=True)
    sheets.add_argument("--format", choices=sorted(SHEET_DRIVERS), default="GTiff")
    args = parser.parse_args(argv)
    if args.command == "xyz":
        zoom = args.zoom if args.zoom is not None else zoom_for(args.raster, tile_px=args.tile_px)
        summary: object = asdict(make_xyz_tiles(args.raster, args.root, zoom, args.format, args.tile_px))
    elif args.command == "cog":
        summary = {"path": str(make_cog(args.raster, args.out))}
    else:
        made = cut_sheets(args.raster, args.folder, args.cols, args.rows, args.format)
        summary = {"sheets": [str(p) for p in made]}
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
