"""Shards of a distributed build: the part of a plan one task embeds, and the file it leaves.

A plan's tiles are taken in reading order (the order :func:`.reading.chunks_of` gives: by scale, then by
chunk of the source) and cut into contiguous runs of about the same number of tiles; a run is one task. A task
reads each chunk its run touches whole (so every tile is cut from the same resampled pixels as in a
single-process build, whatever the run's bounds) and embeds the non-empty tiles of its run in batches.

What a task leaves is one shard, two files in the shard folder of the plan named by the run (positions in
reading order): ``shard-<first>-<stop>.npy``, the vectors of the kept tiles (float32, one row a tile: a plain
array file, so that the merge reads the rows it needs memory-mapped, see :mod:`.sharded`), and
``shard-<first>-<stop>.npz``, the tile table rows of the kept tiles, their reading-order positions and the
side of their square pixels (which batch they joined). Each is written under a temporary name and renamed into
place, the vectors first: the ``.npz`` file is there only once its shard is whole, and one without its vectors
file is a part of a shard, read as absent. So a shard is whole or absent: a task that runs twice (its worker was
lost after writing, or a retry) writes the same files again, and a build of the same plan reuses the shards it
finds.

The task function runs in the worker processes; each keeps one model loaded across its tasks.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.embedder import Embedder, load_embedder
from ..errors import ModelError, storage_error
from ..settings import ModelSpec
from ..tiling.grid import Tile, tile_table
from ..tiling.raster_io import RasterInfo, bounded_block_cache
from .build import VERIFY_TILES, TileEmbedding
from .checkpoint import SHARD_FILE
from .reading import Cut, read_chunks, sample_tiles

MAX_TASKS = 64  # a plan is cut into about this many tasks: enough to share out, few enough to cost nothing
MAX_TASK_TILES = 4096  # beyond this a task's loss (a worker killed) costs too much to redo
ARRAYS = ("positions", "sides", "table")  # the arrays of a shard's .npz file (its vectors are beside it)
Chunk = tuple[float, list[Tile]]


@dataclass(frozen=True)
class ModelWork:
    """How a worker embeds: the model, where, with which backend (chosen and verified once by the client)."""

    spec: ModelSpec
    device: str
    backend: str
    batch_size: int
    identity: dict[str, Any]  # the client's model identity: a worker with other weights is refused
    threads: int  # the model's threads in each worker; 0: its host's cores shared by the Dask threads on the host
    host_threads: dict[str, int]  # Dask worker threads on each host of the cluster


@dataclass(frozen=True)
class ShardJob:
    """One task: the run ``[start, stop)`` of the plan's reading order, read from ``chunks`` (whole chunks; the
    run starts ``skip`` tiles into the first)."""

    folder: str
    start: int
    stop: int
    skip: int
    chunks: list[Chunk]
    info: RasterInfo
    base: int
    scales: tuple[float, ...]
    max_empty: float
    work: ModelWork

    @property
    def name(self) -> str:
        return shard_name(self.start, self.stop)


@dataclass
class Shard:
    """The arrays of one shard file, checked."""

    positions: np.ndarray  # int64: reading-order positions of the kept tiles
    sides: np.ndarray  # int32: the side of each tile's square pixels (its batch's shape)
    vectors: np.ndarray  # float32 (n, dim); memory-mapped from its file in a shard read back
    table: np.ndarray  # int32 (n, 5): column, row, width, height, scale index


def shard_name(start: int, stop: int) -> str:
    return f"shard-{start:08d}-{stop:08d}.npz"


def vectors_path(path: Path) -> Path:
    """The vectors file of the shard whose ``.npz`` file is ``path``."""
    return Path(path).with_suffix(".npy")


def shard_folder(target: Path, key: str) -> Path:
    """The shard folder of a plan (``key``) building ``target``: hidden, beside the target."""
    resolved = Path(target).resolve()
    return resolved.parent / f".{resolved.name}.shards-{key[:16]}"


def remove_shard_folders(target: Path) -> None:
    """Remove every shard folder of ``target`` (this plan's, once merged, and those of older plans), touching
    only folders that hold nothing but shard files."""
    resolved = Path(target).resolve()
    for folder in resolved.parent.glob(f".{glob_escape(resolved.name)}.shards-*"):
        with contextlib.suppress(OSError):
            if folder.is_dir() and all(SHARD_FILE.match(f.name) for f in folder.iterdir()):
                shutil.rmtree(folder)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def task_ranges(total: int, batch_size: int, task_tiles: int | None = None) -> list[tuple[int, int]]:
    """The runs ``[start, stop)`` of ``total`` tiles in reading order that tasks embed: about :data:`MAX_TASKS`
    runs of at least two batches and at most :data:`MAX_TASK_TILES` tiles, unless ``task_tiles`` is given. They
    depend on the plan alone, never on the cluster, so a build resumed on another cluster reuses the shards."""
    size = task_tiles or min(MAX_TASK_TILES, max(2 * batch_size, math.ceil(total / MAX_TASKS)))
    return [(start, min(total, start + size)) for start in range(0, total, max(1, size))]


def chunk_jobs(chunks: list[Chunk], folder: Path, ranges: list[tuple[int, int]],
               make: Callable[..., ShardJob]) -> list[ShardJob]:
    """One job per run, each given the whole chunks its run touches (``make(folder, start, stop, skip, chunks)``)."""
    ends = np.cumsum([len(group) for _, group in chunks])
    starts = ends - np.array([len(group) for _, group in chunks])
    jobs = []
    for start, stop in ranges:
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(ends, stop - 1, side="right"))
        jobs.append(make(str(folder), start, stop, start - int(starts[first]), chunks[first : last + 1]))
    return jobs


def write_shard(folder: Path, name: str, shard: Shard) -> None:
    """Write a shard: its vectors file, then its ``.npz`` file (the mark of a whole shard), each under a temporary
    name (unique to this process and call), flushed, renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _write_whole(vectors_path(folder / name), lambda f: np.save(f, shard.vectors, allow_pickle=False))
        _write_whole(folder / name, lambda f: np.savez(f, **{key: getattr(shard, key) for key in ARRAYS}))
    except OSError as exc:
        full = storage_error(exc, folder)
        if full is not None:
            raise full from exc
        raise


def _write_whole(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` to a temporary name beside ``path``, flushed and renamed to ``path`` (removed if it fails)."""
    scratch = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(scratch, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(scratch, path)
    except OSError:
        scratch.unlink(missing_ok=True)
        raise


def read_shard(path: Path, dim: int) -> Shard | None:
    """The shard whose ``.npz`` file is ``path``, its vectors memory-mapped (not read), or None when it is absent,
    a part (its vectors file missing) or not a whole shard of vectors of ``dim``."""
    try:
        with np.load(path, allow_pickle=False) as found:
            positions, sides, table = (found[key] for key in ARRAYS)
        vectors = np.load(vectors_path(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    n = len(positions)
    if not (vectors.shape == (n, dim) and vectors.dtype == np.float32 and len(sides) == n
            and table.shape == (n, 5)):
        return None
    return Shard(positions, sides, vectors, table)


_LOADED: dict[tuple[Any, ...], Embedder] = {}  # this worker's model, kept across its tasks


def worker_embedder(work: ModelWork, sample: Callable[[int], np.ndarray]) -> Embedder:
    """The model this worker embeds with, loaded at its first task and kept (one at a time: memory). A backend
    other than the model itself is verified on ``sample(input size)`` unless it was on this computer before."""
    key = (work.spec.name, work.spec.pretrained, work.device, work.backend)
    if key not in _LOADED:
        _LOADED.clear()
        _set_threads(work)
        embedder = load_embedder(work.spec, work.device)
        if embedder.identity.to_dict() != work.identity:
            raise ModelError(f"A worker loaded other weights for {embedder.identity.label()} than this computer "
                             "did; give every worker the same model files (or the same weights tag).")
        if work.backend != "torch":
            embedder.use_backend(work.backend, lambda: sample(embedder.input_size), None)
            if embedder.backend.name != work.backend:
                raise ModelError(f"A worker could not use the backend {work.backend} ({embedder.backend.note}); "
                                 "build with --backend torch, or give the workers the same runtime.")
        _LOADED[key] = embedder
    return _LOADED[key]


def _set_threads(work: ModelWork) -> None:
    """The model's threads: as given, or this host's cores shared by the Dask worker threads on it, so that
    workers side by side do not oversubscribe the cores."""
    import torch

    threads = work.threads
    if threads <= 0:
        threads = max(1, (os.cpu_count() or 1) // max(1, work.host_threads.get(_this_host(), 1)))
    torch.set_num_threads(threads)


def _this_host() -> str:
    """The host of the Dask worker running this ("" outside one)."""
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        return str(get_address_host(get_worker().address))
    except (ImportError, ValueError):
        return ""


def embed_shard(job: ShardJob) -> str:
    """The task: embed the job's run into its shard (skipped when the shard is there already); its name."""
    folder = Path(job.folder)
    if (folder / job.name).is_file() and vectors_path(folder / job.name).is_file():
        return job.name  # done before: by a run of this build on a worker since lost, or by an earlier build
    run = [t for _, group in job.chunks for t in group][job.skip : job.skip + job.stop - job.start]
    embedder = worker_embedder(job.work, lambda size: sample_tiles(job.info, run, job.base, job.scales, size,
                                                                    VERIFY_TILES, job.max_empty))
    wanted = {tile: job.start + n for n, tile in enumerate(run)}
    embedding = _SidedEmbedding(run, embedder, job.work.batch_size)
    with bounded_block_cache(job.info), contextlib.closing(
            read_chunks(job.info, job.chunks, embedder.input_size, 1)) as chunks:
        for cuts in chunks:
            mine: list[Cut] = [cut for cut in cuts if cut[0] in wanted]
            embedding.embed(mine, 0, len(run), job.max_empty, lambda done, total: None, lambda: False)
    for shape in sorted(embedding.pending):
        embedding.flush(shape)
    write_shard(folder, job.name, embedding.shard(wanted))
    return job.name


class _SidedEmbedding(TileEmbedding):
    """A :class:`.build.TileEmbedding` that remembers the batch shape of each kept tile (for the merge)."""

    def __init__(self, tiles: list[Tile], embedder: Embedder, batch_size: int) -> None:
        super().__init__(tiles, embedder, batch_size)
        self.sides: list[int] = []

    def flush(self, shape: tuple[int, ...]) -> None:
        count = len(self.pending[shape])
        super().flush(shape)
        self.sides.extend([shape[0]] * count)

    def shard(self, positions: dict[Tile, int]) -> Shard:
        dim = self.embedder.dim
        vectors = np.concatenate([v for v, _ in self.unsaved]) if self.unsaved else np.zeros((0, dim), np.float32)
        return Shard(np.array([positions[t] for t in self.kept], dtype=np.int64),
                     np.array(self.sides, dtype=np.int32), np.ascontiguousarray(vectors, dtype=np.float32),
                     tile_table(self.kept))


def single_process_order(positions: np.ndarray, sides: np.ndarray, batch_size: int) -> np.ndarray:
    """The order in which a single-process build keeps these tiles: it takes them in reading order into one batch
    per shape, keeps a batch when it is full, and the batches left over at the end by shape (see
    :class:`.build.TileEmbedding`). Returns indices into ``positions``.

    Computed on whole arrays (tens of millions of tiles in seconds): a full batch is kept when its last tile is
    taken, so each tile's key is the reading rank of its batch's last tile, and a left-over tile's key is past
    every rank, by side; a stable sort by key keeps reading order within each batch."""
    reading = np.argsort(positions, kind="stable")
    side = np.asarray(sides)[reading]
    key = np.empty(len(reading), dtype=np.int64)
    for rank, value in enumerate(np.unique(side)):
        members = np.flatnonzero(side == value)  # reading ranks of the tiles of this side
        full = len(members) // batch_size * batch_size
        key[members[:full]] = np.repeat(members[batch_size - 1 : full : batch_size], batch_size)
        key[members[full:]] = len(reading) + rank
    return np.asarray(reading[np.argsort(key, kind="stable")], dtype=np.int64)
