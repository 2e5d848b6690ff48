"""An index's embeddings as GeoParquet, and an index made again from such a file.

One row per tile: ``id`` (int64, the tile id), ``geometry`` (the tile's footprint polygon in the raster's CRS,
WKB), ``scale`` (the tiling's multiple of the base tile) and ``scale_index``, the pixel window (``col_off``,
``row_off``, ``width``, ``height``) and ``embedding`` (a fixed-size list of float32, one value per dimension).
This is the layout published embeddings share (Earth Index, Clay, Major TOM): DuckDB, GeoPandas, QGIS and
GDAL read it as it is, so tiles can be filtered, joined or mapped without the engine.

The file's metadata holds the GeoParquet ``geo`` key (version 1.1.0; WKB polygons; the CRS as PROJJSON; the
bounding box) and :data:`PROJECT_KEY`, what an import needs to make a searchable index again: the model's
identity and the spec that loads it, the dimension and input size, the tiling, the base tile size and the
raster's description. Vectors without a model identity cannot be searched with text (nothing says which
text encoder shares their space), so an import refuses them instead of guessing.

Footprints are derived from the tile table with the raster's transform, with the arithmetic a search maps its
regions with (:func:`..tiling.area.to_crs`, one polygon at a time; here all at once), so an exported footprint
and a result polygon of the same tile agree.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine

from ..errors import InputError, storage_error
from .store import OpenIndex, open_index

PROJECT_KEY = b"clip_search"
GEO_KEY = b"geo"
GEOPARQUET_VERSION = "1.1.0"
EXCHANGE_VERSION = 1  # of what PROJECT_KEY holds
ROWS_PER_GROUP = 65_536  # rows written (and read back into memory) at a time
WINDOW_COLUMNS = ("col_off", "row_off", "width", "height")
# what an import needs, copied from the manifest (the last two only where the index has them)
CARRIED = ("model", "model_label", "model_spec", "dim", "input_size", "tiling", "base_tile_px", "raster",
           "grid_count", "backend")
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    dim: int
    bbox: tuple[float, float, float, float]


def ground_points(xy: np.ndarray, transform: Affine) -> np.ndarray:
    """(N, 2) pixel coordinates (column, row) to the raster's CRS, with the arithmetic of
    :func:`..tiling.area.to_crs` (shapely's affine transform), so footprints here and result polygons agree."""
    t = transform
    x, y = xy[:, 0], xy[:, 1]
    return np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=1)


def footprints(tiles: np.ndarray, transform: Affine) -> np.ndarray:
    """Each tile's footprint polygon in the raster's CRS, from the (N, 5) tile table: the pixel window mapped
    with the raster's transform (rotated and sheared rasters too), all tiles at once."""
    c, r, w, h = (tiles[:, i].astype(np.float64) for i in range(4))
    polygons = shapely.box(c, r, c + w, r + h)
    return np.asarray(shapely.transform(polygons, lambda xy: ground_points(xy, transform)))


def footprint_bounds(tiles: np.ndarray, transform: Affine) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of all footprints, from the windows' corners (known before any row is written,
    as the file's metadata needs it first)."""
    c0, r0 = tiles[:, 0].astype(np.float64), tiles[:, 1].astype(np.float64)
    c1, r1 = c0 + tiles[:, 2], r0 + tiles[:, 3]
    corners = np.concatenate([np.stack([c, r], axis=1) for c in (c0, c1) for r in (r0, r1)])
    ground = ground_points(corners, transform)
    return (float(ground[:, 0].min()), float(ground[:, 1].min()), float(ground[:, 0].max()),
            float(ground[:, 1].max()))


