"""An approximate (IVF) index for large indexes, its probe count chosen by measured recall.

Exact search reads every vector for every query: 140 to 280 ms for 1M tiles on a 2-core CPU, growing
linearly. From :data:`APPROXIMATE_FROM` tiles the vectors are also stored as a Faiss inverted-file index
(IVF, inner product, a direct map so that stored vectors can still be read back by id): k-means cells,
of which a query scans only the ``nprobe`` nearest. ``nprobe`` is the smallest power of two whose
recall@k against exact search is at least :data:`TARGET_RECALL` on calibration queries: the model's own
text queries (aerial prompt templates over everyday map concepts, so the modality gap between text and
image vectors is measured, not assumed) and stored tile vectors (search by example). The chosen value
and the measured recall go into the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# tiles; with the text encoder's 100-150 ms on a 2-core CPU, a query passes 250 ms with exact search from about
# 300,000 tiles on the slower of the machines measured (see BENCHMARKS.md)
APPROXIMATE_FROM = 250_000
TARGET_RECALL = 0.99
RECALL_K = 100
TRAIN_PER_CELL = 64
CALIBRATION_CONCEPTS = (
    "a swimming pool", "a tennis court", "a parking lot", "solar panels", "a football field", "a harbour",
    "an airport runway", "a forest", "a river", "a bridge", "farmland", "storage tanks", "a railway",
    "a golf course", "a church", "a roundabout", "greenhouses", "a quarry", "a beach", "houses",
    "a highway", "a lake", "a factory", "a stadium", "a cemetery", "a playground", "snow", "a desert",
    "a vineyard", "a ship",
)


def cell_count(n: int) -> int:
    """IVF cells for ``n`` vectors: about 2 * sqrt(n), a power of two between 64 and 65,536."""
    return int(min(65_536, max(64, 2 ** round(np.log2(2 * np.sqrt(max(n, 1)))))))


def exact_ids(exact: Any, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the true top ``k`` of each query, from an exact (flat) Faiss index."""
    _, ids = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.asarray(ids)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k found in its approximate top-k."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


ADD_BLOCK = 65_536


def build_ivf(exact: Any, text_queries: np.ndarray, k: int = RECALL_K) -> tuple[Any, dict[str, Any]]:
    """An IVF index over the vectors of the exact (flat) Faiss index ``exact`` and its settings: nlist,
    nprobe and the measured recall. The vectors are read from ``exact`` in blocks (no whole copy), and
    ``exact`` answers the true top-k the recall is measured against."""
    import faiss

    n, dim = exact.ntotal, exact.d
    nlist = cell_count(n)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.unique(np.linspace(0, n - 1, num=min(n, TRAIN_PER_CELL * nlist)).astype(np.int64))
    ivf.train(np.ascontiguousarray(exact.reconstruct_batch(sample)))
    for start in range(0, n, ADD_BLOCK):
        ivf.add(exact.reconstruct_n(start, min(ADD_BLOCK, n - start)))
    ivf.make_direct_map()  # stored vectors stay readable by id (examples, feedback, heatmaps)
    rng = np.random.default_rng(0)
    image_queries = exact.reconstruct_batch(rng.choice(n, size=min(n, 50), replace=False).astype(np.int64))
    k = min(k, n)
    queries = {"text": text_queries, "image": image_queries}
    truths = {kind: exact_ids(exact, q, k) for kind, q in queries.items()}
    nprobe, measured = 1, {}
    while True:
        ivf.nprobe = nprobe
        measured = {kind: recall(exact_ids(ivf, q, k), truths[kind]) for kind, q in queries.items()}
        if min(measured.values()) >= TARGET_RECALL or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    settings = {"kind": "ivf", "nlist": nlist, "nprobe": nprobe, "recall_at": k,
                "recall_text": round(measured["text"], 4), "recall_image": round(measured["image"], 4)}
    return ivf, settings
