"""Many files, one index: a folder (or list) of sheets in one CRS read as one mosaic, and which sheet a place is on.

An orthophoto is often delivered as hundreds of GeoTIFF or JPEG 2000 sheets. :func:`mosaic_vrt` writes a VRT
that places every sheet at its georeferenced position in one pixel grid (the first sheet's resolution), with a
last band, alpha, from the sheets' own masks so that gaps between sheets count as empty. Sheets in another CRS
are refused with their names: warping them is a choice (resampling, a target CRS) the user makes with gdalwarp.

The sheets and their pixel windows in the mosaic are recorded in the manifest (``source.files``), so every
result can say which file it comes from (:func:`sheet_of`); a VRT the user made is read the same way
(:func:`vrt_members`).
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..errors import InputError, RasterError
from ..paths import user_cache_base
from ..settings import TilingSettings
from .datasets import GDAL_ERRORS, GDAL_TYPES, open_dataset
from .names import FOLDER, SourceName

SHEET_SUFFIXES = (".tif", ".tiff", ".jp2", ".j2k", ".img", ".png", ".jpg", ".jpeg", ".webp")
Member = list[Any]  # [file name, column offset, row offset, width, height] in the mosaic's pixels


@dataclass(frozen=True)
class Sheet:
    path: str
    width: int
    height: int
    transform: tuple[float, ...]
    crs: str
    dtype: str
    interps: tuple[str, ...]  # colour interpretation of each band but alpha
    nodata: float | None


def find_sheets(folder: str) -> list[str]:
    """The raster files directly in ``folder``, in name order."""
    found = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(SHEET_SUFFIXES))
    if not found:
        raise InputError(f"{folder} holds no raster files ({', '.join(SHEET_SUFFIXES)}); choose the folder of the "
                         "sheets themselves.")
    return found


def read_sheet(path: str) -> Sheet:
    with open_dataset(path) as ds:
        try:
            interps = tuple(c.name.capitalize() for c in ds.colorinterp if c.name != "alpha")
            crs = ds.crs.to_string() if ds.crs else ""
            return Sheet(path, ds.width, ds.height, tuple(ds.transform)[:6], crs, ds.dtypes[0], interps, ds.nodata)
        except GDAL_ERRORS as exc:
            raise RasterError(f"Cannot read {path} as a sheet of the collection ({exc}).") from exc


def check_sheets(sheets: list[Sheet]) -> None:
    """One CRS, north-up, the same bands: else a message naming the sheets that differ and what to do."""
    first = sheets[0]
    others = [s for s in sheets if s.crs != first.crs]
    if others:
        names = ", ".join(os.path.basename(s.path) for s in others[:5]) + (" ..." if len(others) > 5 else "")
        raise InputError(f"The sheets are in more than one CRS: {len(others)} of {len(sheets)} ({names}) are not in "
                         f"{first.crs or 'no CRS'} like {os.path.basename(first.path)}. Reproject them into one CRS "
                         "(gdalwarp -t_srs, or QGIS: Raster > Projections > Warp), or index each CRS apart.")
    for s in sheets:
        if s.transform[1] or s.transform[3]:
            raise InputError(f"{os.path.basename(s.path)} is rotated or sheared; warp it north-up first (gdalwarp).")
        if (s.interps, s.dtype) != (first.interps, first.dtype):
            raise InputError(f"{os.path.basename(s.path)} has other bands ({len(s.interps)} x {s.dtype}) than "
                             f"{os.path.basename(first.path)} ({len(first.interps)} x {first.dtype}); a collection's "
                             "sheets must have the same bands.")


def mosaic_vrt(sheets: list[Sheet]) -> tuple[str, list[Member]]:
    """The VRT text placing ``sheets`` in one grid (the first sheet's pixel size), and each sheet's window in it."""
    check_sheets(sheets)
    res_x, res_y = sheets[0].transform[0], sheets[0].transform[4]
    lefts = [s.transform[2] for s in sheets]
    tops = [s.transform[5] for s in sheets]
    rights = [s.transform[2] + s.width * s.transform[0] for s in sheets]
    bottoms = [s.transform[5] + s.height * s.transform[4] for s in sheets]
    x0, y0 = min(lefts), max(tops)
    width = max(1, round((max(rights) - x0) / res_x))
    height = max(1, round((min(bottoms) - y0) / res_y))
    members: list[Member] = []
    sources: dict[int, list[str]] = {}
    bands = len(sheets[0].interps)
    for s in sheets:
        col, row = (s.transform[2] - x0) / res_x, (s.transform[5] - y0) / res_y
        w, h = s.width * s.transform[0] / res_x, s.height * s.transform[4] / res_y
        dst = f"<DstRect xOff=\"{col!r}\" yOff=\"{row!r}\" xSize=\"{w!r}\" ySize=\"{h!r}\"/>"
        src = f"<SourceFilename relativeToVRT=\"0\">{escape(s.path)}</SourceFilename>"
        rect = f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{s.width}\" ySize=\"{s.height}\"/>{dst}"
        nodata = f"<NODATA>{s.nodata!r}</NODATA>" if s.nodata is not None else ""
        for band in range(1, bands + 1):
            sources.setdefault(band, []).append(f"<ComplexSource>{src}<SourceBand>{band}</SourceBand>{rect}{nodata}"
                                                "</ComplexSource>")
        sources.setdefault(bands + 1, []).append(f"<SimpleSource>{src}<SourceBand>mask,1</SourceBand>{rect}"
                                                 "</SimpleSource>")
        members.append([os.path.basename(s.path), round(col), round(row), round(w), round(h)])
    from rasterio.crs import CRS

    wkt = CRS.from_user_input(sheets[0].crs).to_wkt() if sheets[0].crs else ""
    dtype = GDAL_TYPES.get(sheets[0].dtype, "Byte")
    parts = [f"<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\"><SRS>{escape(wkt)}</SRS>",
             f"<GeoTransform>{x0!r}, {res_x!r}, 0, {y0!r}, 0, {res_y!r}</GeoTransform>"]
    for band, interp in enumerate((*sheets[0].interps, "Alpha"), start=1):
        kind = "Byte" if interp == "Alpha" else dtype
        parts.append(f"<VRTRasterBand dataType=\"{kind}\" band=\"{band}\"><ColorInterp>{interp}</ColorInterp>"
                     + "".join(sources[band]) + "</VRTRasterBand>")
    return "".join(parts) + "</VRTDataset>", members


def collection_vrt(files: list[str], label: str) -> tuple[Path, list[Member], str]:
    """The mosaic of ``files`` written in the cache (named after ``label`` and what the files are now):
    (its path, the sheets' windows, a fingerprint of the sheets: names, sizes and modification times)."""
    stamps = []
    for f in files:
        stat = os.stat(f)
        stamps.append(f"{os.path.abspath(f)}|{stat.st_size}|{stat.st_mtime_ns}")
    fingerprint = hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:32]
    text, members = mosaic_vrt([read_sheet(f) for f in files])
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40] or "collection"
    folder = Path(os.environ.get("CLIP_SEARCH_CACHE") or user_cache_base() / "indexes").parent / "collections"
    target = folder / f"{safe}-{fingerprint[:12]}.vrt"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
    return target, members, fingerprint


