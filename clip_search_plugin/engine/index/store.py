"""The index folder: manifest.json + vectors.faiss + tiles.npy, written atomically, validated on open.

- ``manifest.json``: format version, raster description and fingerprint, CRS WKT, transform, model
  identity, embedding dimension, tiling, tile count, and the size and SHA-256 of each data file.
- ``vectors.faiss``: a Faiss exact inner-product index over L2-normalised vectors (inner product = cosine).
- ``tiles.npy``: int32 (N, 5) table of (column offset, row offset, width, height, scale index) per tile
  id. Footprints are derived from it with the transform; no pickle anywhere.
- ``neighbours.npy``: int32 (N, 10) table of each tile's look-alikes for re-ranking (see :mod:`.neighbours`);
  an index written before it existed has none, and its look-alikes are found when first needed.
- ``vectors16.npy`` (compact indexes only, see :mod:`.compact`): the vectors as float16, memory-mapped; there
  ``vectors.faiss`` holds IVF-PQ codes. These two are checked by size and a sampled checksum on open.

A new index is written into a hidden temporary folder beside the target and renamed into place, so a
reader sees a whole index or none, and a failed or cancelled build leaves any previous index untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..answers import IndexStatus, IndexSummary, InfoAnswer
from ..embedding.models import ModelIdentity, file_sha256
from ..errors import NO_SPACE_ERRNOS, IndexFormatError, InputError, storage_error
from ..paths import inside, user_cache_base
from ..settings import TilingSettings
from ..sources.names import WEB_KINDS
from ..tiling.grid import Window
from ..tiling.raster_io import RasterInfo
from .compact import FLOAT16_FILE, HASH_WHOLE_UPTO, CompactIndex, open_compact, sampled_sha256
from .manifest_schema import SCHEMA, problems

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
TILES = "tiles.npy"
NEIGHBOURS_FILE = "neighbours.npy"
TILE_COLUMNS = 5

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """Where indexes go by default: $CLIP_SEARCH_CACHE, else the user's cache folder."""
    explicit = os.environ.get("CLIP_SEARCH_CACHE")
    return Path(explicit) if explicit else user_cache_base() / "indexes"


def default_index_dir(raster: RasterInfo, identity: ModelIdentity, tiling: TilingSettings) -> Path:
    """Cache folder keyed by raster fingerprint + model + tiling."""
    stem = (raster.title if raster.remote else Path(raster.path).stem)[:40]
    safe_stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    name = f"{safe_stem}-{raster.fingerprint[:12]}-{identity.key()}-{tiling.key()}"
    return default_cache_root() / name


def locate_index(raster: RasterInfo, identity: ModelIdentity, tiling: TilingSettings) -> IndexStatus:
    """Status of the default index for this raster, model and tiling: ready, stale or none.

    "stale": an index of this raster's path exists in the cache but the raster's content has changed
    since (or it was built with other settings); its manifest summary is returned so it can be shown.
    """
    return _locate(raster, default_index_dir(raster, identity, tiling))


def _locate(raster: RasterInfo, expected: Path) -> IndexStatus:
    if (expected / MANIFEST).is_file():
        try:
            return IndexStatus("ready", str(expected), manifest=_summary(read_manifest(expected)))
        except IndexFormatError as exc:
            return IndexStatus("damaged", str(expected), message=str(exc))
    newest = _newest_of(raster.path)
    if newest is not None:
        path, manifest = newest
        differs = manifest["raster"].get("fingerprint") != raster.fingerprint
        # a web layer's fingerprint is its area and resolution: another one is other settings, not a change
        web = raster.remote and manifest["raster"].get("source", {}).get("kind") in WEB_KINDS
        changed = differs and not web
        reason = ("the raster changed since it was indexed" if changed else "another area or resolution"
                  if differs else "other model or tiling settings")
        return IndexStatus("stale", str(path), expected=str(expected), manifest=_summary(manifest), changed=changed,
                           reason=reason)
    return IndexStatus("none", str(expected))


