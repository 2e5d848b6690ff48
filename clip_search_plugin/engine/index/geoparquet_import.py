"""A searchable index made from a GeoParquet embeddings file (the layout is described in :mod:`.geoparquet`).

The file is checked before anything is computed or written, and refused with one message saying what to do
when it is not Parquet, lacks a column, has no model identity (vectors of an unknown model cannot be searched
with text), has vectors of another dimension than its model's, or has a geometry column without a CRS or in
another CRS than the raster it describes. The tile table is read from the pixel-window columns (the
footprints are for other tools); ids must be unique, rows are taken in id order and numbered from 0 (a file
filtered elsewhere, e.g. to an area in DuckDB, imports as a smaller index).

The index is made as a build makes it: exact search below :data:`.ann.APPROXIMATE_FROM` tiles, the look-alike
table (:func:`.neighbours.mutual_neighbours`), written atomically by :func:`.store.write_index`; its manifest
records that it was imported, from which file. The structure is a build's (see :mod:`.structure`): from
``approximate_from`` tiles an IVF index is built only when the model is given (its probe count is calibrated on
the model's text queries, which only the model can make); without it, as on the command line, an import is
searched exactly up to ``compact.COMPACT_FROM`` tiles and compactly from there (calibrated on stored vectors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.embedder import Embedder
from ..embedding.models import ModelIdentity
from ..errors import InputError
from .ann import APPROXIMATE_FROM, CALIBRATION_CONCEPTS
from .geoparquet import CARRIED, GEO_KEY, PROJECT_KEY, WINDOW_COLUMNS
from .manifest_schema import SCHEMA, problems
from .neighbours import mutual_neighbours
from .store import TILES, VECTORS, check_target, write_index
from .structure import ArrayVectors, is_compact, searchable

REQUIRED_COLUMNS = ("id", *WINDOW_COLUMNS, "scale_index", "embedding", "geometry")
KEY = PROJECT_KEY.decode()
AGAIN = "Export the file again from its index with `export --format geoparquet`."
UNIT_TOLERANCE = 1e-4  # rows whose length differs more from 1 are normalised (search is by cosine)


@dataclass(frozen=True)
class Embeddings:
    """A checked embeddings file: the manifest fields it carries, its tile table and unit vectors in id order."""

    base: dict[str, Any]
    tiles: np.ndarray  # (N, 5) int32
    vectors: np.ndarray  # (N, dim) float32
    renumbered: bool  # its ids were not 0 .. N-1


@dataclass(frozen=True)
class ImportResult:
    path: Path
    tiles: int
    dim: int
    model: str
    search: str  # "exact", "ivf" or "compact"


def import_geoparquet(source: str | Path, output: str | Path, embedder: Embedder | None = None,
                      approximate_from: int = APPROXIMATE_FROM) -> ImportResult:
    """Make the index folder ``output`` from the embeddings file ``source`` (see the module's description)."""
    target = Path(output).absolute()
    check_target(target)  # before the file is read: a folder of the user's is never a target
    found = read_embeddings(source)
    vectors, search = _searchable(found, embedder, approximate_from)
    neighbours = mutual_neighbours(vectors, found.tiles)
    imported = {"from": str(Path(source).resolve()), "rows": len(found.tiles), "renumbered": found.renumbered}
    manifest = dict(found.base, tile_count=len(found.tiles), search=search, imported=imported)
    path = write_index(target, manifest, vectors, found.tiles, neighbours)
    label = str(found.base.get("model_label") or ModelIdentity.from_dict(found.base["model"]).label())
    return ImportResult(path, len(found.tiles), int(found.base["dim"]), label, str(search["kind"]))


def _searchable(found: Embeddings, embedder: Embedder | None, approximate_from: int) -> tuple[Any, dict[str, Any]]:
    """The vectors as searched (see :mod:`.structure`), calibrated on the model's text queries when it is given."""
    import faiss

    count = len(found.vectors)
    if is_compact(count, approximate_from):
        vectors: Any = ArrayVectors(found.vectors)  # made compact from the rows read: no second copy
    else:
        vectors = faiss.IndexFlatIP(found.vectors.shape[1])
        vectors.add(found.vectors)
    if embedder is None or count < approximate_from:
        return searchable(vectors, None, approximate_from)
    identity = ModelIdentity.from_dict(found.base["model"])
    if embedder.identity != identity:
        raise InputError(f"The vectors were made by {identity.label()}, not by the model given "
                         f"({embedder.identity.label()}); import with the file's own model.")
    from ..query.vectors import embed_query

    calibration = np.stack([embed_query(embedder, concept) for concept in CALIBRATION_CONCEPTS])
    return searchable(vectors, calibration, approximate_from)


def read_embeddings(source: str | Path) -> Embeddings:
    """The embeddings file ``source``, checked (see the module's description for what is refused)."""
    path = Path(source)
    file = _parquet_file(path)
    schema = file.schema_arrow
    metadata = schema.metadata or {}
    base = _carried(path, metadata)
    _check_crs(path, metadata, str(base["raster"]["crs_wkt"]))
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"{path} lacks the column(s) {', '.join(missing)}. {AGAIN}")
    table = file.read(columns=[c for c in REQUIRED_COLUMNS if c != "geometry"])
    nulls = [name for name in table.column_names if table.column(name).null_count]
    if nulls or table.num_rows == 0:
        raise InputError(f"{path} has {'empty values in ' + ', '.join(nulls) if nulls else 'no rows'}. {AGAIN}")
    vectors = _vectors(path, table.column("embedding"), base)
    ids = table.column("id").to_numpy().astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"{path} has the same tile id on several rows. {AGAIN}")
    order = np.argsort(ids, kind="stable")
    columns = [*WINDOW_COLUMNS, "scale_index"]
    tiles = np.stack([table.column(c).to_numpy().astype(np.int64) for c in columns], axis=1)[order]
    _check_tiles(path, tiles, base)
    renumbered = not np.array_equal(ids[order], np.arange(len(ids)))
    return Embeddings(base, tiles.astype(np.int32), np.ascontiguousarray(vectors[order]), renumbered)


