"""Searching an index: text, relevance feedback, examples; the top-k places, scored and shaped into regions.

The index is opened by :func:`.index.open_index`; the model is the one the index was built with. Plain
functions over an open index, dataclasses out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..answers import SearchAnswer
from ..embedding.embedder import Embedder, normalise_rows
from ..errors import InputError
from ..index.neighbours import smoothed
from ..index.store import OpenIndex
from ..settings import Area, ModelSpec
from ..sources.collection import sheet_of
from ..tiling.area import area_geometry, tiles_in_area, tiles_overlapping, to_pixels
from ..tiling.grid import Window
from ..tiling.raster_io import bounded_block_cache, fingerprint_file, open_source, read_chunk
from .heatmap import write_heatmap
from .places import gather_places
from .regions import Hit, Region, build_regions, merge_hits
from .text import example_boxes, search_label, similar_label, split_negative
from .vectors import (
    AERIAL_TEMPLATES,
    NEGATIVE_WEIGHT,
    RERANK,
    check_search_limits,
    embed_query,
    matrix_top_hits,
    rocchio,
    top_hits,
    with_negative,
)


@dataclass
class SearchResult:
    query: str
    regions: list[Region]
    hits: list[Hit]
    model: str
    random_weights: bool
    crs_wkt: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def answer(self) -> SearchAnswer:
        """The answer the engine sends (``extra``: the fields of a search's account besides its regions)."""
        return SearchAnswer(query=self.query, model=self.model, random_weights=self.random_weights,
                            crs_wkt=self.crs_wkt, seconds=self.seconds, regions=[r.to_dict() for r in self.regions],
                            **self.extra)

    def to_dict(self) -> dict[str, Any]:
        return self.answer().to_dict()


def square(pixels: np.ndarray) -> np.ndarray:
    """A tile padded with black to a square (only tiles on an axis shorter than one tile need it)."""
    h, w = pixels.shape[:2]
    if h == w:
        return pixels
    side = max(h, w)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    out[:h, :w] = pixels
    return out


def index_model_spec(index: OpenIndex) -> ModelSpec:
    """The spec that loads the model an index was built with."""
    spec = index.manifest.get("model_spec")
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return ModelSpec(spec["name"], spec.get("pretrained"))
    return ModelSpec(index.identity.arch, "none" if index.identity.random_weights else index.identity.weights)


def check_model(index: OpenIndex, embedder: Embedder) -> None:
    if index.identity != embedder.identity:
        raise InputError(
            f"The index was built with {index.identity.label()}, but the loaded model is "
            f"{embedder.identity.label()}. Search with the index's model, or rebuild the index."
        )


def _regions(index: OpenIndex, found: list[tuple[int, float]], merge: bool,
             k: int | None = None) -> tuple[list[Region], list[Hit]]:
    """At most ``k`` regions from ranked hits ``found`` (tile id, score)."""
    hits = [Hit(i, s, index.window(i), index.scale_index(i)) for i, s in found]
    r = index.raster
    return merge_hits(hits, r.affine, r.georeferenced, r.crs_wkt, r.linear_units_factor, merge, k), hits


FETCH_PER_PLACE = 32


class TopPlaces(NamedTuple):
    found: list[tuple[int, float]]  # the ranked hits fetched (tile id, score)
    places: list[list[int]]  # the places: positions in ``found``, each place best first
    fewer: bool  # fewer places exist than were asked for
    searched: int  # the tiles searched (in the area, not left out)


def top_places(
    index: OpenIndex, vector: np.ndarray, top_k: int, threshold: float | None, allowed: np.ndarray | None, merge: bool,
    rerank: bool = RERANK,
) -> TopPlaces:
    """The ``top_k`` places of the ranked tiles, and what a user is told about them.

    Places are gathered as :mod:`.places` says from the best ``32 * top_k`` tiles; more are fetched (four times
    as many each round) until the ``top_k`` places are settled, i.e. a hit that would start one more place has
    come up, or there are no more tiles (in the area, above the threshold)."""
    check_search_limits(top_k, threshold)
    available = index.count if allowed is None else int(np.count_nonzero(allowed))
    if available == 0:
        return TopPlaces([], [], True, 0)
    # one exact search costs a scan of every vector whatever k is, so the first round takes enough tiles for the
    # places nearly always (a place and the tiles it suppresses are rarely more than 32 at any scale)
    fetch = top_k if not merge else min(available, max(FETCH_PER_PLACE * top_k, 256))
    while True:
        found = ranked_tiles(index, vector, fetch, threshold, allowed, rerank)
        if not merge:
            return TopPlaces(found, [[i] for i in range(len(found))], len(found) < top_k, available)
        gathering = gather_places([index.window(i) for i, _ in found], top_k)
        if gathering.complete or len(found) < fetch or fetch >= available:
            fewer = not gathering.complete and len(gathering.places) < top_k
            return TopPlaces(found, gathering.places, fewer, available)
        fetch = min(available, fetch * 4)


def place_regions(index: OpenIndex, top: TopPlaces) -> tuple[list[Region], list[Hit]]:
    """The regions of the places, with their areas on the ground, and the hits shown in them, best first (only
    those are made into hits: the rest of what was fetched is not shown)."""
    shown = sorted({i for place in top.places for i in place})
    position = {i: n for n, i in enumerate(shown)}
    hits = [Hit(tile, score, index.window(tile), index.scale_index(tile))
            for tile, score in (top.found[i] for i in shown)]
    groups = [[position[i] for i in place] for place in top.places]
    r = index.raster
    return build_regions(hits, groups, r.affine, r.georeferenced, r.crs_wkt, r.linear_units_factor), hits


def search_vector(
    index: OpenIndex,
    vector: np.ndarray,
    label: str,
    top_k: int,
    threshold: float | None,
    area: Area | None,
    merge: bool,
    exclude: np.ndarray | None = None,
    min_relative: float | None = None,
    heatmap: str | None = None,
    rerank: bool = RERANK,
) -> SearchResult:
    """Search ``index`` with a unit query vector; ``exclude`` is a boolean tile mask to leave out;
    ``rerank``: tiles scored with their look-alikes (see :mod:`.neighbours`).

    Each region also gets a relative score: how many standard deviations its score lies above the mean
    score of the index's tiles for this query (estimated on a fixed sample of up to 20,000 tiles). Unlike
    the cosine score, whose typical level differs from query to query and model to model, it reads the
    same for every query; ``min_relative`` leaves out tiles below it. ``heatmap`` is a GeoTIFF path to
    write the best score per location to (see :mod:`.heatmap`).
    """
    started = time.perf_counter()
    allowed = tiles_in_area(index.tiles, area, index.raster.affine) if area is not None else None
    if exclude is not None:
        allowed = ~exclude if allowed is None else allowed & ~exclude
    mean, std = score_distribution(index, vector)
    if min_relative is not None:
        relative_floor = mean + float(min_relative) * std
        threshold = relative_floor if threshold is None else max(threshold, relative_floor)
        threshold = min(threshold, 1.0)
    top = top_places(index, vector, top_k, threshold, allowed, merge, rerank)
    regions, hits = place_regions(index, top)
    sheets = (index.raster.source or {}).get("files")
    for region in regions:
        region.relative = (region.score - mean) / std
        if sheets:  # a collection: the sheet the place's best tile lies on
            best = region.members[0].window
            region.file = sheet_of(sheets, (best.col_off, best.row_off, best.col_end, best.row_end))
    extra: dict[str, Any] = {"score_mean": mean, "score_std": std, "requested": top_k, "fewer": top.fewer,
                             "searched_tiles": top.searched,
                             "below_threshold": top.fewer and len(top.found) < top.searched, "reranked": rerank}
    if heatmap:
        extra["heatmap"] = write_heatmap(index, vector, heatmap, mean, std, rerank)
    return SearchResult(label, regions, hits, index.identity.label(), index.identity.random_weights,
                        index.raster.crs_wkt, time.perf_counter() - started, extra)


SAMPLE_TILES = 20_000
RERANK_DEPTH = 256  # re-ranking re-scores at least this many of the best tiles by cosine


def ranked_tiles(index: OpenIndex, vector: np.ndarray, depth: int, threshold: float | None = None,
                 allowed: np.ndarray | None = None, rerank: bool = RERANK) -> list[tuple[int, float]]:
    """The best ``depth`` tiles (tile id, score), best first: by cosine score, or with ``rerank`` the best
    ``max(depth, RERANK_DEPTH)`` by cosine re-scored with their look-alikes (see :mod:`.neighbours`); the
    threshold applies to the score the tiles are ranked by."""
    if not rerank:
        return index_top_hits(index, vector, depth, threshold, allowed)
    candidates = index_top_hits(index, vector, max(depth, RERANK_DEPTH), None, allowed)
    ranked = smoothed(candidates, vector, index.look_alikes(), index.read_vectors)
    if threshold is not None:
        ranked = [(i, s) for i, s in ranked if s >= threshold]
    return ranked[:depth]


def index_top_hits(
    index: OpenIndex, vector: np.ndarray, top_k: int, threshold: float | None = None, allowed: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Exact top-k of ``index``: on its GPU copy when it has one, else with Faiss on the CPU."""
    if index.device_matrix is not None:
        return matrix_top_hits(index.device_matrix, vector, top_k, threshold, allowed)
    return top_hits(index.vectors, vector, top_k, threshold, allowed)


def score_distribution(index: OpenIndex, vector: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the query's scores over a fixed, evenly spread sample of tiles."""
    scores = index.sample_vectors(SAMPLE_TILES) @ vector.astype(np.float32)
    std = float(scores.std())
    return float(scores.mean()), std if std > 1e-6 else 1e-6


def search(
    index: OpenIndex,
    embedder: Embedder,
    query: str,
    top_k: int = 20,
    threshold: float | None = None,
    area: Area | None = None,
    templates: Sequence[str] | None = AERIAL_TEMPLATES,
    merge: bool = True,
    negative: str | None = None,
    negative_weight: float = NEGATIVE_WEIGHT,
    relevant_ids: Sequence[int] | None = None,
    irrelevant_ids: Sequence[int] | None = None,
    min_relative: float | None = None,
    heatmap: str | None = None,
    rerank: bool = RERANK,
    label: str | None = None,
) -> SearchResult:
    """Text search: the ``top_k`` best places (regions of overlapping tiles around a best tile, see
    :mod:`.places`) among the tiles above ``threshold``, best first.

    ``negative`` text (or "… but not …" in the query) pushes results away from what it describes.
    ``relevant_ids`` / ``irrelevant_ids`` are tiles the user marked: the query moves toward the first
    and away from the second (Rocchio), and the irrelevant ones are left out of the results. ``label`` names
    the search in the results (a request's; default: the one its request would have, see :mod:`..requests`).
    """
    check_model(index, embedder)
    if negative is None:
        query, negative = split_negative(query)
    label = label or search_label(query, negative, relevant_ids or (), irrelevant_ids or ())
    vector = embed_query(embedder, query, templates)
    if negative:
        vector = with_negative(vector, embed_query(embedder, negative, templates), negative_weight)
    exclude = None
    if relevant_ids or irrelevant_ids:
        relevant, irrelevant = (tile_vectors(index, ids) for ids in (relevant_ids, irrelevant_ids))
        vector = rocchio(vector, relevant, irrelevant)
        if irrelevant_ids:
            exclude = np.zeros(index.count, dtype=bool)
            exclude[np.asarray(irrelevant_ids, dtype=np.int64)] = True
    return search_vector(index, vector, label, top_k, threshold, area, merge, exclude, min_relative, heatmap, rerank)


def tile_vectors(index: OpenIndex, tile_ids: Sequence[int] | None) -> np.ndarray | None:
    """The stored vectors of these tiles (checked), or None for none."""
    if not tile_ids:
        return None
    bad = [i for i in tile_ids if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < index.count]
    if bad:
        raise InputError(f"Tile ids must be between 0 and {index.count - 1}; got {bad[:5]}.")
    return index.read_vectors(np.asarray(tile_ids, dtype=np.int64))


def search_similar(
    index: OpenIndex,
    embedder: Embedder | None = None,
    tile_ids: Sequence[int] | None = None,
    bbox: tuple[float, float, float, float] | Sequence[tuple[float, float, float, float]] | None = None,
    top_k: int = 20,
    threshold: float | None = None,
    area: Area | None = None,
    merge: bool = True,
    exclude_examples: bool = True,
    min_relative: float | None = None,
    heatmap: str | None = None,
    label: str | None = None,
    rerank: bool = RERANK,
) -> SearchResult:
    """Search by example: tiles like ``tile_ids``, or like the window ``bbox`` (raster CRS) of the raster,
    or like several such windows (a list of boxes: their embeddings are averaged).

    The examples' own ground is left out unless ``exclude_examples`` is false: every tile that shares pixels
    with an example tile or box (overlapping tiles are near-duplicates of the example, which would otherwise
    come first). ``label`` names the search in the results (a request's; default: the examples, as a request
    names them, see :mod:`..requests`).
    """
    if (tile_ids is None) == (bbox is None):
        raise InputError("Give either example tile ids or an example bounding box.")
    if tile_ids is not None:
        bad = [i for i in tile_ids if not 0 <= int(i) < index.count]
        if not tile_ids or bad:
            raise InputError(f"Tile ids must be between 0 and {index.count - 1}; got {list(tile_ids)}.")
        ids = np.asarray(tile_ids, dtype=np.int64)
        vector = normalise_rows(index.read_vectors(ids).mean(axis=0, keepdims=True))[0]
        exclude = tiles_overlapping(index.tiles, index.tiles[ids]) if exclude_examples else None  # ids included
        label = label or similar_label(tile_ids=[int(i) for i in ids])
    else:
        if embedder is None:
            raise InputError("Searching by an example box needs the index's model.")
        check_model(index, embedder)
        assert bbox is not None
        boxes = example_boxes(bbox)
        if not boxes:
            raise InputError("Give at least one example box.")
        vector = normalise_rows(np.mean([embed_box(index, embedder, b) for b in boxes], axis=0, keepdims=True))[0]
        exclude = None
        if exclude_examples:
            exclude = np.logical_or.reduce([tiles_in_area(index.tiles, box, index.raster.affine) for box in boxes])
        label = label or similar_label(boxes=boxes)
    return search_vector(index, vector, label, top_k, threshold, area, merge, exclude, min_relative, heatmap, rerank)


def embed_box(index: OpenIndex, embedder: Embedder, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Unit vector of the raster's content inside ``bbox`` (raster CRS), read and embedded now."""
    info = index.raster
    if info.source is None and fingerprint_file(info.path) != info.fingerprint:
        raise InputError(f"{info.path} changed since it was indexed; build the index again.")
    geom = to_pixels(area_geometry(bbox), info.affine)
    c0, r0, c1, r1 = geom.bounds
    c0, r0 = max(0, int(np.floor(c0))), max(0, int(np.floor(r0)))
    c1, r1 = min(info.width, int(np.ceil(c1))), min(info.height, int(np.ceil(r1)))
    if c1 <= c0 or r1 <= r0:
        raise InputError("The example box does not overlap the raster; check that it is in the raster's CRS.")
    window = Window(c0, r0, c1 - c0, r1 - r0)
    factor = max(window.width, window.height) / embedder.input_size
    shape = (max(1, round(window.height / factor)), max(1, round(window.width / factor)))
    with bounded_block_cache(info), open_source(info) as ds:
        rgb, _ = read_chunk(ds, info, window, shape)
    return embedder.encode_images(square(rgb)[None])[0]
