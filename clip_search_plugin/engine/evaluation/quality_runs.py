"""The searches measured by ``scripts/evaluate.py --embeddings``: methods run on the pools of :mod:`.quality`.

Every method starts from the prompt ensemble of a template set and ranks every scene of the pool through
:func:`.searching.ranked_tiles`. Feedback is simulated as an analyst would give it: the first
:data:`MARKED_PER_ROUND` results not yet marked are marked Relevant or Not relevant as the labels say, and the
search runs again from the query text with every mark so far (Rocchio; the Not relevant ones are left out of
the results, as in the dock). *More like this* searches with the first relevant scene among the first
:data:`MARKED_PER_ROUND` results as the example (the text search's own ranking when there is none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embedding.embedder import normalise_rows
from ..query.searching import ranked_tiles, score_distribution
from ..query.vectors import NEGATIVE_WEIGHT, RERANK, ROCCHIO, ensemble, rocchio, with_negative
from ..tiling.area import tiles_overlapping
from .quality import EmbeddingSet, Pool, average_precision, precision_at

MARKED_PER_ROUND = 5
PROTOCOLS = ("balanced", "rare")


@dataclass(frozen=True)
class Method:
    """One way of searching: re-ranking on or off, and what the analyst adds to the text."""

    name: str
    rerank: bool = RERANK
    negative: bool = False  # "CLASS but not NEAREST", the other class name whose text is nearest
    feedback_rounds: int = 0
    more_like_this: bool = False
    expand_top: int = 0  # the query plus the mean of its first results (naive pseudo-relevance feedback)
    weights: tuple[float, float, float] = ROCCHIO

    @property
    def default(self) -> bool:
        """The search the dock and the command line make from a text query."""
        return self.rerank == RERANK and not (self.negative or self.feedback_rounds or self.more_like_this
                                              or self.expand_top)


METHODS = (
    Method("plain", rerank=False),
    Method("look-alikes", rerank=True),
    Method("top-10 expansion", rerank=False, expand_top=10, weights=(1.0, 1.0, 0.0)),
    Method("but not nearest class", negative=True),
    Method("feedback, 1 round", feedback_rounds=1),
    Method("feedback, 2 rounds", feedback_rounds=2),
    Method("more like this", more_like_this=True),
    Method("more like this, plain", rerank=False, more_like_this=True),
)
RELATIVE_CUTS = (1.0, 2.0, 3.0)


def ranking(pool: Pool, vector: np.ndarray, rerank: bool, allowed: np.ndarray | None = None) -> list[int]:
    """Every scene of the pool (those allowed), best first, as the engine ranks tiles."""
    return [i for i, _ in ranked_tiles(pool.index, vector, pool.index.count, None, allowed, rerank)]


@dataclass
class Scores:
    ap: list[float] = field(default_factory=list)
    p10: list[float] = field(default_factory=list)

    def add(self, ranked: Sequence[int], relevant: np.ndarray) -> None:
        self.ap.append(average_precision(ranked, relevant))
        self.p10.append(precision_at(ranked, relevant, 10))


def run_method(es: EmbeddingSet, keys: Sequence[str], method: Method, pool: Pool) -> list[int]:
    """The final ranking of one method for the pool's class."""
    query = ensemble(es.query(keys, pool.class_index))
    if method.negative:
        query = with_negative(query, _nearest_other(es, keys, pool.class_index), NEGATIVE_WEIGHT)
    ranked = ranking(pool, query, method.rerank)
    if method.expand_top:
        top = pool.index.read_vectors(np.asarray(ranked[: method.expand_top]))
        return ranking(pool, rocchio(query, top, None, method.weights), method.rerank)
    if method.more_like_this:
        return _more_like_this(pool, ranked, method.rerank)
    return _feedback(pool, query, ranked, method) if method.feedback_rounds else ranked


def _nearest_other(es: EmbeddingSet, keys: Sequence[str], c: int) -> np.ndarray:
    vectors = np.stack([ensemble(es.query(keys, other)) for other in range(len(es.classes))])
    similarity = vectors @ vectors[c]
    similarity[c] = -np.inf
    return vectors[int(np.argmax(similarity))]


def _feedback(pool: Pool, query: np.ndarray, ranked: list[int], method: Method) -> list[int]:
    marked: list[int] = []
    for _ in range(method.feedback_rounds):
        seen = set(marked)
        marked += [i for i in ranked if i not in seen][:MARKED_PER_ROUND]
        good = [i for i in marked if pool.relevant[i]]
        bad = [i for i in marked if not pool.relevant[i]]
        moved = rocchio(query, _vectors(pool, good), _vectors(pool, bad), method.weights)
        allowed = np.ones(pool.index.count, dtype=bool)
        allowed[bad] = False
        ranked = ranking(pool, moved, method.rerank, allowed)
    return ranked


def _vectors(pool: Pool, ids: list[int]) -> np.ndarray | None:
    return pool.index.read_vectors(np.asarray(ids, dtype=np.int64)) if ids else None


def _more_like_this(pool: Pool, ranked: list[int], rerank: bool) -> list[int]:
    examples = [i for i in ranked[:MARKED_PER_ROUND] if pool.relevant[i]]
    if not examples:
        return ranked
    ids = np.asarray(examples[:1], dtype=np.int64)
    vector = normalise_rows(pool.index.read_vectors(ids))[0]
    allowed = ~tiles_overlapping(pool.index.tiles, pool.index.tiles[ids])
    return ranking(pool, vector, rerank, allowed)


