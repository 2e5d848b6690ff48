"""The pipeline API: build_index (here), open_index, search, search_similar (from :mod:`.searching`). Plain
callbacks, dataclasses out."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.backends.choice import BackendChoice
from ..embedding.embedder import Embedder, load_embedder
from ..errors import Cancelled, InputError
from ..index.ann import APPROXIMATE_FROM, CALIBRATION_CONCEPTS
from ..index.neighbours import mutual_neighbours
from ..index.store import check_target, default_index_dir, open_index, write_index
from ..index.structure import searchable
from ..query.searching import SearchResult, search, search_similar, square
from ..query.vectors import embed_query
from ..settings import IndexSettings, ModelSpec, TilingSettings
from ..sources.access import BlankSourceError, SourceReadError
from ..tiling.area import tiles_in_area
from ..tiling.geodesy import pixel_ground_size
from ..tiling.grid import Tile, build_grid, ground_size_to_pixels, tile_table
from ..tiling.raster_io import RasterInfo, bounded_block_cache, describe_source, open_source
from .checkpoint import Checkpoint, partial_folder, plan_key, sweep_abandoned
from .reading import BlankWatch, Cut, chunks_of, read_chunks, reader_threads, sample_tiles

__all__ = ["IndexResult", "SearchResult", "build_index", "open_index", "search", "search_similar"]

log = logging.getLogger("clip_search.engine")
Progress = Callable[[int, int], None]
IsCancelled = Callable[[], bool]
CHECKPOINT_SECONDS = float(os.environ.get("CLIP_SEARCH_CHECKPOINT_SECONDS", "30"))
VERIFY_TILES = 32  # tiles of the raster a backend is verified on, beside the model itself


@dataclass
class IndexResult:
    path: Path
    tile_count: int
    skipped_empty: int
    grid_count: int
    seconds: float
    model: str
    random_weights: bool
    resumed: int = 0  # tiles taken over from the saved progress of a build that was stopped
    backend: str = "torch"  # what embedded the tiles
    backend_note: str = ""  # why not the backend asked for, when it was refused


def base_tile_pixels(info: RasterInfo, tiling: TilingSettings) -> int:
    """The base tile size in pixels (a ground size in metres converted with the ground size of a pixel at
    the raster's centre, measured on the CRS's ellipsoid)."""
    if tiling.tile_units == "px":
        return max(1, round(tiling.tile_size))
    if not info.georeferenced:
        raise InputError("This raster has no georeference, so a tile size in metres has no meaning; give it in pixels.")
    pixel_m = pixel_ground_size(info.affine, info.width, info.height, info.crs_wkt, info.linear_units_factor)
    return ground_size_to_pixels(tiling.tile_size, pixel_m)


def plan_tiles(info: RasterInfo, tiling: TilingSettings) -> tuple[int, list[Tile]]:
    """(base tile pixels, tiles of the grid restricted to the area of interest)."""
    base = base_tile_pixels(info, tiling)
    tiles = build_grid(info.width, info.height, base, tiling.overlap, tiling.scales)
    if tiling.area is not None and tiles:
        table = np.array([[t.window.col_off, t.window.row_off, t.window.width, t.window.height] for t in tiles])
        keep = tiles_in_area(table, tiling.area, info.affine)
        tiles = [t for t, k in zip(tiles, keep, strict=True) if k]
        if not tiles:
            raise InputError("The area of interest does not overlap the raster; check that it is in the raster's CRS.")
    return base, tiles


class TileEmbedding:
    """Embeds the non-empty tiles of a plan into a Faiss index: :meth:`run` returns (index, kept tiles in id order).

    With a ``checkpoint``, the batches it holds are taken as done and reading resumes at its chunk, and progress
    is saved to it every ``checkpoint_seconds`` and when cancelled. Batches are whole and formed in the same order
    either way, so a resumed build ends with the same vectors, in the same order, as one never interrupted.
    """

    def __init__(self, tiles: list[Tile], embedder: Embedder, batch_size: int, checkpoint: Checkpoint | None = None,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        import faiss

        self.tiles, self.embedder, self.batch_size = tiles, embedder, batch_size
        self.checkpoint, self.checkpoint_seconds = checkpoint, checkpoint_seconds
        self.vectors = faiss.IndexFlatIP(embedder.dim)
        self.grid_index = {tile: number for number, tile in enumerate(tiles)}
        self.kept: list[Tile] = []
        self.embedded: set[int] = set()
        self.pending: dict[tuple[int, ...], list[tuple[Tile, np.ndarray, int]]] = {}  # batches being filled
        self.unsaved: list[tuple[np.ndarray, list[int]]] = []  # embedded since the checkpoint was last saved
        self.last_save = time.monotonic()
        self.chunk_number = checkpoint.resume_chunk if checkpoint is not None else 0
        if checkpoint is not None and checkpoint.vectors is not None:
            self.vectors.add(checkpoint.vectors)
            self.kept = [tiles[int(i)] for i in checkpoint.ids]
            self.embedded = {int(i) for i in checkpoint.ids}

    def run(self, info: RasterInfo, tiling: TilingSettings, base: int, progress: Progress,
            is_cancelled: IsCancelled) -> tuple[Any, list[Tile]]:
        jobs = list(chunks_of(self.tiles, base, tiling.scales))
        first, total = self.chunk_number, len(self.tiles)
        with bounded_block_cache(info):
            open_source(info).close()  # a source that cannot be opened fails here, before any thread starts
        chunks = read_chunks(info, jobs[first:], self.embedder.input_size, reader_threads(self.embedder.device))
        watch = BlankWatch(info, len(jobs) - first) if info.remote else None
        done = sum(len(group) for _, group in jobs[:first])
        try:
            with bounded_block_cache(info), contextlib.closing(chunks):
                for self.chunk_number, cuts in enumerate(chunks, start=first):
                    if watch is not None:
                        watch.see(cuts)
                    done = self.embed(cuts, done, total, tiling.max_empty_fraction, progress, is_cancelled)
                self.chunk_number = len(jobs)
                for shape in sorted(self.pending):  # a fixed order, whatever order the shapes first appeared in
                    self.flush(shape)
        except BlankSourceError:
            raise  # nothing worth keeping was read
        except Cancelled:
            self.save()  # cancelled: what is embedded is kept for the next build of the same plan
            raise Cancelled(
                f"Cancelled; no index was stored yet. The {len(self.kept):,} tiles embedded so far are saved: "
                "the same build resumes from there."
            ) from None
        except (KeyboardInterrupt, SourceReadError):
            self.save()  # interrupted, or a server failed (down, or refusing): kept for the next build of the plan
            raise
        progress(total, total)
        return self.vectors, self.kept

    def embed(self, cuts: list[Cut], done: int, total: int, max_empty: float, progress: Progress,
              is_cancelled: IsCancelled) -> int:
        """Take one chunk's tiles (embedding each batch as it fills); the count of grid tiles seen after it."""
        if is_cancelled():
            raise Cancelled()
        for tile, pixels, empty in cuts:
            done += 1
            if self.take(tile, pixels, empty, max_empty):
                progress(done, total)
                if time.monotonic() - self.last_save >= self.checkpoint_seconds:
                    self.save()
                if is_cancelled():
                    raise Cancelled()
        return done

    def take(self, tile: Tile, pixels: np.ndarray, empty: float, max_empty: float) -> bool:
        """Add a cut tile to its batch unless it is embedded already or too empty; True when a batch was embedded."""
        if self.grid_index[tile] in self.embedded or empty >= 1.0 or empty > max_empty:
            return False
        pixels = square(pixels)
        batch = self.pending.setdefault(pixels.shape, [])
        batch.append((tile, pixels, self.chunk_number))
        if len(batch) < self.batch_size:
            return False
        self.flush(pixels.shape)
        return True

    def flush(self, shape: tuple[int, ...]) -> None:
        batch = self.pending.pop(shape)
        embedded_now = self.embedder.encode_images(np.stack([p for _, p, _ in batch]))
        self.vectors.add(embedded_now)
        self.kept.extend(t for t, _, _ in batch)
        self.unsaved.append((embedded_now, [self.grid_index[t] for t, _, _ in batch]))

    def save(self) -> None:
        if self.checkpoint is None:
            return
        resume = min([c for batch in self.pending.values() for _, _, c in batch] + [self.chunk_number])
        dim = self.embedder.dim
        new_vectors = np.concatenate([v for v, _ in self.unsaved]) if self.unsaved else np.zeros((0, dim), np.float32)
        ids = np.array([i for _, ids in self.unsaved for i in ids], dtype=np.int64)
        self.checkpoint.save(new_vectors, ids, resume)
        self.unsaved.clear()
        self.last_save = time.monotonic()


