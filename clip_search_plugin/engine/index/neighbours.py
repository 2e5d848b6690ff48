"""Look-alike re-ranking: each tile's mutual nearest neighbours among the index's tiles, found once when the
index is built, and a query's scores smoothed over them.

A tile's *look-alikes* are the tiles that are among its :data:`NEIGHBOURS` nearest (by cosine of the
image vectors, tiles that share pixels with it left out: those are shifted copies of the same ground) and
that have it among theirs (mutual nearest neighbours). With re-ranking on, a tile's score for a query is the
mean of its own cosine score and its look-alikes' scores: a tile that looks like other tiles the query
matches rises, one that matches the text alone while nothing like it does sinks. Mutual neighbours keep
this from drifting when what is sought is rare (a tile whose nearest tiles are of a common kind is seldom
among *their* nearest), which is why it helps on both protocols of ``scripts/evaluate.py --embeddings``
where query expansion from the top results helps only when positives are common.

The lists are an int32 (N, NEIGHBOURS) table, -1 where a tile has fewer look-alikes (40 bytes a tile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..tiling.area import share_pixels

log = logging.getLogger(__name__)

NEIGHBOURS = 10
SEARCHED = 48  # nearest tiles searched per tile: enough for NEIGHBOURS after its overlapping tiles are left out
EXACT_UPTO = 20_000  # tiles; above this the neighbours are searched cell by cell (k-means cells)
PROBES = 64  # cells searched per cell
BLOCK = 16_384

ReadVectors = Callable[[np.ndarray], np.ndarray]


def mutual_neighbours(vectors: Any, tiles: np.ndarray | None = None, k: int = NEIGHBOURS,
                      exact_upto: int = EXACT_UPTO) -> np.ndarray:
    """The look-alike table of the unit vectors in the Faiss index ``vectors`` (flat or IVF).

    ``tiles`` is the index's (N, 5) tile table: tiles whose windows share pixels are not each other's
    neighbours (None: no tile overlaps another, e.g. separate scenes). Up to ``exact_upto`` tiles the nearest
    are searched exactly; above, cell by cell (see :func:`_nearest_by_cells`)."""
    n = int(vectors.ntotal)
    if n < 2:
        return np.full((n, k), -1, dtype=np.int32)
    searched = min(n, SEARCHED + 1 if tiles is not None else k + 1)
    if n > exact_upto or hasattr(vectors, "nprobe"):
        return _mutual(_nearest_by_cells(vectors, tiles, k, searched))
    nearest = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        _, found = vectors.search(np.ascontiguousarray(vectors.reconstruct_n(start, stop - start)), searched)
        nearest[start:stop] = _first_apart(np.arange(start, stop), found, tiles, k)
    return _mutual(nearest)


def _nearest_by_cells(vectors: Any, tiles: np.ndarray | None, k: int, searched: int) -> np.ndarray:
    """Each tile's nearest, searched among the tiles of the :data:`PROBES` k-means cells nearest to its own
    cell: one matrix product per cell (BLAS), several times faster than probing cells query by query."""
    import faiss

    from .ann import cell_count

    n, dim = int(vectors.ntotal), int(vectors.d)
    cells = min(cell_count(n), max(1, n // 64))
    sample = np.unique(np.linspace(0, n - 1, num=min(n, 64 * cells)).astype(np.int64))
    kmeans = faiss.Kmeans(dim, cells, niter=10, seed=1, spherical=True)
    kmeans.train(np.ascontiguousarray(vectors.reconstruct_batch(sample), dtype=np.float32))
    cell = np.concatenate([kmeans.index.search(np.ascontiguousarray(vectors.reconstruct_n(s, min(BLOCK, n - s))), 1)[1]
                           [:, 0] for s in range(0, n, BLOCK)])
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(cells + 1))
    centroids = np.asarray(kmeans.centroids, dtype=np.float32)
    _, near_cells = faiss.knn(centroids, centroids, min(PROBES, cells), faiss.METRIC_INNER_PRODUCT)
    nearest = np.full((n, k), -1, dtype=np.int64)
    for c in range(cells):
        members = order[bounds[c]:bounds[c + 1]]
        if members.size == 0:
            continue
        candidates = np.concatenate([order[bounds[o]:bounds[o + 1]] for o in near_cells[c] if o >= 0])
        _, found = faiss.knn(vectors.reconstruct_batch(members), vectors.reconstruct_batch(candidates),
                             min(searched, candidates.size), faiss.METRIC_INNER_PRODUCT)
        nearest[members] = _first_apart(members, np.where(found >= 0, candidates[np.maximum(found, 0)], -1), tiles, k)
    return nearest


def _first_apart(ids: np.ndarray, found: np.ndarray, tiles: np.ndarray | None, k: int) -> np.ndarray:
    """Per row, the first ``k`` tiles of ``found`` that are neither the tile itself nor overlapping it."""
    keep = (found >= 0) & (found != ids[:, None])
    if tiles is not None:
        keep &= ~share_pixels(tiles[ids][:, None, :], tiles[np.maximum(found, 0)])
    rank = np.cumsum(keep, axis=1)
    out = np.full((len(ids), k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep & (rank <= k))
    out[rows, rank[rows, cols] - 1] = found[rows, cols]
    return out


def _mutual(nearest: np.ndarray) -> np.ndarray:
    """Only the neighbours that have the tile among theirs, packed to the left; -1 elsewhere."""
    n, k = nearest.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = nearest.ravel()
    valid = cols >= 0
    forward = rows[valid] * n + cols[valid]
    backward = cols[valid] * n + rows[valid]
    mutual = np.zeros(n * k, dtype=bool)
    mutual[np.flatnonzero(valid)] = np.isin(backward, forward)
    kept = np.where(mutual.reshape(n, k), nearest, -1)
    order = np.argsort(kept < 0, axis=1, kind="stable")  # kept ones first, in their order of nearness
    return np.take_along_axis(kept, order, axis=1).astype(np.int32)


def smoothed(found: list[tuple[int, float]], query: np.ndarray, table: np.ndarray,
             read_vectors: ReadVectors) -> list[tuple[int, float]]:
    """The tiles of ``found`` (tile id, cosine score) scored by the mean of their own and their look-alikes'
    cosine scores, best first (ties keep the order of ``found``). Every score is computed here from the stored
    vectors, so the order does not depend on where the search ran (Faiss, a GPU)."""
    if not found:
        return []
    ids = np.fromiter((i for i, _ in found), dtype=np.int64, count=len(found))
    rows = table[ids].astype(np.int64)
    valid = rows >= 0
    every = np.unique(np.concatenate([ids, rows[valid]]))
    score = (read_vectors(every) @ np.asarray(query, dtype=np.float32)).astype(np.float64)
    own = score[np.searchsorted(every, ids)]
    others = np.where(valid, score[np.searchsorted(every, np.where(valid, rows, ids[:, None]))], 0.0)
    mean = (own + others.sum(axis=1)) / (1 + valid.sum(axis=1))
    order = np.argsort(-mean, kind="stable")
    return [(int(ids[i]), float(mean[i])) for i in order]


def smoothed_all(scores: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Every tile's score with its look-alikes (as :func:`smoothed`), from the cosine scores of all tiles."""
    valid = table >= 0
    total = scores.astype(np.float64) + np.where(valid, scores[np.maximum(table, 0)], 0.0).sum(axis=1)
    return (total / (1 + valid.sum(axis=1))).astype(np.float32)
