"""The pipeline API: build_index, open_index, search, search_similar. Plain callbacks, dataclasses out."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .ann import APPROXIMATE_FROM, CALIBRATION_CONCEPTS, build_ivf
from .area import tiles_in_area
from .checkpoint import Checkpoint, partial_folder, plan_key, sweep_abandoned
from .embedder import Embedder, load_embedder, normalise_rows
from .errors import Cancelled, InputError
from .grid import Tile, Window, build_grid, ground_size_to_pixels, metres_per_pixel
from .heatmap import write_heatmap
from .index import OpenIndex, check_target, default_index_dir, open_index, write_index
from .raster_io import RasterInfo, bounded_block_cache, describe_raster, fingerprint_file, open_dataset, read_chunk
from .regions import Hit, Region, merge_hits
from .search import (
    AERIAL_TEMPLATES,
    NEGATIVE_WEIGHT,
    embed_query,
    matrix_top_hits,
    rocchio,
    split_negative,
    top_hits,
    with_negative,
)
from .settings import Area, IndexSettings, ModelSpec, TilingSettings

__all__ = ["IndexResult", "SearchResult", "build_index", "open_index", "search", "search_similar"]

log = logging.getLogger("clip_search.engine")
Progress = Callable[[int, int], None]
IsCancelled = Callable[[], bool]
CHUNK_SOURCE_PIXELS = 2048
CHECKPOINT_SECONDS = float(os.environ.get("CLIP_SEARCH_CHECKPOINT_SECONDS", "30"))
READ_AHEAD = 3  # chunks each reader may have ready before the model takes them: bounded memory
Cut = tuple[Tile, np.ndarray, float]


@dataclass
class IndexResult:
    path: Path
    tile_count: int
    skipped_empty: int
    grid_count: int
    seconds: float
    model: str
    random_weights: bool


@dataclass
class SearchResult:
    query: str
    regions: list[Region]
    hits: list[Hit]
    model: str
    random_weights: bool
    crs_wkt: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "model": self.model,
            "random_weights": self.random_weights,
            "crs_wkt": self.crs_wkt,
            "seconds": self.seconds,
            "regions": [r.to_dict() for r in self.regions],
            **self.extra,
        }


def base_tile_pixels(info: RasterInfo, tiling: TilingSettings) -> int:
    """The base tile size in pixels (a ground size in metres converted at the raster's centre)."""
    if tiling.tile_units == "px":
        return max(1, round(tiling.tile_size))
    if not info.georeferenced:
        raise InputError("This raster has no georeference, so a tile size in metres has no meaning; give it in pixels.")
    t = info.affine
    centre_lat = (t @ (info.width / 2, info.height / 2))[1]
    pixel_m = metres_per_pixel(
        float(np.hypot(t.a, t.d)),
        float(np.hypot(t.b, t.e)),
        info.is_geographic,
        info.linear_units_factor,
        centre_lat,
    )
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


def _chunks(tiles: Sequence[Tile], base: int, scales: Sequence[float]) -> Iterator[tuple[float, list[Tile]]]:
    """Tiles grouped by scale and by a coarse grid of source chunks, in reading order."""
    for scale_index, scale in enumerate(scales):
        span = max(CHUNK_SOURCE_PIXELS, 2 * round(base * scale))
        groups: dict[tuple[int, int], list[Tile]] = {}
        for t in tiles:
            if t.scale_index == scale_index:
                groups.setdefault((t.window.row_off // span, t.window.col_off // span), []).append(t)
        for key in sorted(groups):
            yield base * scale, groups[key]


def _cut_tiles(
    ds: Any, info: RasterInfo, tiles: list[Tile], source_size: float, input_size: int
) -> Iterator[tuple[Tile, np.ndarray, float]]:
    """Read the chunk holding ``tiles`` once (resampled to the model's input scale) and cut each tile.

    Yields (tile, uint8 pixels, empty fraction).
    """
    chunk = tiles[0].window
    for t in tiles[1:]:
        chunk = chunk.union_bounds(t.window)
    factor = source_size / input_size
    out_h = max(1, round(chunk.height / factor))
    out_w = max(1, round(chunk.width / factor))
    rgb, valid = read_chunk(ds, info, chunk, (out_h, out_w))
    for t in tiles:
        th = max(1, min(out_h, round(t.window.height / factor)))
        tw = max(1, min(out_w, round(t.window.width / factor)))
        r0 = min(round((t.window.row_off - chunk.row_off) / factor), out_h - th)
        c0 = min(round((t.window.col_off - chunk.col_off) / factor), out_w - tw)
        mask = valid[r0 : r0 + th, c0 : c0 + tw]
        yield t, rgb[r0 : r0 + th, c0 : c0 + tw], 1.0 - float(mask.mean())


def reader_threads(device: str) -> int:
    """How many threads read chunks: one beside a model on the CPU (the model needs the cores), several
    beside a GPU, which would otherwise wait for the reading."""
    if not device.startswith("cuda"):
        return 1
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def read_chunks(
    info: RasterInfo, jobs: Iterable[tuple[float, list[Tile]]], input_size: int, workers: int
) -> Generator[list[Cut], None, None]:
    """Read and cut ``jobs`` (chunks of tiles) in ``workers`` background threads, each with a dataset
    handle of its own (GDAL releases the GIL while it decodes), yielding them in order while the caller
    embeds. At most ``workers * READ_AHEAD`` chunks are read ahead, so memory stays bounded."""
    local = threading.local()
    handles: list[Any] = []
    lock = threading.Lock()

    def read(job: tuple[float, list[Tile]]) -> list[Cut]:
        ds = getattr(local, "ds", None)
        if ds is None:
            ds = local.ds = open_dataset(info.path)
            with lock:
                handles.append(ds)
        source_size, group = job
        with bounded_block_cache():
            return list(_cut_tiles(ds, info, group, source_size, input_size))

    pool = ThreadPoolExecutor(workers, thread_name_prefix="clip-search-read")
    pending: deque[Future[list[Cut]]] = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(read, job))
            if len(pending) > workers * READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for ds in handles:
            ds.close()


def square(pixels: np.ndarray) -> np.ndarray:
    """A tile padded with black to a square (only tiles on an axis shorter than one tile need it)."""
    h, w = pixels.shape[:2]
    if h == w:
        return pixels
    side = max(h, w)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    out[:h, :w] = pixels
    return out


def _embed_tiles(
    info: RasterInfo,
    tiles: list[Tile],
    base: int,
    tiling: TilingSettings,
    embedder: Embedder,
    batch_size: int,
    progress: Progress,
    is_cancelled: IsCancelled,
    checkpoint: Checkpoint | None = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> tuple[Any, list[Tile]]:
    """Embed all non-empty tiles into a Faiss index; returns (index, kept tiles in id order).

    With a ``checkpoint``, the batches it holds are taken as done and reading resumes at its chunk, and
    progress is saved to it every ``checkpoint_seconds`` and when cancelled. Batches are whole and formed
    in the same order either way, so a resumed build ends with the same vectors, in the same order, as
    one never interrupted.
    """
    import faiss

    vectors = faiss.IndexFlatIP(embedder.dim)
    grid_index = {tile: number for number, tile in enumerate(tiles)}
    kept: list[Tile] = []
    embedded: set[int] = set()
    if checkpoint is not None and checkpoint.vectors is not None:
        vectors.add(checkpoint.vectors)
        kept = [tiles[int(i)] for i in checkpoint.ids]
        embedded = {int(i) for i in checkpoint.ids}
    jobs = list(_chunks(tiles, base, tiling.scales))
    first = checkpoint.resume_chunk if checkpoint is not None else 0
    done = sum(len(group) for _, group in jobs[:first])
    pending: dict[tuple[int, ...], list[tuple[Tile, np.ndarray, int]]] = {}
    unsaved: list[tuple[np.ndarray, list[int]]] = []
    last_save = time.monotonic()
    chunk_number = first

    def flush(shape: tuple[int, ...]) -> None:
        batch = pending.pop(shape)
        embedded_now = embedder.encode_images(np.stack([p for _, p, _ in batch]))
        vectors.add(embedded_now)
        kept.extend(t for t, _, _ in batch)
        unsaved.append((embedded_now, [grid_index[t] for t, _, _ in batch]))

    def save() -> None:
        nonlocal last_save
        if checkpoint is None:
            return
        resume = min([c for batch in pending.values() for _, _, c in batch] + [chunk_number])
        new_vectors = np.concatenate([v for v, _ in unsaved]) if unsaved else np.zeros((0, embedder.dim), np.float32)
        checkpoint.save(new_vectors, np.array([i for _, ids in unsaved for i in ids], dtype=np.int64), resume)
        unsaved.clear()
        last_save = time.monotonic()

    open_dataset(info.path).close()  # a raster that cannot be opened fails here, before any thread starts
    chunks = read_chunks(info, jobs[first:], embedder.input_size, reader_threads(embedder.device))
    try:
        with bounded_block_cache(), contextlib.closing(chunks):
            for chunk_number, cuts in enumerate(chunks, start=first):
                if is_cancelled():
                    raise Cancelled()
                for tile, pixels, empty in cuts:
                    done += 1
                    if grid_index[tile] in embedded or empty >= 1.0 or empty > tiling.max_empty_fraction:
                        continue
                    pixels = square(pixels)
                    pending.setdefault(pixels.shape, []).append((tile, pixels, chunk_number))
                    if len(pending[pixels.shape]) >= batch_size:
                        flush(pixels.shape)
                        progress(done, len(tiles))
                        if time.monotonic() - last_save >= checkpoint_seconds:
                            save()
                        if is_cancelled():
                            raise Cancelled()
            chunk_number = len(jobs)
            for shape in sorted(pending):  # a fixed order, whatever order the shapes first appeared in
                flush(shape)
    except (Cancelled, KeyboardInterrupt):
        save()  # cancelled or interrupted: what is embedded is kept for the next build of the same plan
        raise
    progress(len(tiles), len(tiles))
    return vectors, kept


def build_index(
    raster: str | Path,
    settings: IndexSettings | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
    is_cancelled: IsCancelled | None = None,
    embedder: Embedder | None = None,
    approximate_from: int = APPROXIMATE_FROM,
) -> IndexResult:
    """Index ``raster``: tile, embed, and write an index folder (default: the user cache folder).

    From ``approximate_from`` tiles the vectors are stored as an approximate (IVF) index whose probe
    count is calibrated to a recall of at least 0.99 against exact search (see :mod:`.ann`).

    ``progress(done, total)`` is called after each batch; ``is_cancelled()`` is checked after each
    batch, and a cancel raises :class:`Cancelled` with no index written. Progress is checkpointed beside
    the target (see :mod:`.checkpoint`): a build of the same plan after a kill or a cancel resumes.
    """
    started = time.perf_counter()
    settings = settings or IndexSettings()
    progress = progress or (lambda done, total: None)
    is_cancelled = is_cancelled or (lambda: False)
    info = describe_raster(str(raster), settings.tiling.bands)
    base, tiles = plan_tiles(info, settings.tiling)
    embedder = embedder or load_embedder(settings.model, settings.device)
    batch_size = settings.batch_size or embedder.default_batch_size()
    log.info(
        "indexing %s: %d tiles (base %d px, scales %s) with %s on %s, batches of %d",
        info.path,
        len(tiles),
        base,
        list(settings.tiling.scales),
        embedder.identity.label(),
        embedder.device,
        batch_size,
    )
    target = Path(output) if output is not None else default_index_dir(info, embedder.identity, settings.tiling)
    check_target(target.absolute())
    plan = plan_key({"raster": info.fingerprint, "tiling": settings.tiling.to_dict(), "base": base,
                     "model": embedder.identity.to_dict(), "input": embedder.input_size, "batch": batch_size})
    resolved = target.resolve()
    for gone in sweep_abandoned(resolved.parent, keep=partial_folder(resolved)):
        log.info("removed %s: left by a build stopped or interrupted long ago", gone)
    checkpoint = Checkpoint.load(target, plan, embedder.dim)
    if checkpoint.tile_count:
        log.info("resuming %s: %d tiles already embedded", info.path, checkpoint.tile_count)
    vectors, kept = _embed_tiles(info, tiles, base, settings.tiling, embedder, batch_size, progress, is_cancelled,
                                 checkpoint)
    if not kept:
        raise InputError(
            "Every tile is empty (nodata or transparent) or beyond the allowed empty fraction; "
            "check the raster's nodata value, or raise the maximum empty fraction."
        )
    table = np.array(
        [[t.window.col_off, t.window.row_off, t.window.width, t.window.height, t.scale_index] for t in kept],
        dtype=np.int32,
    )
    search_settings: dict[str, Any] = {"kind": "exact"}
    if len(kept) >= approximate_from:
        calibration = np.stack([embed_query(embedder, concept) for concept in CALIBRATION_CONCEPTS])
        vectors, search_settings = build_ivf(vectors, calibration)
        log.info("approximate index: %s", search_settings)
    manifest = {
        "raster": info.to_dict(),
        "model": embedder.identity.to_dict(),
        "model_label": embedder.identity.label(),
        "model_spec": portable_spec(settings.model),
        "dim": embedder.dim,
        "input_size": embedder.input_size,
        "tiling": settings.tiling.to_dict(),
        "base_tile_px": base,
        "tile_count": len(kept),
        "grid_count": len(tiles),
        "search": search_settings,
    }
    if is_cancelled():
        raise Cancelled()
    path = write_index(target, manifest, vectors, table)
    checkpoint.discard()
    return IndexResult(
        path,
        len(kept),
        len(tiles) - len(kept),
        len(tiles),
        time.perf_counter() - started,
        embedder.identity.label(),
        embedder.identity.random_weights,
    )


def portable_spec(spec: ModelSpec) -> dict[str, Any]:
    """The model spec for the manifest, a checkpoint file given by absolute path."""
    pretrained = spec.pretrained
    if pretrained and os.path.isfile(pretrained):
        pretrained = os.path.abspath(pretrained)
    return {"name": spec.name, "pretrained": pretrained}


def index_model_spec(index: OpenIndex) -> ModelSpec:
    """The spec that loads the model an index was built with."""
    spec = index.manifest.get("model_spec")
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return ModelSpec(spec["name"], spec.get("pretrained"))
    return ModelSpec(index.identity.arch, "none" if index.identity.random_weights else index.identity.weights)


def check_model(index: OpenIndex, embedder: Embedder) -> None:
    if index.identity != embedder.identity:
        raise InputError(
            f"The index was built with {index.identity.label()}, but the loaded model is "
            f"{embedder.identity.label()}. Search with the index's model, or rebuild the index."
        )


def _regions(index: OpenIndex, found: list[tuple[int, float]], merge: bool) -> tuple[list[Region], list[Hit]]:
    hits = [Hit(i, s, index.window(i), index.scale_index(i)) for i, s in found]
    r = index.raster
    return merge_hits(hits, r.affine, r.georeferenced, r.is_geographic, r.linear_units_factor, merge), hits


def search_vector(
    index: OpenIndex,
    vector: np.ndarray,
    label: str,
    top_k: int,
    threshold: float | None,
    area: Area | None,
    merge: bool,
    exclude: np.ndarray | None = None,
    min_relative: float | None = None,
    heatmap: str | None = None,
) -> SearchResult:
    """Search ``index`` with a unit query vector; ``exclude`` is a boolean tile mask to leave out.

    Each region also gets a relative score: how many standard deviations its score lies above the mean
    score of the index's tiles for this query (estimated on a fixed sample of up to 20,000 tiles). Unlike
    the cosine score, whose typical level differs from query to query and model to model, it reads the
    same for every query; ``min_relative`` leaves out tiles below it. ``heatmap`` is a GeoTIFF path to
    write the best score per location to (see :mod:`.heatmap`).
    """
    started = time.perf_counter()
    allowed = tiles_in_area(index.tiles, area, index.raster.affine) if area is not None else None
    if exclude is not None:
        allowed = ~exclude if allowed is None else allowed & ~exclude
    mean, std = score_distribution(index, vector)
    if min_relative is not None:
        relative_floor = mean + float(min_relative) * std
        threshold = relative_floor if threshold is None else max(threshold, relative_floor)
        threshold = min(threshold, 1.0)
    found = index_top_hits(index, vector, top_k, threshold, allowed)
    regions, hits = _regions(index, found, merge)
    for region in regions:
        region.relative = (region.score - mean) / std
    extra: dict[str, Any] = {"score_mean": mean, "score_std": std}
    if heatmap:
        extra["heatmap"] = write_heatmap(index, vector, heatmap, mean, std)
    return SearchResult(
        label,
        regions,
        hits,
        index.identity.label(),
        index.identity.random_weights,
        index.raster.crs_wkt,
        time.perf_counter() - started,
        extra,
    )


SAMPLE_TILES = 20_000


def index_top_hits(
    index: OpenIndex, vector: np.ndarray, top_k: int, threshold: float | None = None, allowed: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Exact top-k of ``index``: on its GPU copy when it has one, else with Faiss on the CPU."""
    if index.device_matrix is not None:
        return matrix_top_hits(index.device_matrix, vector, top_k, threshold, allowed)
    return top_hits(index.vectors, vector, top_k, threshold, allowed)


def score_distribution(index: OpenIndex, vector: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the query's scores over a fixed, evenly spread sample of tiles."""
    scores = index.sample_vectors(SAMPLE_TILES) @ vector.astype(np.float32)
    std = float(scores.std())
    return float(scores.mean()), std if std > 1e-6 else 1e-6


def search(
    index: OpenIndex,
    embedder: Embedder,
    query: str,
    top_k: int = 20,
    threshold: float | None = None,
    area: Area | None = None,
    templates: Sequence[str] | None = AERIAL_TEMPLATES,
    merge: bool = True,
    negative: str | None = None,
    negative_weight: float = NEGATIVE_WEIGHT,
    relevant_ids: Sequence[int] | None = None,
    irrelevant_ids: Sequence[int] | None = None,
    min_relative: float | None = None,
    heatmap: str | None = None,
) -> SearchResult:
    """Text search: the ``top_k`` best tiles above ``threshold``, merged into regions, best first.

    ``negative`` text (or "… but not …" in the query) pushes results away from what it describes.
    ``relevant_ids`` / ``irrelevant_ids`` are tiles the user marked: the query moves toward the first
    and away from the second (Rocchio), and the irrelevant ones are left out of the results.
    """
    check_model(index, embedder)
    if negative is None:
        query, negative = split_negative(query)
    vector = embed_query(embedder, query, templates)
    label = " ".join(query.split())
    if negative:
        vector = with_negative(vector, embed_query(embedder, negative, templates), negative_weight)
        label += f" but not {' '.join(negative.split())}"
    exclude = None
    if relevant_ids or irrelevant_ids:
        relevant, irrelevant = (tile_vectors(index, ids) for ids in (relevant_ids, irrelevant_ids))
        vector = rocchio(vector, relevant, irrelevant)
        if irrelevant_ids:
            exclude = np.zeros(index.count, dtype=bool)
            exclude[np.asarray(irrelevant_ids, dtype=np.int64)] = True
        label += f" (feedback: {len(relevant_ids or [])} relevant, {len(irrelevant_ids or [])} not)"
    return search_vector(index, vector, label, top_k, threshold, area, merge, exclude, min_relative, heatmap)


def tile_vectors(index: OpenIndex, tile_ids: Sequence[int] | None) -> np.ndarray | None:
    """The stored vectors of these tiles (checked), or None for none."""
    if not tile_ids:
        return None
    bad = [i for i in tile_ids if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < index.count]
    if bad:
        raise InputError(f"Tile ids must be between 0 and {index.count - 1}; got {bad[:5]}.")
    vectors: np.ndarray = index.vectors.reconstruct_batch(np.asarray(tile_ids, dtype=np.int64))
    return vectors


def search_similar(
    index: OpenIndex,
    embedder: Embedder | None = None,
    tile_ids: Sequence[int] | None = None,
    bbox: tuple[float, float, float, float] | Sequence[tuple[float, float, float, float]] | None = None,
    top_k: int = 20,
    threshold: float | None = None,
    area: Area | None = None,
    merge: bool = True,
    exclude_examples: bool = True,
    min_relative: float | None = None,
    heatmap: str | None = None,
) -> SearchResult:
    """Search by example: tiles like ``tile_ids``, or like the window ``bbox`` (raster CRS) of the raster,
    or like several such windows (a list of boxes: their embeddings are averaged).

    The examples themselves (and tiles overlapping the example boxes) are left out unless
    ``exclude_examples`` is false.
    """
    if (tile_ids is None) == (bbox is None):
        raise InputError("Give either example tile ids or an example bounding box.")
    if tile_ids is not None:
        bad = [i for i in tile_ids if not 0 <= int(i) < index.count]
        if not tile_ids or bad:
            raise InputError(f"Tile ids must be between 0 and {index.count - 1}; got {list(tile_ids)}.")
        ids = np.asarray(tile_ids, dtype=np.int64)
        vector = normalise_rows(index.vectors.reconstruct_batch(ids).mean(axis=0, keepdims=True))[0]
        exclude = np.zeros(index.count, dtype=bool)
        exclude[ids] = exclude_examples
        label = f"similar to tile(s) {', '.join(str(int(i)) for i in ids)}"
    else:
        if embedder is None:
            raise InputError("Searching by an example box needs the index's model.")
        check_model(index, embedder)
        assert bbox is not None
        boxes = example_boxes(bbox)
        vector = normalise_rows(np.mean([embed_box(index, embedder, b) for b in boxes], axis=0, keepdims=True))[0]
        exclude = np.zeros(index.count, dtype=bool)
        for box in boxes:
            exclude |= tiles_in_area(index.tiles, box, index.raster.affine)
        exclude &= exclude_examples
        if len(boxes) == 1:
            label = "similar to box " + ", ".join(f"{v:g}" for v in boxes[0])
        else:
            label = f"similar to {len(boxes)} example boxes"
    return search_vector(index, vector, label, top_k, threshold, area, merge, exclude, min_relative, heatmap)


def example_boxes(value: Any) -> list[tuple[float, float, float, float]]:
    """One box (xmin, ymin, xmax, ymax) or a list of them, checked."""
    items = [value] if len(value) == 4 and all(isinstance(v, (int, float)) for v in value) else list(value)
    boxes = []
    for item in items:
        try:
            xmin, ymin, xmax, ymax = (float(v) for v in item)
        except (TypeError, ValueError):
            raise InputError(f"An example box is four numbers xmin, ymin, xmax, ymax; got {item!r}.") from None
        if not (xmin < xmax and ymin < ymax):
            raise InputError(f"An example box needs xmin < xmax and ymin < ymax; got {item!r}.")
        boxes.append((xmin, ymin, xmax, ymax))
    if not boxes:
        raise InputError("Give at least one example box.")
    return boxes


def embed_box(index: OpenIndex, embedder: Embedder, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Unit vector of the raster's content inside ``bbox`` (raster CRS), read and embedded now."""
    from .area import area_geometry
    from .regions import to_pixels

    info = index.raster
    if fingerprint_file(info.path) != info.fingerprint:
        raise InputError(f"{info.path} changed since it was indexed; build the index again.")
    geom = to_pixels(area_geometry(bbox), info.affine)
    c0, r0, c1, r1 = geom.bounds
    c0, r0 = max(0, int(np.floor(c0))), max(0, int(np.floor(r0)))
    c1, r1 = min(info.width, int(np.ceil(c1))), min(info.height, int(np.ceil(r1)))
    if c1 <= c0 or r1 <= r0:
        raise InputError("The example box does not overlap the raster; check that it is in the raster's CRS.")
    window = Window(c0, r0, c1 - c0, r1 - r0)
    factor = max(window.width, window.height) / embedder.input_size
    shape = (max(1, round(window.height / factor)), max(1, round(window.width / factor)))
    with open_dataset(info.path) as ds:
        rgb, _ = read_chunk(ds, info, window, shape)
    return embedder.encode_images(square(rgb)[None])[0]