def folder_mosaic(name: SourceName, public: str, tiling: TilingSettings) -> Any:
    """A folder of sheets as one source (see :func:`.resolve.resolve`)."""
    from .resolve import Resolved

    if tiling.resolution is not None:
        raise InputError("A collection is read at its sheets' own resolution; leave the resolution empty.")
    target, members, fingerprint = collection_vrt(find_sheets(public), os.path.basename(public.rstrip(os.sep)))
    source = {"kind": FOLDER, "name": public, "title": name.title(), "files": members}
    return Resolved(name, public, str(target), source, lambda: fingerprint)


def vrt_members(path: str) -> list[Member] | None:
    """The files of a VRT with their windows (from its first band's sources); None for a VRT of one file."""
    try:
        # a local VRT the user chose to index (see DESIGN.md, bandit)
        root = ET.parse(path).getroot()  # nosec B314
    except (ET.ParseError, OSError):
        return None
    band = root.find("VRTRasterBand")
    members: list[Member] = []
    for source in band if band is not None else []:
        file, rect = source.find("SourceFilename"), source.find("DstRect")
        if file is None or rect is None or not file.text:
            continue
        size = [float(rect.get(k, 0)) for k in ("xOff", "yOff", "xSize", "ySize")]
        members.append([os.path.basename(file.text), *(round(v) for v in size)])
    return members if len(members) > 1 else None


def sheet_of(members: list[Member], bounds: tuple[float, float, float, float]) -> str:
    """The sheet holding most of a pixel box (col0, row0, col1, row1) of the mosaic ("" when none does)."""
    c0, r0, c1, r1 = bounds
    best, best_area = "", 0.0
    for name, col, row, width, height in members:
        w = min(c1, col + width) - max(c0, col)
        h = min(r1, row + height) - max(r0, row)
        if w > 0 and h > 0 and w * h > best_area:
            best, best_area = str(name), float(w * h)
    return best