@dataclass
class _Plan:
    """What a build reads, with what, and where it writes."""

    info: RasterInfo
    settings: IndexSettings
    base: int
    tiles: list[Tile]
    embedder: Embedder
    batch_size: int
    target: Path


def build_index(
    raster: str | Path,
    settings: IndexSettings | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
    is_cancelled: IsCancelled | None = None,
    embedder: Embedder | None = None,
    approximate_from: int = APPROXIMATE_FROM,
    auth: dict[str, str] | None = None,
) -> IndexResult:
    """Index ``raster``: tile, embed, and write an index folder (default: the user cache folder).

    From ``approximate_from`` tiles the vectors are stored as an approximate (IVF) index whose probe
    count is calibrated to a recall of at least 0.99 against exact search (see :mod:`.ann`).

    ``progress(done, total)`` is called after each batch; ``is_cancelled()`` is checked after each
    batch, and a cancel raises :class:`Cancelled` with no index written. Progress is checkpointed beside
    the target (see :mod:`.checkpoint`): a build of the same plan after a kill or a cancel resumes.
    """
    started = time.perf_counter()
    is_cancelled = is_cancelled or (lambda: False)
    plan = _plan(raster, settings or IndexSettings(), output, embedder, auth)
    checkpoint = _checkpoint(plan)
    resumed = checkpoint.tile_count
    vectors, kept = TileEmbedding(plan.tiles, plan.embedder, plan.batch_size, checkpoint).run(
        plan.info, plan.settings.tiling, plan.base, progress or (lambda done, total: None), is_cancelled)
    if not kept:
        raise _nothing_kept(plan.info)
    table = tile_table(kept)
    path = store_index(plan, vectors, table, approximate_from, is_cancelled)
    checkpoint.discard()
    return result_of(plan, path, len(kept), started, resumed)