def measure(es: EmbeddingSet, keys: Sequence[str], methods: Sequence[Method],
            pools: dict[str, list[Pool]]) -> dict[tuple[str, str], Scores]:
    """Scores of each method on each protocol's pools: {(method name, protocol): Scores}."""
    out: dict[tuple[str, str], Scores] = {}
    for method in methods:
        for protocol in PROTOCOLS:
            scores = out.setdefault((method.name, protocol), Scores())
            for pool in pools[protocol]:
                scores.add(run_method(es, keys, method, pool), pool.relevant)
    return out


def rows(es: EmbeddingSet, template_set: str, keys: Sequence[str], methods: Sequence[Method],
         pools: dict[str, list[Pool]], default_set: bool) -> list[dict[str, Any]]:
    """The report rows of one model and template set: one per method and protocol."""
    measured = measure(es, keys, methods, pools)
    out = []
    for method in methods:
        for protocol in PROTOCOLS:
            scores = measured[(method.name, protocol)]
            row: dict[str, Any] = {"model": es.model, "templates": template_set, "method": method.name,
                                   "protocol": protocol, "mAP": round(float(np.mean(scores.ap)), 4),
                                   "default": default_set and method.default}
            if protocol == "balanced":
                row["P@10"] = round(float(np.mean(scores.p10)), 4)
            out.append(row)
    return out


def tune_feedback(sets: Sequence[tuple[EmbeddingSet, Sequence[str], dict[str, list[Pool]]]],
                  grid: Sequence[tuple[float, float, float]], rounds: int = 2,
                  report: Callable[[str], None] = print) -> list[tuple[float, tuple[float, float, float]]]:
    """Mean AP after ``rounds`` of simulated feedback, over every set and both protocols, for each weight triple
    of ``grid``; best first."""
    results = []
    for weights in grid:
        method = Method("feedback", feedback_rounds=rounds, weights=weights)
        means = [float(np.mean(s.ap)) for es, keys, pools in sets for s in measure(es, keys, [method], pools).values()]
        results.append((float(np.mean(means)), weights))
        report(f"  weights {weights}: mean AP {results[-1][0]:.4f}")
    return sorted(results, key=lambda r: -r[0])


def relative_cuts(es: EmbeddingSet, keys: Sequence[str], pools: dict[str, list[Pool]],
                  cuts: Sequence[float] = RELATIVE_CUTS) -> list[dict[str, Any]]:
    """What a "minimum relative score" keeps of the default search: mean precision and recall of the tiles
    at or above each cut (standard deviations above the pool's mean score, as the dock's option reads), and
    the share of searches that keep nothing."""
    out = []
    for protocol in PROTOCOLS:
        for cut in cuts:
            precision, recall, empty = [], [], 0
            for pool in pools[protocol]:
                vector = ensemble(es.query(keys, pool.class_index))
                mean, std = score_distribution(pool.index, vector)
                kept = [i for i, _ in ranked_tiles(pool.index, vector, pool.index.count, min(mean + cut * std, 1.0))]
                empty += not kept
                if kept:
                    precision.append(float(pool.relevant[kept].mean()))
                recall.append(float(pool.relevant[kept].sum() / pool.relevant.sum()))
            out.append({"model": es.model, "protocol": protocol, "relative": cut,
                        "precision": round(float(np.mean(precision)) if precision else 0.0, 4),
                        "recall": round(float(np.mean(recall)), 4),
                        "nothing_kept": round(empty / len(pools[protocol]), 4)})
    return out


def select_templates(sets: Sequence[tuple[EmbeddingSet, dict[str, list[Pool]]]], candidates: Sequence[str],
                     size: int, report: Callable[[str], None] = print) -> list[str]:
    """Greedy forward selection: add, one at a time, the template key whose ensemble gives the best mean AP
    over every set and both protocols, searched plainly (what the templates alone give), up to ``size`` keys."""
    plain = Method("plain", rerank=False)
    chosen: list[str] = []
    while len(chosen) < min(size, len(candidates)):
        scored = [(ensemble_score(sets, [*chosen, key], plain), key) for key in candidates if key not in chosen]
        best, key = max(scored)
        chosen.append(key)
        report(f"  {len(chosen)}: {key} (mean AP {best:.4f})")
    return chosen


def ensemble_score(sets: Sequence[tuple[EmbeddingSet, dict[str, list[Pool]]]], keys: Sequence[str],
                   method: Method) -> float:
    """Mean AP of ``method`` with the template ensemble ``keys`` over every set and both protocols."""
    return float(np.mean([np.mean(s.ap) for es, pools in sets for s in measure(es, keys, [method], pools).values()]))


def half(es: EmbeddingSet, part: int, seed: int = 7) -> EmbeddingSet:
    """Half of the scenes of each class (``part`` 0 or 1 of a fixed random split), to check a choice made on one
    half against the other."""
    rng = np.random.default_rng(seed)
    kept = []
    for c in range(len(es.classes)):
        scenes = np.flatnonzero(es.labels == c)
        rng.shuffle(scenes)
        kept.append(scenes[: len(scenes) // 2] if part == 0 else scenes[len(scenes) // 2:])
    ids = np.sort(np.concatenate(kept))
    return EmbeddingSet(f"{es.model} half {part}", es.images[ids], es.labels[ids], es.classes, es.keys, es.texts)
