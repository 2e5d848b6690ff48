"""Do a backend's vectors agree with the model's own? Plain functions over arrays.

Two tests, both on tiles of the analyst's own imagery embedded both ways with the analyst's own weights:
every tile's vector within ``MIN_COSINE`` of the model's, and the same top ``TOP_K`` tiles for each of a set of
text queries (a tile may trade places across the boundary only with one whose score under the model differs
by less than ``TIE``: such a swap is a tie, not a disagreement). ``TIE`` is 0.005 of cosine score: the scores of a
query over an aerial scene spread over about 0.03 (random weights) to 0.1 (trained CLIP), and tiles closer than 0.005
to the tenth are in the same place of the ranking for an analyst; an int8 backend moves scores by about 0.002.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_COSINE = 0.995
TOP_K = 10
TIE = 0.005
VERIFY_QUERIES = (  # the queries under which a backend must rank a sample's tiles as the model does
    "a satellite photo of buildings", "a satellite photo of a forest", "a satellite photo of water",
    "a satellite photo of a road", "a satellite photo of farmland", "a satellite photo of a parking lot",
)


@dataclass(frozen=True)
class Agreement:
    """How a backend's vectors compare with the model's on the same tiles."""

    tiles: int
    min_cosine: float
    queries: int
    same_top: bool

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.same_top

    def reason(self) -> str:
        """Why it failed, in words (empty when it passed)."""
        if self.min_cosine < MIN_COSINE:
            return f"its vectors differ from the model's (lowest cosine {self.min_cosine:.4f}, needed {MIN_COSINE})"
        if not self.same_top:
            return f"its top {TOP_K} tiles differ from the model's for some queries"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "min_cosine": round(self.min_cosine, 6)}


def same_top(reference: np.ndarray, candidate: np.ndarray, query: np.ndarray, k: int = TOP_K,
             tie: float = TIE) -> bool:
    """Whether ``candidate`` ranks the same top ``k`` tiles as ``reference`` for ``query`` (ties allowed)."""
    return same_order(reference @ query, candidate @ query, k, tie)


def same_order(truth: np.ndarray, ranked: np.ndarray, k: int = TOP_K, tie: float = TIE) -> bool:
    """Whether the scores ``ranked`` put the same ``k`` tiles on top as the scores ``truth`` (ties allowed)."""
    k = min(k, len(truth))
    expected = set(np.argsort(-truth, kind="stable")[:k].tolist())
    found = set(np.argsort(-ranked, kind="stable")[:k].tolist())
    if found == expected:
        return True
    boundary = float(np.sort(truth)[::-1][k - 1])
    traded = expected.symmetric_difference(found)
    return all(abs(float(truth[i]) - boundary) < tie for i in traded)


def agreement(reference: np.ndarray, candidate: np.ndarray, queries: np.ndarray) -> Agreement:
    """Compare unit vectors of the same tiles (rows) made two ways, under unit query vectors (rows)."""
    if reference.shape != candidate.shape or not len(reference):
        return Agreement(len(reference), -1.0, len(queries), False)
    cosines = np.sum(reference * candidate, axis=1)
    lowest = float(np.min(cosines)) if np.all(np.isfinite(cosines)) else -1.0
    tops = all(same_top(reference, candidate, q) for q in queries)
    return Agreement(len(reference), lowest, len(queries), tops)
