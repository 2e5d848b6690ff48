"""The words of a search: the query text checked (the one rule for it), "… but not …" split off, and the labels
that name searches in answers, results layers and exported files. Pure Python, so the plugin's requests use it in
QGIS's own Python."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import InputError

MAX_QUERY_CHARS = 1000
Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in the raster's CRS
NEGATION = re.compile(r"\s+but\s+not\s+", re.IGNORECASE)


def clean_query(text: object) -> str:
    """The query with surrounding and repeated whitespace removed; refuses empty or over-long text."""
    if not isinstance(text, str):
        raise InputError("The query must be text.")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise InputError("The query is empty; describe what to find, e.g. 'swimming pool'.")
    if len(cleaned) > MAX_QUERY_CHARS:
        raise InputError(
            f"The query is {len(cleaned)} characters long; keep it under {MAX_QUERY_CHARS} "
            "(a few words work best, e.g. 'swimming pool')."
        )
    return cleaned


def split_negative(text: str) -> tuple[str, str | None]:
    """"ships but not boats" -> ("ships", "boats"); text without "but not" -> (text, None)."""
    parts = NEGATION.split(text, maxsplit=1)
    if len(parts) == 2 and parts[0].strip() and parts[1].strip():
        return parts[0].strip(), parts[1].strip()
    return text, None


def search_label(query: str, negative: str | None = None, relevant: Sequence[int] = (),
                 irrelevant: Sequence[int] = ()) -> str:
    """What a text search is called in its answer, its results layer and its exported file."""
    label = clean_query(query)
    if negative:
        label += f" but not {' '.join(negative.split())}"
    if relevant or irrelevant:
        label += f" (feedback: {len(relevant)} relevant, {len(irrelevant)} not)"
    return label


def similar_label(tile_ids: Sequence[int] = (), boxes: Sequence[Sequence[float]] = (), given: str | None = None) -> str:
    """What a search by example is called: the caller's words, else the examples."""
    if given:
        return given
    if tile_ids:
        return f"similar to tile(s) {', '.join(str(int(i)) for i in tile_ids)}"
    if len(boxes) == 1:
        return "similar to box " + ", ".join(f"{v:.6g}" for v in boxes[0])
    return f"similar to {len(boxes)} example boxes"


def check_search_limits(top_k: object, threshold: float | None) -> None:
    """The number of results asked for and the minimum score, as every search takes them."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top-k must be a whole number of at least 1; got {top_k!r}.")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InputError(f"The score threshold is a cosine similarity between -1 and 1; got {threshold}.")


def example_boxes(value: Any) -> tuple[Box, ...]:
    """One example box (xmin, ymin, xmax, ymax) or a list of them, checked; () for none."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return ()
    try:
        first = value[0]
        nested = hasattr(first, "__len__") and not isinstance(first, str)
        out = tuple(tuple(float(v) for v in box) for box in (value if nested else [value]))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise InputError(f"bbox must be xmin, ymin, xmax, ymax (or a list of such boxes); got {value!r}.") from exc
    if any(len(b) != 4 or not (b[0] < b[2] and b[1] < b[3]) for b in out):
        raise InputError("Each example box is xmin, ymin, xmax, ymax with min below max (xmin < xmax and "
                         f"ymin < ymax); got {value!r}.")
    return out  # type: ignore[return-value]
