"""A GeoTIFF's header checked against its file before a build plans tiles.

One flipped bit can make a raster of 383 columns declare 2,147,483,647, which GDAL opens; :func:`check_plausible`
reads the TIFF directory itself and refuses a header that declares more than the file can hold.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ..errors import DamagedRasterError

# How far a codec packs pixels (deflate about 1,000 to 1, LZW a few thousand; TIFF codes for none, LZW, JPEG,
# deflate twice, PackBits): a first block needing more was declared larger than it is. ZSTD, LERC, WebP
# pack constant pixels further, but no real block reaches a million to one.
MAX_PACKING = {1: 16, 5: 10_000, 7: 10_000, 8: 10_000, 32946: 10_000, 32773: 10_000}
MAX_PACKING_OTHERS = 1_000_000
TIFF_TAGS = (259, 273, 278, 279, 284, 322, 323, 324, 325)  # compression, strips, planar configuration, tiles


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


def advice(path: str) -> str:
    command = f'gdalinfo -checksum "{path}"'
    return f"The file is damaged or incomplete: check it with {command} and copy it again from its source."


def damaged_header(path: str, reason: str) -> DamagedRasterError:
    return DamagedRasterError(f"Cannot read {path}: its header is damaged ({reason}). {advice(path)}")
