"""Queries: text to a query vector (prompt-template ensemble), and the top-k search over an index.

The query text is checked, and "but not" split off, by the requests' functions (one rule, one message); their
names are given here too, for code that imports them with the vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..embedding.embedder import Embedder, normalise_rows
from ..errors import InputError
from .templates import AERIAL_TEMPLATES
from .text import MAX_QUERY_CHARS as MAX_QUERY_CHARS
from .text import NEGATION as NEGATION
from .text import check_search_limits, clean_query
from .text import split_negative as split_negative

EXACT_SUBSET = 200_000  # an area with at most this many tiles is searched exactly in an approximate index


def embed_query(embedder: Embedder, text: str, templates: Sequence[str] | None = AERIAL_TEMPLATES) -> np.ndarray:
    """Unit query vector for ``text``: the template ensemble, or the raw text when ``templates`` is empty."""
    cleaned = clean_query(text)
    prompts = [t.format(cleaned) for t in templates] if templates else [cleaned]
    return ensemble(embedder.encode_text(prompts))


def ensemble(text_vectors: np.ndarray) -> np.ndarray:
    """The query vector of a prompt ensemble: the mean of its prompts' unit text vectors, renormalised."""
    return normalise_rows(np.asarray(text_vectors, dtype=np.float32).mean(axis=0, keepdims=True))[0]


NEGATIVE_WEIGHT = 0.5
# Rocchio relevance feedback: weights of the query, the relevant examples' mean and the non-relevant ones' mean
# (chosen by the simulated feedback of scripts/evaluate.py --embeddings; see BENCHMARKS.md)
ROCCHIO = (1.0, 0.25, 0.1)
# Search with look-alike re-ranking (see .neighbours) unless asked not to: it measures better on both
# protocols for each of the five models of scripts/evaluate.py --embeddings (see BENCHMARKS.md)
RERANK = True


def with_negative(positive: np.ndarray, negative: np.ndarray, weight: float = NEGATIVE_WEIGHT) -> np.ndarray:
    """The query pushed away from ``negative``: unit(positive - weight * negative)."""
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"The weight of the negative text must be between 0 and 1; got {weight}.")
    return normalise_rows((positive - weight * negative)[None])[0]


def rocchio(query: np.ndarray, relevant: np.ndarray | None, irrelevant: np.ndarray | None,
            weights: tuple[float, float, float] = ROCCHIO) -> np.ndarray:
    """The query moved toward the mean of ``relevant`` vectors and away from the mean of ``irrelevant``."""
    alpha, beta, gamma = weights
    moved = alpha * query
    if relevant is not None and len(relevant):
        moved = moved + beta * relevant.mean(axis=0)
    if irrelevant is not None and len(irrelevant):
        moved = moved - gamma * irrelevant.mean(axis=0)
    return normalise_rows(moved[None].astype(np.float32))[0]


def top_hits(
    vectors: object,
    query: np.ndarray,
    top_k: int,
    threshold: float | None = None,
    allowed: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """(tile id, score) of the best ``top_k`` tiles, best first; ``allowed`` is a boolean tile mask."""
    import faiss

    check_search_limits(top_k, threshold)
    index: Any = vectors  # a faiss index: flat (exact) or IVF (approximate, with nprobe set)
    approximate = hasattr(index, "nprobe")
    params: Any = None
    candidates = index.ntotal
    if allowed is not None:
        ids = np.flatnonzero(allowed).astype(np.int64)
        candidates = ids.size
        if candidates == 0:
            return []
        if approximate and candidates <= EXACT_SUBSET:
            # a small area: its tiles may lie in cells the query would not probe; score them all
            scores = index.reconstruct_batch(ids) @ np.asarray(query, dtype=np.float32)
            order = np.argsort(-scores, kind="stable")[:top_k]
            hits = [(int(ids[i]), float(scores[i])) for i in order]
            return [(i, s) for i, s in hits if threshold is None or s >= threshold]
        selector = faiss.IDSelectorBatch(ids)
        if approximate:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)  # type: ignore[call-arg]
        else:
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    k = min(top_k, candidates)
    if k == 0:
        return []
    query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    scores, ids_found = index.search(query, k, params=params)
    hits = [(int(i), float(s)) for i, s in zip(ids_found[0], scores[0], strict=True) if i >= 0]
    if threshold is not None:
        hits = [(i, s) for i, s in hits if s >= threshold]
    return hits


def matrix_top_hits(
    matrix: Any,
    query: np.ndarray,
    top_k: int,
    threshold: float | None = None,
    allowed: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """:func:`top_hits` on a torch matrix of the index's vectors (on the GPU): one matrix-vector product
    and a top-k, exact like Faiss's flat search."""
    import torch

    check_search_limits(top_k, threshold)
    with torch.inference_mode():
        scores = matrix @ torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(matrix.device)
        candidates = int(matrix.shape[0])
        if allowed is not None:
            mask = torch.from_numpy(np.asarray(allowed, dtype=bool)).to(matrix.device)
            candidates = int(mask.sum())
            scores = scores.masked_fill(~mask, float("-inf"))
        k = min(top_k, candidates)
        if k == 0:
            return []
        values, ids = torch.topk(scores, k)
        hits = [(int(i), float(v)) for i, v in zip(ids.cpu().tolist(), values.cpu().tolist(), strict=True)]
    if threshold is not None:
        hits = [(i, v) for i, v in hits if v >= threshold]
    return hits