def store_index(plan: _Plan, vectors: Any, table: np.ndarray, approximate_from: int, is_cancelled: IsCancelled,
                **manifest_extra: Any) -> Path:
    """The embedded tiles (a flat Faiss index of their vectors, their tile table) made searchable, their
    look-alikes found, and the index written whole at the plan's target with ``manifest_extra`` in its manifest;
    a cancel meanwhile stores nothing. Every build ends here, in one process or on a cluster."""
    vectors, search_settings = _searchable(vectors, plan.embedder, approximate_from)
    if is_cancelled():
        raise Cancelled()
    look_alikes = _look_alikes(vectors, table)
    if is_cancelled():
        raise Cancelled()
    manifest = {**_manifest(plan, len(table), search_settings), **manifest_extra}
    return write_index(plan.target, manifest, vectors, table, look_alikes)


def result_of(plan: _Plan, path: Path, kept: int, started: float, resumed: int) -> IndexResult:
    """What a build of ``plan`` that kept ``kept`` tiles and started at ``started`` (perf_counter) answers."""
    identity = plan.embedder.identity
    choice = _choice_of(plan.embedder)
    return IndexResult(path, kept, len(plan.tiles) - kept, len(plan.tiles), time.perf_counter() - started,
                       identity.label(), identity.random_weights, resumed, backend_of(plan.embedder),
                       choice.note if choice is not None else "")


def _nothing_kept(info: RasterInfo) -> InputError:
    """The error of a build whose every tile is empty: for a web source, most likely one it does not cover."""
    if info.remote:
        return InputError(
            f"{info.title} sent no imagery for this area: every tile was missing (HTTP 404), transparent or "
            "beyond the allowed empty fraction. Check the layer's address and zoom levels, and that the area is "
            "one the service covers (look at the layer in QGIS there)."
        )
    return InputError(
        "Every tile is empty (nodata or transparent) or beyond the allowed empty fraction; "
        "check the raster's nodata value, or raise the maximum empty fraction."
    )


def _plan(raster: str | Path, settings: IndexSettings, output: str | Path | None,
          embedder: Embedder | None, auth: dict[str, str] | None = None) -> _Plan:
    """The source described, its tiles planned, the model loaded and the target checked."""
    info = describe_source(str(raster), settings.tiling, auth)
    base, tiles = plan_tiles(info, settings.tiling)
    embedder = embedder or load_embedder(settings.model, settings.device)
    _choose_backend(embedder, info, tiles, base, settings)
    batch_size = settings.batch_size or embedder.default_batch_size()
    log.info(
        "indexing %s: %d tiles (base %d px, scales %s) with %s on %s (%s), batches of %d",
        info.path,
        len(tiles),
        base,
        list(settings.tiling.scales),
        embedder.identity.label(),
        embedder.device,
        backend_of(embedder),
        batch_size,
    )
    target = Path(output) if output is not None else default_index_dir(info, embedder.identity, settings.tiling)
    check_target(target.absolute())
    return _Plan(info, settings, base, tiles, embedder, batch_size, target)


