"""Gathering ranked hits into places: checked against a plain reference, and for the properties a user relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clip_search_plugin.engine.answers import fewer_text
from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.query.places import MAX_MEMBERS, gather_places
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings
from clip_search_plugin.engine.tiling.grid import Window

from ..conftest import shared_raster

sizes = st.sampled_from([16, 32, 64])
windows = st.builds(lambda c, r, s: Window(c, r, s, s), st.integers(0, 300), st.integers(0, 300), sizes)


def reference(ws: list[Window], k: int | None, max_members: int) -> tuple[list[list[int]], bool]:
    """The rule in its plainest form: every seed checked for every hit."""
    places: list[list[int]] = []
    for i, w in enumerate(ws):
        owner = next((p for p in places if ws[p[0]].overlaps(w)), None)
        if owner is not None:
            seed = ws[owner[0]]
            if len(owner) < max_members and w.width * w.height <= seed.width * seed.height:
                owner.append(i)
            continue
        if k is not None and len(places) == k:
            return places, True
        places.append([i])
    return places, False


@given(st.lists(windows, max_size=60), st.one_of(st.none(), st.integers(1, 12)), st.integers(1, 9))
def test_places_match_the_plain_rule(ws: list[Window], k: int | None, max_members: int) -> None:
    gathering = gather_places(ws, k, max_members)
    assert (gathering.places, gathering.complete) == reference(ws, k, max_members)


@given(st.lists(windows, min_size=1, max_size=60), st.integers(1, 12))
def test_places_are_local_and_as_many_as_asked_when_there_are_enough(ws: list[Window], k: int) -> None:
    gathering = gather_places(ws, k)
    seeds = [ws[p[0]] for p in gathering.places]
    assert len(gathering.places) <= k
    assert not any(a.overlaps(b) for i, a in enumerate(seeds) for b in seeds[i + 1:])  # distinct places
    for place in gathering.places:
        assert len(place) <= MAX_MEMBERS and place == sorted(place)  # bounded, best first
        assert all(ws[m].overlaps(ws[place[0]]) for m in place[1:])  # every member touches its seed's pixels
    if gathering.complete:
        assert len(gathering.places) == k
    else:  # every hit was looked at: it is in a place or overlaps a seed
        placed = {m for p in gathering.places for m in p}
        assert all(i in placed or any(w.overlaps(s) for s in seeds) for i, w in enumerate(ws))


def test_a_grid_of_overlapping_tiles_gives_one_place_per_object_not_one_for_the_image() -> None:
    """21 tiles of a 50%-overlap grid all matching: today's number of results, not one merged region."""
    grid = [Window(c * 112, r * 112, 224, 224) for r in range(3) for c in range(7)]
    gathering = gather_places(grid, 20)
    assert len(gathering.places) < 20 and not gathering.complete  # the index has fewer places than asked
    assert max(len(p) for p in gathering.places) <= MAX_MEMBERS
    covered = [max(grid[m].col_end for m in p) - min(grid[m].col_off for m in p) for p in gathering.places]
    assert max(covered) <= 3 * 224  # local: no place spans more than three tiles across


@pytest.fixture
def drone_index(tiny: ClipEmbedder, tmp_path: Path) -> Any:
    """The shared drone mosaic (686 x 758 px) in 96 px tiles at 50% overlap: about two hundred tiles."""
    settings = IndexSettings(tiling=TilingSettings(tile_size=96, overlap=0.5))
    return open_index(build_index(shared_raster("drone_rgba_alpha.tif"), settings, tmp_path / "ix", embedder=tiny).path)


def test_a_search_gives_the_number_of_results_asked_for_each_one_local(drone_index: Any, tiny: ClipEmbedder) -> None:
    for k in (1, 5, 20):
        found = search(drone_index, tiny, "a roof", top_k=k)
        assert len(found.regions) == k and not found.extra["fewer"]
        for region in found.regions:
            assert 1 <= len(region.members) <= MAX_MEMBERS
            seed = region.members[0].window
            assert all(m.window.overlaps(seed) for m in region.members)
            assert region.area <= 4 * seed.width * seed.height * 0.35**2 * 1.01  # at most two tiles across each way
        seeds = [r.members[0].window for r in found.regions]
        assert not any(a.overlaps(b) for i, a in enumerate(seeds) for b in seeds[i + 1:])
    # asking for more than there are: every place, and the answer says so
    everything = search(drone_index, tiny, "a roof", top_k=10_000)
    assert everything.extra["fewer"] and not everything.extra["below_threshold"]
    assert everything.extra["searched_tiles"] == drone_index.count and len(everything.regions) < drone_index.count
    assert "every separate place among the" in fewer_text(everything.answer())


def test_more_like_this_leaves_out_the_examples_own_ground(drone_index: Any, tiny: ClipEmbedder) -> None:
    best = search(drone_index, tiny, "a roof", top_k=1).regions[0]
    examples = [m.tile_id for m in best.members]
    similar = search_similar(drone_index, tile_ids=examples, top_k=10)
    example_windows = [drone_index.window(i) for i in examples]
    assert similar.regions
    for region in similar.regions:
        assert not any(m.window.overlaps(e) for m in region.members for e in example_windows)
    kept = search_similar(drone_index, tile_ids=examples, top_k=10, exclude_examples=False)
    assert any(m.window.overlaps(e) for r in kept.regions for m in r.members for e in example_windows)
