"""The compact index of very large indexes (millions of tiles): IVF-PQ codes to find candidates, and the
candidates re-scored exactly from float16 vectors that stay on disk.

Exact and IVF-Flat indexes keep every vector as float32 in memory: 67 million tiles of a 512-dimensional model
are 137 GB, beyond any desktop. From :data:`COMPACT_FROM` tiles an index stores instead

- ``vectors.faiss``: a Faiss IVF-PQ index (inner product; one byte of product-quantised code for every
  :data:`DIMS_PER_CODE` dimensions: 64 bytes a 512-d vector), read with Faiss's memory-mapped inverted
  lists so that only the probed cells come into RAM;
- ``vectors16.npy``: every vector as float16 (half the float32 size), opened with ``np.load(mmap_mode="r")``.

A query scans the codes of its ``nprobe`` nearest cells, takes the best :data:`CANDIDATES` of them, reads those
rows of the float16 file and returns their exact cosine scores, best first: the order and the scores are exact
among the candidates, and the codes only have to put the true top k among a few hundred. :class:`CompactIndex`
answers what the engine asks of a Faiss index (``ntotal``, ``d``, ``nprobe``, ``search`` with an id selector,
``reconstruct_batch``, ``reconstruct_n``), so the search path does not know which kind it searches. The build
streams: vectors are added block by block and the float16 file written as they come, so no full copy is held.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import IndexFormatError
from .ann import recall

# tiles; below, the IVF-Flat index (float32 in memory, 2 GB a million 512-d tiles) answers faster and fits a desktop;
# from 2M tiles its 4 GB pass what a desktop spares beside QGIS, while the compact index needs ~0.2 GB a million
COMPACT_FROM = 2_000_000
FLOAT16_FILE = "vectors16.npy"
DIMS_PER_CODE = 4  # dimensions a sub-quantiser codes in one byte: 128 bytes a 512-d tile (see calibrate)
NBITS = 8
CANDIDATES = 256  # the codes' best re-scored exactly from the float16 file: where calibration starts
MAX_CANDIDATES = 8192  # ... and where it stops doubling them (8 MB of float16 rows read a query at 512-d)
MIN_GAIN = 0.005  # recall a doubling of the probes must add to be worth more than more candidates
TARGET_RECALL = 0.97  # recall@RECALL_K the probe count is calibrated to (0.95 promised, a margin kept)
# the cost of a query, measured on one core (AVX2) at 10M tiles: scanning the probed cells' codes, per byte of
# code, and reading plus re-scoring one candidate's float16 row (a page fault and a 1 KB copy): calibration
# takes the cheapest probes and candidates that reach the target by these
SCAN_NS_PER_CODE_BYTE = 0.7
ROW_US = 8.0
RECALL_K = 20
TRAIN_SIZE = 131_072  # vectors the cells and codebooks are trained on (spread over the whole index), at least
TRAIN_PER_CELL = 39  # ... and this many a cell (Faiss's minimum for k-means), so that the cells grow with the index
BLOCK = 65_536
ROWS_MAPPED = 256  # rows read through the map before its pages are let go (bounds the memory a query maps)
HASH_WHOLE_UPTO = 256 << 20  # bytes; larger data files of a compact index are checked by a sampled checksum
SAMPLES, SAMPLE_BYTES = 256, 1 << 16

log = logging.getLogger(__name__)


def compact_cells(n: int) -> int:
    """IVF cells for ``n`` vectors: about sqrt(n), a power of two between 64 and 65,536 (fewer than IVF-Flat's
    2 * sqrt(n): every added vector is compared with each cell centre, and that dominates a streamed build)."""
    return int(min(65_536, max(64, 2 ** round(np.log2(np.sqrt(max(n, 1)))))))


def train_size(n: int) -> int:
    """Vectors to train the cells and codebooks of an index of ``n`` on: :data:`TRAIN_SIZE`, or more where its
    cells need them (8,192 cells at 100M tiles: 319,488 vectors, 0.65 GB), never more than ``n``."""
    return min(n, max(TRAIN_SIZE, TRAIN_PER_CELL * compact_cells(n)))


class CompactIndex:
    """IVF-PQ candidates re-scored on float16 vectors read from a memory-mapped file (see the module)."""

    on_disk = True  # the vectors are not held in memory: not copied to a GPU, read by the rows asked for

    def __init__(self, coarse: Any, vectors16: np.ndarray, source: IO[bytes], offset: int,
                 candidates: int = CANDIDATES) -> None:
        self.coarse = coarse
        self.vectors16 = vectors16  # mapped: rows read by id
        self.candidates = candidates
        self._source, self._offset = source, offset  # the same file read in runs (whole blocks of rows)
        self._lock = threading.Lock()
        self._map = getattr(vectors16, "_mmap", None)

    @property
    def ntotal(self) -> int:
        return int(self.vectors16.shape[0])

    @property
    def d(self) -> int:
        return int(self.vectors16.shape[1])

    @property
    def nprobe(self) -> int:
        return int(self.coarse.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.coarse.nprobe = int(value)

    @property
    def nlist(self) -> int:
        return int(self.coarse.nlist)

    @property
    def code_size(self) -> int:
        """Bytes of code a vector."""
        return int(self.coarse.code_size)

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of each query's best ``k``, exact cosine scores, -1 ids where fewer were found.
        ``params`` (Faiss SearchParametersIVF: an id selector, nprobe) restrict the candidates."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.d)
        _, found = self.coarse.search(queries, max(k, self.candidates), params=params)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        every = np.unique(found[found >= 0])
        rows = self.reconstruct_batch(every)
        for q, query in enumerate(queries):
            mine = found[q][found[q] >= 0]
            exact = rows[np.searchsorted(every, mine)] @ query
            best = np.argsort(-exact, kind="stable")[:k]
            scores[q, : len(best)], ids[q, : len(best)] = exact[best], mine[best]
        return scores, ids

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` as float32, read in id order (neighbouring pages, fewer seeks)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        order = np.argsort(ids, kind="stable")
        out = np.empty((ids.size, self.d), dtype=np.float32)
        release = self._map is not None and hasattr(mmap, "MADV_DONTNEED")
        for start in range(0, ids.size, ROWS_MAPPED):
            part = order[start : start + ROWS_MAPPED]
            out[part] = self.vectors16[ids[part]]
            if release:
                # the pages read stay in the system's file cache but leave this process: the kernel maps whole
                # cached folios (up to MBs) for a 1 KB row, and queries would keep most of the file resident
                self._map.madvise(mmap.MADV_DONTNEED)  # type: ignore[union-attr]
        return out

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        """Rows ``start`` to ``start + n`` as float32, read as one run of the file rather than through the map:
        the system reads ahead, and a scan of every vector (heatmaps, look-alikes) does not stay resident."""
        n = max(0, min(n, self.ntotal - start))
        with self._lock:
            self._source.seek(self._offset + start * self.d * 2)
            data = self._source.read(n * self.d * 2)
        return np.frombuffer(data, dtype=np.float16).reshape(n, self.d).astype(np.float32)

    def save_float16(self, path: Path) -> None:
        """Write the float16 file at ``path``: a copy of the file the vectors are read from, header included."""
        with open(path, "wb") as out, self._lock:
            self._source.seek(0)
            shutil.copyfileobj(self._source, out, 1 << 24)

    def settings(self) -> dict[str, Any]:
        """The structure as the manifest's "search" entry records it."""
        return {"kind": "compact", "nlist": self.nlist, "nprobe": self.nprobe, "m": int(self.coarse.pq.M),
                "nbits": int(self.coarse.pq.nbits), "candidates": self.candidates, "compact_from": COMPACT_FROM}