def _choose_backend(embedder: Embedder, info: RasterInfo, tiles: list[Tile], base: int,
                    settings: IndexSettings) -> None:
    """Let the embedder choose its backend for this build, verifying it on tiles of this raster if needed (an
    embedder that has no backends, such as a test's, embeds as it is)."""
    use = getattr(embedder, "use_backend", None)
    if use is None:
        return
    tiling = settings.tiling

    def sample() -> np.ndarray:
        return sample_tiles(info, tiles, base, tiling.scales, embedder.input_size, VERIFY_TILES,
                            tiling.max_empty_fraction)

    use(settings.backend, sample, len(tiles))


def _choice_of(embedder: Embedder) -> BackendChoice | None:
    """The embedder's choice of backend (None for an embedder without backends, such as a test's)."""
    choice = getattr(embedder, "backend", None)
    return choice if isinstance(choice, BackendChoice) else None


def backend_of(embedder: Embedder) -> str:
    """The backend an embedder embeds images with now ('torch' for one without backends)."""
    choice = _choice_of(embedder)
    return choice.name if choice is not None else "torch"


def key_of(plan: _Plan) -> str:
    """The key of everything that decides this plan's vectors and their order (its checkpoint's, its shards')."""
    embedder = plan.embedder
    return plan_key({"raster": plan.info.fingerprint, "tiling": plan.settings.tiling.to_dict(), "base": plan.base,
                     "model": embedder.identity.to_dict(), "input": embedder.input_size, "batch": plan.batch_size,
                     "backend": backend_of(embedder)})


def _checkpoint(plan: _Plan) -> Checkpoint:
    """The saved progress of a build of this plan (empty if none), once what older builds left is swept."""
    embedder = plan.embedder
    key = key_of(plan)
    resolved = plan.target.resolve()
    for gone in sweep_abandoned(resolved.parent, keep=partial_folder(resolved)):
        log.info("removed %s: left by a build stopped or interrupted long ago", gone)
    checkpoint = Checkpoint.load(plan.target, key, embedder.dim)
    if checkpoint.tile_count:
        log.info("resuming %s: %d tiles already embedded", plan.info.path, checkpoint.tile_count)
    return checkpoint


def _searchable(vectors: Any, embedder: Embedder, approximate_from: int) -> tuple[Any, dict[str, Any]]:
    """The vectors as searched (see :mod:`..index.structure`), calibrated on the model's text queries."""
    if vectors.ntotal < approximate_from:
        return vectors, {"kind": "exact"}
    calibration = np.stack([embed_query(embedder, concept) for concept in CALIBRATION_CONCEPTS])
    return searchable(vectors, calibration, approximate_from)


def _manifest(plan: _Plan, tile_count: int, search_settings: dict[str, Any]) -> dict[str, Any]:
    embedder = plan.embedder
    return {
        "raster": plan.info.to_dict(),
        "model": embedder.identity.to_dict(),
        "model_label": embedder.identity.label(),
        "model_spec": portable_spec(plan.settings.model),
        "dim": embedder.dim,
        "input_size": embedder.input_size,
        "tiling": plan.settings.tiling.to_dict(),
        "base_tile_px": plan.base,
        "tile_count": tile_count,
        "grid_count": len(plan.tiles),
        "search": search_settings,
        **({"backend": choice.to_dict()} if (choice := _choice_of(embedder)) is not None else {}),
    }


def _look_alikes(vectors: Any, table: np.ndarray) -> np.ndarray:
    """Each tile's look-alikes for re-ranking (see :mod:`.neighbours`), timed in the log."""
    started = time.perf_counter()
    found = mutual_neighbours(vectors, table)
    log.info("look-alikes of %d tiles found in %.1f s", len(table), time.perf_counter() - started)
    return found


def portable_spec(spec: ModelSpec) -> dict[str, Any]:
    """The model spec for the manifest, a checkpoint file given by absolute path."""
    pretrained = spec.pretrained
    if pretrained and os.path.isfile(pretrained):
        pretrained = os.path.abspath(pretrained)
    return {"name": spec.name, "pretrained": pretrained}
