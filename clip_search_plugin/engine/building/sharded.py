"""The vectors of a distributed build's shards read as one index, never all held: how a cluster build of more
tiles than fit in memory is merged.

The shards (see :mod:`.shards`) hold the vectors in the order their tasks embedded them; a single-process build
keeps them in another, by batch (see :func:`.shards.single_process_order`). :class:`ShardedVectors` answers, in
that order, what a compact index is built from (``ntotal``, ``d``, ``reconstruct_n`` and ``reconstruct_batch``,
as a Faiss index does; see :func:`..index.compact.from_faiss`): it reads the rows asked for from the shards'
vector files, memory-mapped and let go once read. It holds the row of each vector among all the shards' rows (4
bytes a tile; 8 from 2^31 tiles) and where each shard's rows begin, nothing else: the vectors of 67 million
512-dimensional tiles are 137 GB, their rows 0.27 GB. Below the compact threshold a build copies them into a
flat Faiss index (:meth:`ShardedVectors.flat`), block by block, as a single-process build holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .shards import read_shard, single_process_order, vectors_path

BLOCK = 65_536  # vectors copied at a time into a flat index (128 MB at 512-d)


class ShardLost(InputError):
    """A shard's vectors file went missing, or changed, after the shards were checked."""


class ShardedVectors:
    """The vectors of a build's shards, read-only and in the order a single-process build keeps its tiles (see
    the module): the reading half of a Faiss index, with the vectors left in the shards' files."""

    def __init__(self, files: list[Path], offsets: np.ndarray, rows: np.ndarray, dim: int) -> None:
        self.files = files  # each shard's vectors file
        self.offsets = np.asarray(offsets, dtype=np.int64)  # where each shard's rows begin among all, and the end
        self.rows = rows  # by id: the vector's row among all the shards' rows (shard after shard)
        self.d = int(dim)

    @property
    def ntotal(self) -> int:
        return len(self.rows)

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        """The vectors of ids ``start`` to ``start + n`` (fewer at the end) as float32."""
        start = max(0, int(start))
        n = max(0, min(int(n), self.ntotal - start))
        return self._read(self.rows[start : start + n])

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of ``ids`` (in their order, repeats allowed) as float32."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.ntotal):
            raise ValueError(f"ids beyond the {self.ntotal} vectors")
        return self._read(self.rows[ids])

    def flat(self) -> Any:
        """The vectors copied into a flat Faiss index (inner product), :data:`BLOCK` at a time."""
        import faiss

        index = faiss.IndexFlatIP(self.d)
        for start in range(0, self.ntotal, BLOCK):
            index.add(self.reconstruct_n(start, BLOCK))
        return index

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The vectors at ``rows`` (among all the shards' rows) as float32: each shard touched mapped once and
        its rows read in file order, so that a run of ids reads a run of each file."""
        out = np.empty((len(rows), self.d), dtype=np.float32)
        if not len(rows):
            return out
        by_row = np.argsort(rows, kind="stable")
        ordered = rows[by_row].astype(np.int64)
        shard = np.searchsorted(self.offsets, ordered, side="right") - 1  # an empty shard is never one's
        bounds = np.flatnonzero(np.diff(shard)) + 1
        for first, stop in zip(np.r_[0, bounds], np.r_[bounds, len(rows)], strict=True):
            s = int(shard[first])
            out[by_row[first:stop]] = self._mapped(s)[ordered[first:stop] - self.offsets[s]]
        return out

    def _mapped(self, shard: int) -> np.ndarray:
        """The vectors file of ``shard``, memory-mapped (unmapped when the array is let go)."""
        path = self.files[shard]
        rows = int(self.offsets[shard + 1] - self.offsets[shard])
        try:
            found = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ShardLost(f"The vectors of a part of the build cannot be read from {path}: {exc}") from exc
        if found.shape != (rows, self.d) or found.dtype != np.float32:
            raise ShardLost(f"The vectors of a part of the build in {path} changed since it was checked.")
        return found


def merge_shards(folder: Path, names: list[str], dim: int, batch_size: int) -> tuple[ShardedVectors, np.ndarray] | None:
    """The vectors (left in their files, see :class:`ShardedVectors`) and the tile table of the shards ``names``
    in ``folder``, in the order a single-process build keeps its tiles; None when one of them is absent or not
    whole. Only each shard's small arrays are read: 32 bytes a tile, the table's 20 kept."""
    counts, positions, sides = [0], [np.zeros(0, np.int64)], [np.zeros(0, np.int32)]
    tables = [np.zeros((0, 5), np.int32)]
    for name in names:
        shard = read_shard(folder / name, dim)
        if shard is None:
            return None
        counts.append(len(shard.positions))
        positions.append(shard.positions)
        sides.append(shard.sides)
        tables.append(shard.table)
    every_position, every_side = np.concatenate(positions), np.concatenate(sides)
    del positions, sides  # each held once at a time: these arrays are a few GB for tens of millions of tiles
    order = single_process_order(every_position, every_side, batch_size)
    del every_position, every_side
    table = np.ascontiguousarray(np.concatenate(tables)[order], dtype=np.int32)
    rows = order.astype(np.int32 if len(order) < 2**31 else np.int64)
    files = [vectors_path(folder / name) for name in names]
    return ShardedVectors(files, np.cumsum(counts), rows, dim), table
