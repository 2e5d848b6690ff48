"""Result regions: places of overlapping hits, union geometry, CRS mapping."""

from __future__ import annotations

import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box, shape

from clip_search_plugin.engine.query.regions import Hit, merge_hits
from clip_search_plugin.engine.tiling.grid import Window


def test_a_region_is_a_best_tile_and_the_hits_overlapping_it_and_touching_does_not_count() -> None:
    hits = [  # ranked best first, as a search gives them
        Hit(3, 0.95, Window(22, 0, 10, 10), 0),
        Hit(0, 0.9, Window(0, 0, 10, 10), 0),
        Hit(2, 0.7, Window(12, 0, 10, 10), 0),  # touches 3's edge and overlaps neither seed: a place of its own
        Hit(1, 0.5, Window(5, 0, 10, 10), 0),  # overlaps 0 (a seed): joins it, although it also overlaps 2
    ]
    regions = merge_hits(hits, Affine.identity())
    assert [r.score for r in regions] == [0.95, 0.9, 0.7]
    assert [[h.tile_id for h in r.members] for r in regions] == [[3], [0, 1], [2]]  # best first
    assert [r.rank for r in regions] == [1, 2, 3]
    assert shape(regions[1].geometry).equals(box(0, 0, 15, 10))


def test_k_limits_the_regions_and_the_members_are_those_ranked_above_the_next_place() -> None:
    hits = [Hit(0, 0.9, Window(0, 0, 10, 10), 0), Hit(1, 0.8, Window(50, 0, 10, 10), 0),
            Hit(2, 0.7, Window(5, 0, 10, 10), 0), Hit(3, 0.6, Window(100, 0, 10, 10), 0),
            Hit(4, 0.5, Window(55, 0, 10, 10), 0)]
    regions = merge_hits(hits, Affine.identity(), k=2)
    assert [[h.tile_id for h in r.members] for r in regions] == [[0, 2], [1]]  # 4 ranks below place 3's seed
    assert len(merge_hits(hits, Affine.identity(), merge=False, k=2)) == 2


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


def test_geographic_area_is_measured_on_the_ellipsoid() -> None:
    t = Affine(0.001, 0, 10, 0, -0.001, 60.001)
    wgs84 = CRS.from_epsg(4326).to_wkt()
    (region,) = merge_hits([Hit(0, 0.3, Window(0, 0, 1, 1), 0)], t, crs_wkt=wgs84)
    # 0.001 deg x 0.001 deg at 60 N: about 55.8 m x 111.4 m (exact figures: tests/engine/test_geodesy.py)
    assert region.area == pytest.approx(55.8 * 111.4, rel=0.01) and region.area_units == "m2"