def arrow_schema(dim: int, metadata: dict[bytes, bytes] | None = None) -> Any:
    """The columns of an embeddings file (a ``pyarrow.Schema``)."""
    import pyarrow as pa

    fields = [("id", pa.int64()), ("geometry", pa.binary()), ("scale", pa.float64()), ("scale_index", pa.int32())]
    fields += [(name, pa.int32()) for name in WINDOW_COLUMNS]
    fields.append(("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata=metadata)


def geo_metadata(crs_wkt: str, bbox: tuple[float, float, float, float]) -> dict[str, Any]:
    """The GeoParquet ``geo`` metadata of the footprint column, the CRS as PROJJSON."""
    from pyproj import CRS

    column = {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": CRS.from_wkt(crs_wkt).to_json_dict(),
              "bbox": list(bbox)}
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


def project_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """What :data:`PROJECT_KEY` holds: the manifest's model, tiling and raster description."""
    carried = {key: manifest[key] for key in CARRIED if key in manifest}
    return {"format": "clip_search embeddings", "version": EXCHANGE_VERSION, **carried}


def check_output(output: Path) -> Path:
    """The export's target, refused unless it is a new ``.parquet`` file or an existing Parquet file (replacing
    anything else could destroy a file of the user's)."""
    if output.suffix.lower() != ".parquet":
        raise InputError(f"{output} does not end in .parquet; name the output FILE.parquet.")
    if output.is_symlink() or (output.exists() and not output.is_file()):
        raise InputError(f"{output} exists and is not a plain file; choose a new FILE.parquet.")
    if output.exists():
        with open(output, "rb") as f:
            head = f.read(4)
        if head != PARQUET_MAGIC:
            raise InputError(f"{output} exists and is not a Parquet file, so it is not replaced; choose a new "
                             "FILE.parquet, or move that file away first.")
    if not output.parent.is_dir():
        raise InputError(f"The folder {output.parent} does not exist; create it or choose another output.")
    return output


def export_geoparquet(index_path: str | Path, output: str | Path) -> ExportResult:
    """Write the index at ``index_path`` as a GeoParquet file ``output`` (see the module's description).

    The file is written under a temporary name beside ``output`` and renamed into place, so a reader sees a
    whole file or none, and a failed export leaves an earlier file there untouched. An index of a raster
    without georeference is refused: its footprints have no place on the ground and no CRS to name.
    """
    import pyarrow.parquet as pq

    index = open_index(index_path)
    target = check_output(Path(output).absolute())
    raster = index.raster
    if not raster.georeferenced or not raster.crs_wkt:
        raise InputError(f"The index {index.path} is of a raster without georeference: its tiles have no place on "
                         "the ground to write as GeoParquet. Georeference the raster and index it again.")
    if index.count == 0:
        raise InputError(f"The index {index.path} holds no tiles; nothing to export.")
    bbox = footprint_bounds(index.tiles, raster.affine)
    metadata = {GEO_KEY: json.dumps(geo_metadata(raster.crs_wkt, bbox)).encode(),
                PROJECT_KEY: json.dumps(project_metadata(index.manifest)).encode()}
    schema = arrow_schema(index.dim, metadata)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for start in range(0, index.count, ROWS_PER_GROUP):
                writer.write_table(_rows(index, start, min(index.count, start + ROWS_PER_GROUP), schema))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        no_space = storage_error(exc, target.parent) if isinstance(exc, OSError) else None
        if no_space is not None:
            raise no_space from exc
        raise
    return ExportResult(target, index.count, index.dim, bbox)


def _rows(index: OpenIndex, start: int, stop: int, schema: Any) -> Any:
    """Rows ``start`` to ``stop`` of the file, as a ``pyarrow.Table``."""
    import pyarrow as pa

    tiles = index.tiles[start:stop]
    vectors = np.ascontiguousarray(index.read_vectors(np.arange(start, stop, dtype=np.int64)), dtype=np.float32)
    scales = np.asarray(index.tiling.scales, dtype=np.float64)
    wkb = shapely.to_wkb(footprints(tiles, index.raster.affine), flavor="iso")
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), index.dim)
    columns = [pa.array(np.arange(start, stop, dtype=np.int64)), pa.array(wkb, pa.binary()),
               pa.array(scales[tiles[:, 4]]), pa.array(tiles[:, 4].astype(np.int32))]
    columns += [pa.array(tiles[:, i].astype(np.int32)) for i in range(4)]
    return pa.Table.from_arrays([*columns, embedding], schema=schema)