def _newest_of(raster_path: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest index in the cache of the raster (or source) named ``raster_path``, with its manifest."""
    root = default_cache_root()
    others = []
    for manifest_path in root.glob(f"*/{MANIFEST}") if root.is_dir() else []:
        try:
            manifest = read_manifest(manifest_path.parent)
        except IndexFormatError:
            continue
        if manifest["raster"].get("path") == raster_path:
            others.append((manifest.get("created", ""), manifest_path.parent, manifest))
    if not others:
        return None
    _, path, manifest = max(others, key=lambda o: o[0])
    return path, manifest


def locate_web(public: str, identity: ModelIdentity, tiling: TilingSettings) -> IndexStatus:
    """The status of a web layer's newest index when no area is given: ``ready`` when it was built with this
    model and tiling (over whatever area and resolution), ``stale`` when with others, ``none`` when never."""
    newest = _newest_of(public)
    if newest is None:
        return IndexStatus("none", "")
    path, manifest = newest
    built = TilingSettings.from_dict(manifest["tiling"])
    same = manifest["model"] == identity.to_dict() and \
        (built.tile_size, built.tile_units, built.overlap, built.scales) == \
        (tiling.tile_size, tiling.tile_units, tiling.overlap, tiling.scales)
    if same:
        return IndexStatus("ready", str(path), manifest=_summary(manifest))
    return IndexStatus("stale", str(path), manifest=_summary(manifest), changed=False,
                       reason="other model or tiling settings")


def _summary(manifest: dict[str, Any]) -> IndexSummary:
    return IndexSummary(model=manifest.get("model_label", ""), tiles=manifest.get("tile_count"),
                        created=manifest.get("created"),
                        random_weights=bool(manifest.get("model", {}).get("random_weights")),
                        backend=str(manifest.get("backend", {}).get("name", "torch")))


@dataclass
class OpenIndex:
    """An index folder loaded for searching."""

    path: Path
    manifest: dict[str, Any]
    raster: RasterInfo
    identity: ModelIdentity
    tiling: TilingSettings
    tiles: np.ndarray
    vectors: Any  # faiss.Index
    _sample: np.ndarray | None = field(default=None, init=False, repr=False)
    device_matrix: Any = field(default=None, init=False, repr=False)  # the vectors on a GPU, when searched there
    neighbours: np.ndarray | None = None  # each tile's look-alikes (see .neighbours), None until found

    def look_alikes(self) -> np.ndarray:
        """The look-alike table: the stored one, or found now (once per open index) for an older index."""
        if self.neighbours is None:
            from .neighbours import mutual_neighbours

            log.info("finding the look-alikes of %d tiles (the index was built without them)", self.count)
            self.neighbours = mutual_neighbours(self.vectors, self.tiles)
        return self.neighbours

    def read_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of tiles ``ids`` (from the GPU copy when there is one)."""
        if self.device_matrix is not None:
            import torch

            rows = self.device_matrix[torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(self.device_matrix.device)]
            return np.asarray(rows.cpu().numpy(), dtype=np.float32)
        vectors: np.ndarray = self.vectors.reconstruct_batch(np.asarray(ids, dtype=np.int64))
        return vectors

    def to_device(self, device: str) -> None:
        """Keep a copy of the vectors on ``device`` (a torch device) and search there from now on."""
        import torch

        if getattr(self.vectors, "on_disk", False):
            log.info("the vectors of a compact index stay on disk: it is searched on the CPU")
            return
        vectors = self.vectors.reconstruct_n(0, self.count) if self.count else np.zeros((0, self.dim), np.float32)
        self.device_matrix = torch.from_numpy(vectors).to(device)

    @property
    def count(self) -> int:
        return int(self.tiles.shape[0])

    def sample_vectors(self, limit: int) -> np.ndarray:
        """Vectors of up to ``limit`` tiles with evenly spread ids, read once per open index."""
        if self._sample is None:
            ids = np.unique(np.linspace(0, self.count - 1, num=min(self.count, limit)).astype(np.int64))
            self._sample = self.vectors.reconstruct_batch(ids)
        return self._sample

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def window(self, tile_id: int) -> Window:
        c, r, w, h, _ = (int(v) for v in self.tiles[tile_id])
        return Window(c, r, w, h)

    def scale_index(self, tile_id: int) -> int:
        return int(self.tiles[tile_id, 4])

    def info(self, pid: int) -> InfoAnswer:
        """The index described, as an ``info`` answer of the engine process ``pid``."""
        m = self.manifest
        return InfoAnswer(
            path=str(self.path),
            raster=m["raster"]["path"],
            model=self.identity.label(),
            random_weights=self.identity.random_weights,
            tiles=self.count,
            dim=self.dim,
            tiling=m["tiling"],
            base_tile_px=m["base_tile_px"],
            created=m["created"],
            crs_wkt=m["raster"]["crs_wkt"],
            georeferenced=m["raster"]["georeferenced"],
            pid=pid,
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_target(target: Path) -> None:
    """Refuse to replace a folder that exists and is not an index (it may hold the user's files)."""
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file())):
        raise InputError(f"{target} exists and is not a CLIP Search index; choose an empty or new output folder.")


