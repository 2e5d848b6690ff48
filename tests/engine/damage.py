"""Damaged copies of real rasters, as a failing disk, an interrupted copy or a bad download leaves them.

The shared rasters are first written again in the layouts analysts' files come in (cloud-optimised
GeoTIFF with JPEG or deflate, strips, tiles, BigTIFF, big-endian), then copied with damage: truncated at a
random point, random bits flipped (half of them in the first 4 KiB, where the header and its tables are),
or random blocks zeroed. A fixed seed gives the same copies on every run.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import rasterio
from rasterio.shutil import copy as copy_raster

SOURCES = ("colorado_rgb_015m.tif", "drone_rgba_alpha.tif", "int16_2band_epsg4326.tif")
LAYOUTS: dict[str, dict[str, Any]] = {
    "original": {},
    "cog-jpeg": {"driver": "COG", "COMPRESS": "JPEG", "BLOCKSIZE": 256},
    "cog-deflate": {"driver": "COG", "COMPRESS": "DEFLATE", "BLOCKSIZE": 256},
    "strip-deflate": {"driver": "GTiff", "COMPRESS": "DEFLATE", "BLOCKYSIZE": 16},
    "tiled-deflate-bigtiff": {"driver": "GTiff", "COMPRESS": "DEFLATE", "TILED": "YES", "BLOCKXSIZE": 128,
                              "BLOCKYSIZE": 128, "BIGTIFF": "YES"},
    "strip-lzw-bigendian": {"driver": "GTiff", "COMPRESS": "LZW", "BLOCKYSIZE": 8, "ENDIANNESS": "BIG"},
}
KINDS = ("truncate", "bitflip", "zero")


def write_layouts(rasters: Path, folder: Path) -> list[Path]:
    """Every source raster in every layout (JPEG only for 8-bit data), as files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SOURCES:
        source = rasters / name
        with rasterio.open(source) as ds:
            eight_bit = ds.dtypes[0] == "uint8"
        for layout, options in LAYOUTS.items():
            if layout == "cog-jpeg" and not eight_bit:
                continue
            target = folder / f"{Path(name).stem}.{layout}.tif"
            if options:
                copy_raster(str(source), str(target), **options)
            else:
                target.write_bytes(source.read_bytes())
            written.append(target)
    return written


def damage(data: bytes, kind: str, rng: random.Random) -> bytes:
    """``data`` truncated, with bits flipped, or with blocks zeroed, at places drawn from ``rng``."""
    damaged = bytearray(data)
    size = len(damaged)
    if kind == "truncate":
        return bytes(damaged[: rng.randrange(8, size)])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 24)):
            where = rng.randrange(min(size, 4096)) if rng.random() < 0.5 else rng.randrange(size)
            damaged[where] ^= 1 << rng.randrange(8)
        return bytes(damaged)
    if kind == "zero":
        for _ in range(rng.randint(1, 3)):
            start = rng.randrange(size)
            end = min(size, start + rng.randint(256, max(257, size // 8)))
            damaged[start:end] = bytes(end - start)
        return bytes(damaged)
    raise ValueError(f"unknown damage {kind!r}")


def damaged_copies(layouts: list[Path], folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` damaged copies of ``layouts`` in ``folder``: each kind of damage in turn over every layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    copies = []
    for number in range(count):
        source = layouts[number % len(layouts)]
        kind = KINDS[number % len(KINDS)]
        target = folder / f"{number:03d}-{kind}-{source.name}"
        target.write_bytes(damage(source.read_bytes(), kind, rng))
        copies.append(target)
    return copies


def declare_size(source: Path, target: Path, width: int | None = None, height: int | None = None) -> Path:
    """A copy of a little-endian classic TIFF whose first directory declares another width or height
    (as one damaged header field does); the pixel data and its tables are left as they are."""
    data = bytearray(source.read_bytes())
    if data[:4] != b"II*\x00":
        raise ValueError(f"{source} is not a little-endian classic TIFF")
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    wanted = {256: width, 257: height}  # ImageWidth, ImageLength
    for number in range(entries):
        entry = ifd + 2 + 12 * number
        (tag,) = struct.unpack_from("<H", data, entry)
        value = wanted.get(tag)
        if value is not None:
            struct.pack_into("<HHII", data, entry, tag, 4, 1, value)  # as a LONG, one value
    target.write_bytes(bytes(data))
    return target


def set_pixel_width(source: Path, target: Path, value: float) -> Path:
    """A copy of a little-endian classic GeoTIFF whose pixel width (ModelPixelScale) is ``value``, as flipped
    bits in its exponent leave it (NaN, infinity)."""
    data = bytearray(source.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for number in range(entries):
        tag, _, _, where = struct.unpack_from("<HHII", data, ifd + 2 + 12 * number)
        if tag == 33550:  # ModelPixelScale: three doubles, stored where the entry points
            struct.pack_into("<d", data, where, value)
            target.write_bytes(bytes(data))
            return target
    raise ValueError(f"{source} has no ModelPixelScale tag")


def garble_metadata(source: Path, target: Path) -> Path:
    """A copy of a little-endian classic GeoTIFF with the high bit of one letter of its GDAL metadata text
    set: GDAL then reports a message that is not UTF-8 text."""
    data = bytearray(source.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for number in range(entries):
        tag, _, _, where = struct.unpack_from("<HHII", data, ifd + 2 + 12 * number)
        if tag == 42112:  # GDAL_METADATA: "<GDALMetadata>..."; its sixth letter, the M
            data[where + 5] |= 0x80
            target.write_bytes(bytes(data))
            return target
    raise ValueError(f"{source} has no GDAL metadata")