def train_coarse(sample: np.ndarray, n: int, m: int | None = None, nbits: int = NBITS,
                 nlist: int | None = None) -> Any:
    """An empty IVF-PQ index for ``n`` vectors, its cells and codebooks trained on ``sample``; ``m`` bytes of
    code a vector (default: one a :data:`DIMS_PER_CODE` dimensions)."""
    import faiss

    dim = sample.shape[1]
    m = m or max(1, dim // DIMS_PER_CODE)
    if dim % m:
        m = next(c for c in range(m, 0, -1) if dim % c == 0)  # sub-quantisers must split the dimension evenly
    nlist = nlist or min(compact_cells(n), max(1, len(sample) // TRAIN_PER_CELL))
    nbits = min(nbits, int(np.log2(max(2, len(sample)))))  # a codebook of 2**nbits needs as many vectors to train
    coarse = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    coarse.train(np.ascontiguousarray(sample, dtype=np.float32))
    return coarse


def build_compact(sample: np.ndarray, blocks: Iterable[np.ndarray], count: int, scratch_dir: Path,
                  **structure: Any) -> CompactIndex:
    """A compact index of the ``count`` vectors that ``blocks`` yields in id order (never all in memory),
    trained on ``sample``; the float16 vectors go to an unnamed file in ``scratch_dir`` (removed by the system
    when it is closed), copied into the index folder by ``store.write_index``."""
    dim = sample.shape[1]
    coarse = train_coarse(sample, count, **structure)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryFile(dir=scratch_dir)
    np.lib.format.write_array_header_1_0(
        scratch, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
                  "shape": (count, dim)})
    offset = scratch.tell()
    added = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        coarse.add(block)
        scratch.write(block.astype(np.float16).tobytes())
        added += len(block)
    if added != count:
        scratch.close()
        raise ValueError(f"expected {count} vectors, the source gave {added}")
    scratch.flush()
    mapped = np.memmap(scratch, dtype=np.float16, mode="r", offset=offset, shape=(count, dim))
    return CompactIndex(coarse, random_access(mapped), scratch, offset)


def random_access(mapped: np.ndarray) -> np.ndarray:
    """The memory-mapped rows read page by page, without the kernel's read-ahead: a re-scored candidate is
    one 1 KB row, and read-ahead would bring 128 KB of its neighbours into memory with it."""
    raw = getattr(mapped, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        raw.madvise(mmap.MADV_RANDOM)
    return mapped


def from_faiss(vectors: Any, scratch_dir: Path, **structure: Any) -> CompactIndex:
    """A compact index of the vectors of the Faiss index ``vectors`` (read from it block by block)."""
    n = int(vectors.ntotal)
    spread = np.unique(np.linspace(0, n - 1, num=train_size(n)).astype(np.int64))
    blocks = (vectors.reconstruct_n(s, min(BLOCK, n - s)) for s in range(0, n, BLOCK))
    return build_compact(vectors.reconstruct_batch(spread), blocks, n, scratch_dir, **structure)


def exact_top(index: Any, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of each query's true top ``k`` by brute force over the stored vectors, block by block."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    n = int(index.ntotal)
    for start in range(0, n, 4 * BLOCK):
        scores = index.reconstruct_n(start, min(4 * BLOCK, n - start)) @ queries.T
        keep = min(k, len(scores))
        top = np.argpartition(-scores, keep - 1, axis=0)[:keep].T
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores.T, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_ids


def search_cost_ms(index: CompactIndex, nprobe: int, candidates: int) -> float:
    """The estimated time of one query at ``nprobe`` cells and ``candidates`` re-scored rows, in ms (see
    :data:`SCAN_NS_PER_CODE_BYTE`, :data:`ROW_US`)."""
    scanned = nprobe * index.ntotal / max(1, index.nlist) * index.code_size
    return scanned * SCAN_NS_PER_CODE_BYTE / 1e6 + candidates * ROW_US / 1e3


def calibrate(index: CompactIndex, text_queries: np.ndarray, k: int = RECALL_K) -> dict[str, Any]:
    """Choose ``index.nprobe`` and ``index.candidates``: the cheapest pair (by :func:`search_cost_ms`) whose
    recall@k against exact search reaches :data:`TARGET_RECALL` on text queries and on stored vectors (search
    by example); where none does, the cheapest within :data:`MIN_GAIN` of the best recall found.

    For each number of candidates (doubling from :data:`CANDIDATES` to :data:`MAX_CANDIDATES`) the probes
    double from one while recall still rises by :data:`MIN_GAIN`; more candidates are tried only while they
    could still be cheaper than a pair found. Returns the settings and the recall measured."""
    measure = _recall_of(index, text_queries, min(k, index.ntotal))
    tried: dict[tuple[int, int], dict[str, float]] = {}
    candidates = CANDIDATES
    while candidates <= MAX_CANDIDATES:
        met = [search_cost_ms(index, p, c) for (p, c), r in tried.items() if min(r.values()) >= TARGET_RECALL]
        if met and search_cost_ms(index, 1, candidates) >= min(met):
            break
        nprobe, before = 1, -1.0
        while True:
            tried[nprobe, candidates] = measured = measure(nprobe, candidates)
            worst = min(measured.values())
            if worst >= TARGET_RECALL or worst < before + MIN_GAIN or nprobe >= index.nlist:
                break
            nprobe, before = min(index.nlist, nprobe * 2), worst
        candidates *= 2
    (index.nprobe, index.candidates), measured = _cheapest(index, tried)
    return {**index.settings(), "recall_at": min(k, index.ntotal),
            **{f"recall_{kind}": round(value, 4) for kind, value in measured.items()}}


def _recall_of(index: CompactIndex, text_queries: np.ndarray, k: int) -> Callable[[int, int], dict[str, float]]:
    """A measure of recall@k at (probes, candidates) for the text queries (if any) and for 50 stored vectors,
    against the true top k found by brute force."""
    rng = np.random.default_rng(0)
    image_queries = index.reconstruct_batch(rng.choice(index.ntotal, size=min(index.ntotal, 50), replace=False))
    queries = {"text": np.asarray(text_queries, dtype=np.float32), "image": image_queries}
    if not len(queries["text"]):
        del queries["text"]  # no model at hand (an import): stored vectors only
    truths = {kind: exact_top(index, q, k) for kind, q in queries.items()}

    def measure(nprobe: int, candidates: int) -> dict[str, float]:
        index.nprobe, index.candidates = nprobe, candidates
        return {kind: recall(index.search(q, k)[1], truths[kind]) for kind, q in queries.items()}

    return measure


def _cheapest(index: CompactIndex, tried: dict[tuple[int, int], dict[str, float]]
              ) -> tuple[tuple[int, int], dict[str, float]]:
    """The cheapest pair tried that reaches the target, or else the cheapest near the best recall reached."""
    best = max(min(r.values()) for r in tried.values())
    floor = TARGET_RECALL if best >= TARGET_RECALL else best - MIN_GAIN
    fit = [pair for pair, r in tried.items() if min(r.values()) >= floor]
    pair = min(fit, key=lambda pc: (search_cost_ms(index, *pc), pc))
    return pair, tried[pair]


def sampled_sha256(path: Path) -> str:
    """SHA-256 of :data:`SAMPLES` evenly spread 64 KiB pieces of a file, its first and last included: a
    check of a multi-gigabyte file in milliseconds that finds truncation and most damage (the size is
    checked besides, the whole file's SHA-256 is recorded for a full check)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for start in np.unique(np.linspace(0, max(0, size - SAMPLE_BYTES), num=SAMPLES).astype(np.int64)):
            f.seek(int(start))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def open_compact(vectors_file: Path, float16_file: Path, search: dict[str, Any], path: Path) -> CompactIndex:
    """The compact index of an index folder: codes with memory-mapped inverted lists, the float16 file mapped."""
    import faiss

    try:
        coarse = faiss.read_index(str(vectors_file), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        vectors16 = np.load(float16_file, mmap_mode="r", allow_pickle=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise IndexFormatError(f"The compact index in {path} is damaged ({exc}); build the index again.") from exc
    if not isinstance(coarse, faiss.IndexIVFPQ) or vectors16.dtype != np.float16 or vectors16.ndim != 2 \
            or vectors16.shape != (coarse.ntotal, coarse.d):
        raise IndexFormatError(f"The float16 vectors of {path} do not match its codes (damaged or from another "
                               "index); build the index again.")
    index = CompactIndex(coarse, random_access(vectors16), open(float16_file, "rb"),
                         int(vectors16.offset), candidates=int(search.get("candidates", CANDIDATES)))
    index.nprobe = int(search["nprobe"])
    return index
