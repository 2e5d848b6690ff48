"""Tile grid: coverage, sizes, counts and the edge policy, as properties and as tables."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.tiling.grid import (
    Window,
    build_grid,
    ground_size_to_pixels,
    stride_for,
    tile_starts,
)

lengths = st.integers(min_value=1, max_value=3000)
sizes = st.integers(min_value=1, max_value=600)
overlaps = st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9])


@given(lengths, sizes, overlaps)
def test_every_pixel_is_covered_and_tiles_stay_inside(length: int, size: int, overlap: float) -> None:
    stride = stride_for(size, overlap)
    starts = tile_starts(length, size, stride)
    tile = min(size, length)
    covered = set()
    for s in starts:
        assert 0 <= s and s + tile <= length  # never past the edge
        covered.update(range(s, s + tile))
    assert covered == set(range(length))


@given(lengths, sizes, overlaps)
def test_count_follows_the_formula_and_last_tile_is_shifted_inward(length: int, size: int, overlap: float) -> None:
    stride = stride_for(size, overlap)
    starts = tile_starts(length, size, stride)
    expected = 1 if length <= size else math.ceil((length - size) / stride) + 1
    assert len(starts) == expected
    assert starts == sorted(set(starts))
    assert starts[-1] == max(0, length - size)
    # all steps are the stride except possibly the last, which is shorter (shifted inward)
    steps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(step == stride for step in steps[:-1])
    assert all(0 < step <= stride for step in steps)


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 1500), st.integers(1, 1500), st.integers(16, 300),
       st.lists(st.sampled_from([0.5, 1.0, 2.0, 4.0]), min_size=1, max_size=3, unique=True))
def test_grid_covers_raster_at_each_scale(width: int, height: int, base: int, scales: list[float]) -> None:
    tiles = build_grid(width, height, base, 0.5, scales)
    for index, scale in enumerate(scales):
        at_scale = [t.window for t in tiles if t.scale_index == index]
        size = max(1, round(base * scale))
        assert {(w.width, w.height) for w in at_scale} == {(min(size, width), min(size, height))}
        cols = {c for w in at_scale for c in range(w.col_off, w.col_end)}
        rows = {r for w in at_scale for r in range(w.row_off, w.row_end)}
        assert cols == set(range(width)) and rows == set(range(height))
        assert all(w.col_end <= width and w.row_end <= height for w in at_scale)


@pytest.mark.parametrize(
    ("length", "size", "stride", "starts"),
    [
        (1000, 224, 112, [0, 112, 224, 336, 448, 560, 672, 776]),  # last shifted from 784 to 776
        (448, 224, 112, [0, 112, 224]),  # exact fit: no extra tile
        (224, 224, 112, [0]),
        (100, 224, 112, [0]),  # shorter than a tile: one tile, the whole axis
        (225, 224, 224, [0, 1]),  # no overlap asked, one pixel left: shifted inward
    ],
)
def test_tile_starts_table(length: int, size: int, stride: int, starts: list[int]) -> None:
    assert tile_starts(length, size, stride) == starts


def test_grid_table_for_the_tiny_shared_raster_size() -> None:
    tiles = build_grid(383, 232, 224, 0.5, [1.0, 2.0])
    one = {t.window for t in tiles if t.scale_index == 0}
    assert one == {Window(c, r, 224, 224) for c in (0, 112, 159) for r in (0, 8)}
    two = [t.window for t in tiles if t.scale_index == 1]
    assert two == [Window(0, 0, 383, 232)]  # smaller than the 448 px tile: the whole raster


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_overlap_outside_range_is_refused(bad: float) -> None:
    with pytest.raises(InputError, match="Overlap"):
        stride_for(224, bad)


def test_ground_size_to_pixels_rounds_and_refuses_nonsense() -> None:
    # the ground size of a pixel is measured on the ellipsoid: tests/engine/test_geodesy.py
    assert ground_size_to_pixels(60.0, 0.3) == 200
    assert ground_size_to_pixels(50.0, 0.9558) == 52
    assert ground_size_to_pixels(0.1, 30.0) == 1
    with pytest.raises(InputError, match="positive"):
        ground_size_to_pixels(0.0, 0.3)
    with pytest.raises(InputError, match="pixel size is zero"):
        ground_size_to_pixels(60.0, 0.0)


def test_window_overlap_excludes_touching_edges() -> None:
    a = Window(0, 0, 10, 10)
    assert a.overlaps(Window(9, 9, 5, 5))
    assert not a.overlaps(Window(10, 0, 5, 5))
    assert a.union_bounds(Window(20, 5, 5, 10)) == Window(0, 0, 25, 15)
