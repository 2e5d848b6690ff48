"""Region merging: grouping against a brute-force reference, union geometry, CRS mapping."""

from __future__ import annotations

import pytest
import shapely
from affine import Affine
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import box, shape

from clip_search_plugin.engine.grid import Window
from clip_search_plugin.engine.regions import Hit, group_overlapping, merge_hits

windows = st.builds(Window, st.integers(0, 200), st.integers(0, 200), st.integers(1, 60), st.integers(1, 60))


def brute_force_groups(ws: list[Window]) -> list[list[int]]:
    """Connected components of the overlap graph, by repeated flooding."""
    seen: set[int] = set()
    groups = []
    for start in range(len(ws)):
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            i = todo.pop()
            for j in range(len(ws)):
                if j not in group and ws[i].overlaps(ws[j]):
                    group.add(j)
                    todo.append(j)
        seen |= group
        groups.append(sorted(group))
    return groups


@given(st.lists(windows, max_size=40))
def test_grouping_matches_brute_force(ws: list[Window]) -> None:
    assert group_overlapping(ws) == brute_force_groups(ws)


def test_chain_of_overlaps_merges_and_touching_does_not() -> None:
    hits = [
        Hit(0, 0.9, Window(0, 0, 10, 10), 0),
        Hit(1, 0.5, Window(5, 0, 10, 10), 0),
        Hit(2, 0.7, Window(12, 0, 10, 10), 0),  # overlaps 1 only: joins via the chain
        Hit(3, 0.95, Window(22, 0, 10, 10), 0),  # touches 2's edge: separate region
    ]
    regions = merge_hits(hits, Affine.identity())
    assert [r.score for r in regions] == [0.95, 0.9]
    assert [len(r.members) for r in regions] == [1, 3]
    assert [r.rank for r in regions] == [1, 2]
    merged = shape(regions[1].geometry)
    assert merged.equals(box(0, 0, 22, 10))
    assert [h.tile_id for h in regions[1].members] == [0, 2, 1]  # best first


def test_region_geometry_is_mapped_to_the_crs_and_area_in_square_metres() -> None:
    t = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    (region,) = merge_hits([Hit(0, 0.3, Window(10, 20, 100, 40), 0)], t)
    geom = shape(region.geometry)
    assert geom.equals(box(1005, 1970, 1055, 1990))
    assert region.bounds == (1005, 1970, 1055, 1990)
    assert region.area == pytest.approx(50 * 20) and region.area_units == "m2"


def test_rotated_transform_gives_a_rotated_footprint() -> None:
    t = Affine.translation(100, 100) @ Affine.rotation(30) @ Affine.scale(1, -1)
    (region,) = merge_hits([Hit(0, 0.3, Window(0, 0, 10, 10), 0)], t)
    geom = shape(region.geometry)
    assert geom.area == pytest.approx(100)
    corner = t @ (10, 0)
    assert shapely.Point(corner).distance(geom.exterior) < 1e-9


def test_no_merge_keeps_one_region_per_hit() -> None:
    hits = [Hit(0, 0.9, Window(0, 0, 10, 10), 0), Hit(1, 0.8, Window(5, 5, 10, 10), 0)]
    assert len(merge_hits(hits, Affine.identity(), merge=False)) == 2
    assert len(merge_hits(hits, Affine.identity())) == 1


def test_geographic_area_is_converted_at_latitude() -> None:
    t = Affine(0.001, 0, 10, 0, -0.001, 60.001)
    (region,) = merge_hits([Hit(0, 0.3, Window(0, 0, 1, 1), 0)], t, is_geographic=True)
    # 0.001 deg x 0.001 deg at 60 N: about 55.8 m x 111.4 m
    assert region.area == pytest.approx(55.8 * 111.4, rel=0.01)
