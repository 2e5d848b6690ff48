"""Reading a plan's tiles: grouped into chunks of the source, each read once (resampled to the model's scale)
and cut into its tiles, in background threads that read ahead a bounded number of chunks."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..sources.access import BlankSourceError, forget_tiles
from ..tiling.grid import Tile
from ..tiling.raster_io import RasterInfo, bounded_block_cache, open_source, read_chunk

CHUNK_SOURCE_PIXELS = 2048
READ_AHEAD = 3  # chunks each reader may have ready before the model takes them: bounded memory
Cut = tuple[Tile, np.ndarray, float]


def chunks_of(tiles: Sequence[Tile], base: int, scales: Sequence[float]) -> Iterator[tuple[float, list[Tile]]]:
    """Tiles grouped by scale and by a coarse grid of source chunks, in reading order."""
    for scale_index, scale in enumerate(scales):
        span = max(CHUNK_SOURCE_PIXELS, 2 * round(base * scale))
        groups: dict[tuple[int, int], list[Tile]] = {}
        for t in tiles:
            if t.scale_index == scale_index:
                groups.setdefault((t.window.row_off // span, t.window.col_off // span), []).append(t)
        for key in sorted(groups):
            yield base * scale, groups[key]


def cut_tiles(
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
        with bounded_block_cache(info):
            ds = getattr(local, "ds", None)
            if ds is None:
                ds = local.ds = open_source(info)
                with lock:
                    handles.append(ds)
            source_size, group = job
            return list(cut_tiles(ds, info, group, source_size, input_size))

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


class BlankWatch:
    """A server that answers every tile with one colour (its "no imagery here" image, or an error drawn as a
    tile) is caught in the first chunks read, before hours of embedding; its cached tiles are dropped."""

    CHUNKS = 3

    def __init__(self, info: RasterInfo, chunks: int) -> None:
        self.info, self.left, self.colours = info, min(self.CHUNKS, chunks), set[tuple[int, ...]]()

    def see(self, cuts: list[Cut]) -> None:
        if self.left <= 0:
            return
        self.left -= 1
        for _, pixels, empty in cuts:
            if empty >= 1.0:
                continue
            flat = pixels.reshape(-1, pixels.shape[-1])
            if (flat != flat[0]).any():
                self.left = 0  # imagery: nothing more to watch
                return
            self.colours.add(tuple(int(v) for v in flat[0]))
        if self.left == 0 and len(self.colours) == 1:
            forget_tiles(self.info.path)
            colour = ", ".join(map(str, next(iter(self.colours))))
            raise BlankSourceError(
                f"{self.info.title} sent blank tiles: everything read so far is one colour (RGB {colour}). The "
                "service may have no imagery in this area or at this resolution, or it may want a key: check the "
                "layer in QGIS at this place and zoom, then index again.")


def sample_tiles(info: RasterInfo, tiles: Sequence[Tile], base: int, scales: Sequence[float], input_size: int,
                 count: int, max_empty: float) -> np.ndarray:
    """Up to ``count`` non-empty tiles of the plan, spread over it, as one (N, S, S, 3) uint8 batch of the model's
    input size: imagery of this raster to compare backends on (see :mod:`..embedding.backends.choice`)."""
    first_scale = [t for t in tiles if t.scale_index == 0]
    picked = first_scale[:: max(1, len(first_scale) // (2 * count))][: 2 * count]  # twice as many: some are empty
    found: list[np.ndarray] = []
    jobs = list(chunks_of(picked, base, scales[:1]))
    with bounded_block_cache(info), contextlib.closing(read_chunks(info, jobs, input_size, 1)) as chunks:
        for cuts in chunks:
            found.extend(p for _, p, empty in cuts if empty <= max_empty and p.shape == (input_size, input_size, 3))
            if len(found) >= count:
                break
    return np.stack(found[:count]) if found else np.zeros((0, input_size, input_size, 3), np.uint8)