def write_index(
    target: Path,
    manifest: dict[str, Any],
    vectors: Any,
    tiles: np.ndarray,
    neighbours: np.ndarray | None = None,
) -> Path:
    """Write an index folder atomically at ``target`` (replacing an older index there)."""

    target = Path(target).resolve()  # a link names the folder it leads to: that folder is replaced, not the link
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        compact = isinstance(vectors, CompactIndex)
        _write_vectors(vectors.coarse if compact else vectors, tmp / VECTORS)
        np.save(tmp / TILES, np.ascontiguousarray(tiles, dtype=np.int32), allow_pickle=False)
        names = [VECTORS, TILES]
        if compact:
            vectors.save_float16(tmp / FLOAT16_FILE)
            names.append(FLOAT16_FILE)
        if neighbours is not None:
            np.save(tmp / NEIGHBOURS_FILE, np.ascontiguousarray(neighbours, dtype=np.int32), allow_pickle=False)
            names.append(NEIGHBOURS_FILE)
        files = {}
        for name in names:
            _fsync(tmp / name)
            files[name] = {"size": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
            if compact and name in (VECTORS, FLOAT16_FILE):
                files[name]["sample_sha256"] = sampled_sha256(tmp / name)
        full = dict(
            manifest,
            format_version=FORMAT_VERSION,
            files=files,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(full, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        no_space = storage_error(exc, target.parent) if isinstance(exc, OSError) else None
        if no_space is not None:
            raise no_space from exc
        raise
    return target


def _write_vectors(vectors: Any, path: Path) -> None:
    """faiss.write_index, with its failed writes turned back into the OSError they were (Faiss reports
    them as RuntimeError with the system's message), so a full disk is recognised."""
    import faiss

    try:
        faiss.write_index(vectors, str(path))
    except RuntimeError as exc:
        number = next((n for n in sorted(NO_SPACE_ERRNOS) if os.strerror(n) in str(exc)), None)
        if number is not None:
            raise OSError(number, os.strerror(number), str(path)) from exc
        raise


def _publish(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` into place; an older index is moved aside first and removed after."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an index folder, validated against :data:`manifest_schema.SCHEMA`."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise IndexFormatError(f"{path} is not a complete CLIP Search index (no {MANIFEST}); build the index again.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"The index manifest in {path} is unreadable ({exc}); build the index again.") from exc
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"The index manifest in {path} is not an object; build the index again.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"The index in {path} has format version {version!r}; this version of CLIP Search reads "
            f"version {FORMAT_VERSION}. Build the index again."
        )
    found = problems(manifest, SCHEMA)
    if found:
        listed = "; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        raise IndexFormatError(f"The index manifest in {path} is not valid: {listed}. Build the index again.")
    return manifest


def _checksum_matches(file: Path, entry: dict[str, Any]) -> bool:
    """The file against its entry's checksum: sampled for a compact index's big files (a whole SHA-256 of a
    10 GB float16 file takes a minute or more on every open), else of the whole file."""
    if "sample_sha256" in entry and file.stat().st_size > HASH_WHOLE_UPTO:
        return bool(sampled_sha256(file) == entry["sample_sha256"])
    return bool(file_sha256(file) == entry.get("sha256"))


def open_index(path: str | Path, verify: bool = True) -> OpenIndex:
    """Open and validate an index folder (checksums of the data files when ``verify``)."""
    import faiss

    path = Path(path).resolve()
    manifest = read_manifest(path)
    files: dict[str, Path] = {}
    for name in (VECTORS, TILES, NEIGHBOURS_FILE, FLOAT16_FILE):
        entry = manifest["files"].get(name)
        if name in (NEIGHBOURS_FILE, FLOAT16_FILE) and entry is None:
            continue
        try:
            file = files[name] = inside(path, name)
        except ValueError as exc:
            raise IndexFormatError(f"{exc}: an index reads only its own files; build the index again.") from exc
        if not isinstance(entry, dict) or not file.is_file() or file.stat().st_size != entry.get("size"):
            raise IndexFormatError(f"{file} is missing or truncated; build the index again.")
        if verify and not _checksum_matches(file, entry):
            raise IndexFormatError(f"{file} does not match its checksum (changed or damaged); build the index again.")
    try:
        tiles = np.load(files[TILES], allow_pickle=False)
        search = manifest.get("search") or {"kind": "exact"}
        if (search["kind"] == "compact") != (FLOAT16_FILE in files):
            raise IndexFormatError(f"The index in {path} is inconsistent (its search structure); build it again.")
        vectors = open_compact(files[VECTORS], files[FLOAT16_FILE], search, path) if FLOAT16_FILE in files \
            else faiss.read_index(str(files[VECTORS]))
        raster = RasterInfo.from_dict(manifest["raster"])
        identity = ModelIdentity.from_dict(manifest["model"])
        tiling = TilingSettings.from_dict(manifest["tiling"])
        neighbours = np.load(files[NEIGHBOURS_FILE], allow_pickle=False) if NEIGHBOURS_FILE in files else None
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise IndexFormatError(f"The index in {path} is damaged ({exc}); build the index again.") from exc
    count = manifest["tile_count"]
    if (
        tiles.dtype != np.int32
        or tiles.shape != (count, TILE_COLUMNS)
        or vectors.ntotal != count
        or vectors.d != manifest["dim"]
        or (neighbours is not None and (neighbours.dtype != np.int32 or neighbours.ndim != 2
                                        or len(neighbours) != count or int(neighbours.max(initial=-1)) >= count))
    ):
        raise IndexFormatError(f"The index in {path} is inconsistent (tile counts differ); build it again.")
    approximate = hasattr(vectors, "nprobe")
    kind = search.get("kind")
    if (kind in ("ivf", "compact")) != approximate or kind not in ("exact", "ivf", "compact"):
        raise IndexFormatError(f"The index in {path} is inconsistent (its search structure); build it again.")
    if approximate:
        vectors.nprobe = int(search["nprobe"])  # type: ignore[union-attr]
    return OpenIndex(path, manifest, raster, identity, tiling, tiles, vectors, neighbours)
