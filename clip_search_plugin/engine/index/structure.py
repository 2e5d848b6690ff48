"""How an index's vectors are searched, chosen by their number when the index is made: by a build, by the merge
of a cluster build, by an import.

- Below ``approximate_from`` tiles (:data:`.ann.APPROXIMATE_FROM` by default): exact search over a flat index.
- From there: an IVF-Flat index (see :mod:`.ann`), its probe count calibrated on text queries of the model, so
  only when such queries are given (an import without its model is searched exactly at this size).
- From :data:`.compact.COMPACT_FROM` tiles: the compact index (see :mod:`.compact`), whose vectors stay on disk;
  calibrated on the text queries when given, and always on stored vectors (search by example).

The vectors are given as a Faiss index or anything that reads like one (``ntotal``, ``reconstruct_n``,
``reconstruct_batch``): a compact index is made from them block by block, never all in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from . import compact
from .ann import build_ivf
from .store import default_cache_root

log = logging.getLogger(__name__)


def searchable(vectors: Any, text_queries: np.ndarray | None, approximate_from: int) -> tuple[Any, dict[str, Any]]:
    """The vectors as searched and the manifest's "search" entry (see the module); ``text_queries``: unit
    vectors of the model's calibration concepts, or None when the model is not at hand."""
    count = int(vectors.ntotal)
    if count < approximate_from:
        return vectors, {"kind": "exact"}
    if is_compact(count, approximate_from):
        # the float16 vectors are written to an unnamed file where indexes are kept (room for them is likely)
        index = compact.from_faiss(vectors, default_cache_root())
        queries = text_queries if text_queries is not None else np.zeros((0, index.d), dtype=np.float32)
        settings = dict(compact.calibrate(index, queries), compact_from=compact.COMPACT_FROM)
        log.info("compact index: %s", settings)
        return index, settings
    if text_queries is None:
        return vectors, {"kind": "exact"}
    ivf, settings = build_ivf(vectors, text_queries)
    log.info("approximate index: %s", settings)
    return ivf, settings


def is_compact(count: int, approximate_from: int) -> bool:
    """Whether :func:`searchable` stores ``count`` vectors compactly: then they are read block by block and need
    not be in a Faiss index (or in memory) beforehand. :data:`.compact.COMPACT_FROM` is read at each call."""
    return count >= max(compact.COMPACT_FROM, approximate_from)


class ArrayVectors:
    """Vectors held in a numpy array, read as a Faiss index is (``ntotal``, ``d``, ``reconstruct_n``,
    ``reconstruct_batch``): what a compact index is made from without a second, flat copy of them."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.ntotal, self.d = (int(v) for v in vectors.shape)

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        return np.ascontiguousarray(self.vectors[start : start + n], dtype=np.float32)

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.vectors[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

