"""Opening a GDAL dataset, whatever names it: one message for each failure, and a content fingerprint.

Every open goes through :func:`open_dataset`: GDAL's failure on a damaged or unreadable source becomes one line
that names it and says what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from typing import Any

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError

from ..errors import DamagedRasterError, RasterError

FINGERPRINT_SAMPLE = 1 << 20
# What GDAL raises on a damaged file: rasterio's errors, GDAL's own CPLE_* errors, a CRS it cannot parse.
GDAL_ERRORS: tuple[type[Exception], ...] = (RasterioError, CPLE_BaseError, CRSError)
REASON_CHARS = 200
# numpy's names of data types in GDAL's words (a VRT's bands)
GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
              "float32": "Float32", "float64": "Float64", "int8": "Int8"}


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


def is_local_name(name: str) -> bool:
    """A path on this machine (not a GDAL description, /vsi... name or URL)."""
    return not (name.startswith(("<", "/vsi", "WMS:", "WMTS:", "AGS:")) or "://" in name)


def open_dataset(path: str) -> Any:
    """Open a raster for reading, turning rasterio's errors into a message that says what to do."""
    if is_local_name(path) and not os.path.exists(path):
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