def _parquet_file(path: Path) -> Any:
    """The file opened as Parquet (a ``pyarrow.parquet.ParquetFile``), or a clear refusal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(f"{path} is not a file; give a .parquet file written by `export --format geoparquet`.")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{path} is not a readable Parquet file ({reason}); give a .parquet file written by "
                         "`export --format geoparquet`.") from exc


def _carried(path: Path, metadata: dict[bytes, bytes]) -> dict[str, Any]:
    """The manifest fields the file carries, checked against the manifest's schema."""
    raw = metadata.get(PROJECT_KEY)
    try:
        project = json.loads(raw) if raw is not None else None
    except ValueError:
        project = None
    if not isinstance(project, dict) or not isinstance(project.get("model"), dict) or "dim" not in project:
        raise InputError(f"{path} has no model identity (no readable '{KEY}' metadata with the model and its "
                         "dimension): nothing says which model made its vectors, so they cannot be searched with "
                         f"text. {AGAIN}")
    base = {key: project[key] for key in CARRIED if key in project}
    placeholder = {"size": 0, "sha256": "0" * 64}
    candidate = dict(base, format_version=1, tile_count=0, created="-",
                     files={VECTORS: placeholder, TILES: placeholder})
    found = problems(candidate, SCHEMA, KEY)
    if found:
        listed = "; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        raise InputError(f"The '{KEY}' metadata of {path} is not valid: {listed}. {AGAIN}")
    return base


def _check_crs(path: Path, metadata: dict[bytes, bytes], crs_wkt: str) -> None:
    """Refuse a geometry column without a CRS, or in another CRS than the raster's (its footprints would not be
    where the tiles are)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        geo = json.loads(metadata[GEO_KEY])
        column = geo["columns"][geo.get("primary_column", "geometry")]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path} is not GeoParquet (no readable 'geo' metadata for its geometry). {AGAIN}") from None
    crs = column.get("crs") if isinstance(column, dict) else None
    if crs is None:
        raise InputError(f"The geometry column of {path} has no CRS, so its tiles cannot be placed on the ground. "
                         f"{AGAIN}")
    try:
        declared = CRS.from_json_dict(crs) if isinstance(crs, dict) else CRS.from_user_input(crs)
        same = declared == CRS.from_wkt(crs_wkt)
    except CRSError as exc:
        raise InputError(f"The CRS of the geometry column of {path} cannot be read ({exc}). {AGAIN}") from exc
    if not same:
        raise InputError(f"The geometry of {path} is in {declared.name}, not in the CRS of the raster it describes; "
                         f"it was changed after export. {AGAIN}")


def _vectors(path: Path, column: Any, base: dict[str, Any]) -> np.ndarray:
    """The embedding column as float32 unit rows, refused unless every row has the model's dimension."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    kind, dim = column.type, int(base["dim"])
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
            or not pa.types.is_floating(kind.value_type):
        raise InputError(f"The embedding column of {path} is {kind}, not a list of floats. {AGAIN}")
    lengths = np.asarray(pc.list_value_length(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    wrong = lengths[lengths != dim]
    if wrong.size:
        model = base.get("model_label") or ModelIdentity.from_dict(base["model"]).label()
        raise InputError(f"The vectors in {path} have {int(wrong[0])} values, but its model {model} makes {dim}: "
                         f"the vectors do not belong to that model. {AGAIN}")
    vectors = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise InputError(f"{path} has vectors that are zero or not numbers. {AGAIN}")
    if np.any(np.abs(norms - 1) > UNIT_TOLERANCE):
        vectors = (vectors / norms[:, None]).astype(np.float32)  # cosine search needs unit vectors
    return vectors


def _check_tiles(path: Path, tiles: np.ndarray, base: dict[str, Any]) -> None:
    """Refuse pixel windows that start outside the raster, are empty, or name a scale the tiling lacks."""
    width, height = int(base["raster"]["width"]), int(base["raster"]["height"])
    scales = len(base["tiling"]["scales"])
    c, r, w, h, s = (tiles[:, i] for i in range(5))
    bad = (c < 0) | (r < 0) | (c >= width) | (r >= height) | (w < 1) | (h < 1) | (s < 0) | (s >= scales)
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} has a tile (row {row}) whose pixel window or scale index does not fit the "
                         f"{width} x {height} raster and its {scales} scale(s). {AGAIN}")
