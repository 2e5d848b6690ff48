"""Areas and sizes in metres are measured on the ellipsoid, checked against computations that share no
code with it: the closed-form area of a longitude/latitude rectangle on the ellipsoid (a box in degrees
and a box in Web Mercator are both such rectangles), Gauss-Legendre integration of Web Mercator's areal
scale written out here, and for UTM integration of the projection's areal scale factor."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from numpy.polynomial.legendre import leggauss
from pyproj import Proj
from rasterio.crs import CRS

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.query.regions import Hit, build_regions, merge_hits
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings
from clip_search_plugin.engine.tiling.geodesy import pixel_ground_size
from clip_search_plugin.engine.tiling.grid import Window

from ..conftest import shared_raster, write_geotiff

A = 6_378_137.0  # WGS 84
F = 1 / 298.257223563
E2 = F * (2 - F)
WEB_MERCATOR_HALF = math.pi * A  # x of the antimeridian in EPSG:3857
Density = Callable[[np.ndarray, np.ndarray], np.ndarray]


def wkt(epsg: int) -> str:
    return str(CRS.from_epsg(epsg).to_wkt())


def zone(lat: float, e2: float = E2) -> float:
    """The antiderivative in the area of a latitude band on the ellipsoid (authalic latitude form)."""
    s, e = math.sin(math.radians(lat)), math.sqrt(e2)
    return s / (2 * (1 - e2 * s * s)) + math.log((1 + e * s) / (1 - e * s)) / (4 * e)


def rectangle_area(lon0: float, lon1: float, lat0: float, lat1: float, a: float = A, b: float = A * (1 - F)) -> float:
    """Exact area in m² of the longitude/latitude rectangle on the ellipsoid (WGS 84 unless given)."""
    e2 = 1 - (b / a) ** 2
    return a * a * (1 - e2) * math.radians(abs(lon1 - lon0)) * abs(zone(lat1, e2) - zone(lat0, e2))


def mercator_lonlat(x: float, y: float) -> tuple[float, float]:
    """EPSG:3857 to degrees, by the projection's own spherical formulas."""
    return math.degrees(x / A), math.degrees(math.atan(math.sinh(y / A)))


def mercator_box_area(x0: float, y0: float, x1: float, y1: float) -> float:
    (lon0, lat0), (lon1, lat1) = mercator_lonlat(x0, y0), mercator_lonlat(x1, y1)
    return rectangle_area(lon0, lon1, lat0, lat1)


def radii(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(meridional M, prime-vertical N) radii of curvature of WGS 84 at ``lat`` (radians)."""
    w = 1 - E2 * np.sin(lat) ** 2
    return A * (1 - E2) / w**1.5, A / np.sqrt(w)


def integrate_over_window(window: Window, t: Affine, density: Density, n: int = 16) -> float:
    """Gauss-Legendre integral of ``density(x, y)`` (m² per CRS unit²) over a pixel window mapped by ``t``."""
    nodes, weights = leggauss(n)
    cols = window.col_off + (nodes + 1) / 2 * window.width
    rows = window.row_off + (nodes + 1) / 2 * window.height
    c, r = np.meshgrid(cols, rows)
    x, y = t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f
    w = np.outer(weights, weights) * (window.width / 2) * (window.height / 2) * abs(t.determinant)
    return float(np.sum(w * density(x, y)))


def mercator_density(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ground m² per EPSG:3857 unit²: dA = M N cos(φ) dφ dλ with dλ = dx / a and dφ = cos(φ) dy / a."""
    lat = np.arctan(np.sinh(y / A))
    m, n = radii(lat)
    return m * n * np.cos(lat) ** 2 / A**2


def utm_density(epsg: int) -> Density:
    """Ground m² per projected m²: one over the projection's areal scale factor."""
    proj = Proj(f"EPSG:{epsg}")

    def density(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lon, lat = proj(x, y, inverse=True)
        return 1.0 / np.asarray(proj.get_factors(lon, lat).areal_scale)

    return density


def region_area(windows: list[Window], t: Affine, epsg: int) -> float:
    hits = [Hit(i, 0.5, w, 0) for i, w in enumerate(windows)]
    (region,) = build_regions(hits, [list(range(len(hits)))], t, True, wkt(epsg), 1.0)
    assert region.area_units == "m2"
    return region.area


def web_mercator_at(lon: float, lat: float, pixel: float) -> Affine:
    x = math.radians(lon) * A
    y = A * math.asinh(math.tan(math.radians(lat)))
    return Affine(pixel, 0, x, 0, -pixel, y)


@pytest.mark.parametrize(
    ("lat", "pixel", "window"),
    [
        (54.4, 1.64025, Window(0, 0, 686, 758)),  # the issue's raster: 139.90 ha on the plane
        (54.0, 0.5, Window(100, 40, 224, 224)),  # one tile
        (70.0, 2.0, Window(0, 0, 448, 224)),
        (70.0, 30.0, Window(0, 0, 4000, 3000)),  # 120 km x 90 km: long edges are followed, not cut short
    ],
)
def test_web_mercator_areas_are_ground_areas(lat: float, pixel: float, window: Window) -> None:
    t = web_mercator_at(10.0, lat, pixel)
    x0, y1 = t @ (window.col_off, window.row_off)
    x1, y0 = t @ (window.col_end, window.row_end)
    assert region_area([window], t, 3857) == pytest.approx(mercator_box_area(x0, y0, x1, y1), rel=1e-6)


def test_the_issues_raster_measures_47_5_hectares_not_139_9() -> None:
    t = web_mercator_at(10.0, 54.4, 1.64025)
    whole = Window(0, 0, 686, 758)
    assert whole.width * whole.height * 1.64025**2 / 1e4 == pytest.approx(139.90, abs=0.01)  # on the plane
    assert region_area([whole], t, 3857) / 1e4 == pytest.approx(47.52, abs=0.01)


def test_a_region_with_a_hole_subtracts_it() -> None:
    t = web_mercator_at(-20.0, 64.0, 1.0)
    ring = [Window(c, r, 100, 100) for c in (0, 80, 160) for r in (0, 80, 160) if (c, r) != (80, 80)]
    x0, y0 = t @ (100, 160)  # the hole: columns 100-160, rows 100-160
    x1, y1 = t @ (160, 100)
    outer = mercator_box_area(*(t @ (0, 260)), *(t @ (260, 0)))
    assert region_area(ring, t, 3857) == pytest.approx(outer - mercator_box_area(x0, y0, x1, y1), rel=1e-6)


@pytest.mark.parametrize("lat", [54.0, 70.0])
def test_a_rotated_web_mercator_raster(lat: float) -> None:
    t = web_mercator_at(10.0, lat, 1.0) @ Affine.rotation(30) @ Affine.scale(2.0, 1.5)
    window = Window(0, 0, 3000, 2000)  # 6 km x 3 km turned by 30 degrees
    expected = integrate_over_window(window, t, mercator_density)
    assert region_area([window], t, 3857) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("epsg", "transform", "window"),
    [
        (32633, Affine(0.5, 0, 499_000, 0, -0.5, 6_650_000), Window(0, 0, 2000, 1000)),  # on the meridian
        (32633, Affine(10, 0, 800_000, 0, -10, 7_800_000), Window(0, 0, 3000, 2000)),  # 300 km east, 70 N
        (32750, Affine(0.35, 0, 180_000, 0, -0.35, 7_000_000), Window(0, 0, 4000, 4000)),  # far west, south
        (
            32633,
            Affine.translation(650_000, 6_000_000) @ Affine.rotation(-20) @ Affine.scale(5, -5),
            Window(0, 0, 2000, 2000),
        ),  # rotated
    ],
)
def test_utm_areas_match_the_integrated_scale_factor(epsg: int, transform: Affine, window: Window) -> None:
    expected = integrate_over_window(window, transform, utm_density(epsg))
    assert region_area([window], transform, epsg) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("lon", "lat", "pixel", "window"),
    [
        (10.0, 0.01, 0.0001, Window(0, 0, 100, 100)),  # equator, about 1.1 km square
        (10.0, 60.001, 0.001, Window(0, 0, 1, 1)),
        (10.0, 80.0, 0.0002, Window(0, 0, 500, 300)),
        (20.0, 75.0, 0.01, Window(0, 0, 500, 500)),  # 5 x 5 degrees, 70-75 N
        (-70.0, -45.0, 0.002, Window(0, 0, 300, 200)),  # southern hemisphere
    ],
)
def test_degree_areas_are_ellipsoidal_rectangles(lon: float, lat: float, pixel: float, window: Window) -> None:
    t = Affine(pixel, 0, lon, 0, -pixel, lat)
    lon0, lat1 = t @ (window.col_off, window.row_off)
    lon1, lat0 = t @ (window.col_end, window.row_end)
    assert region_area([window], t, 4326) == pytest.approx(rectangle_area(lon0, lon1, lat0, lat1), rel=1e-6)


def test_a_geographic_crs_in_grads_is_converted_to_degrees() -> None:
    # NTF (Paris), EPSG:4807: longitude and latitude in grads (400 to the circle) on Clarke 1880 (IGN)
    t = Affine(0.01, 0, 1.0, 0, -0.01, 54.0)
    window = Window(0, 0, 30, 20)
    to_degrees = 0.9
    lon0, lat1 = t @ (0, 0)
    lon1, lat0 = t @ (30, 20)
    expected = rectangle_area(
        lon0 * to_degrees, lon1 * to_degrees, lat0 * to_degrees, lat1 * to_degrees, 6_378_249.2, 6_356_515.0
    )
    assert region_area([window], t, 4807) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("epsg", "start"), [(4326, 179.9), (4326, -180.1), (3857, WEB_MERCATOR_HALF - 20_000)])
def test_a_region_across_the_antimeridian_is_its_own_size(epsg: int, start: float) -> None:
    pixel = 0.002 if epsg == 4326 else 200.0
    top = -16.0 if epsg == 4326 else web_mercator_at(0, -16.0, 1).f
    t = Affine(pixel, 0, start, 0, -pixel, top)
    window = Window(0, 0, 100, 50)  # crosses 180 degrees
    x1, y0 = t @ (100, 50)
    if epsg == 4326:
        expected = rectangle_area(start, x1, y0, top)
    else:
        expected = mercator_box_area(start, y0, x1, top)
    assert expected < 1e9  # a few hundred square kilometres
    assert region_area([window], t, epsg) == pytest.approx(expected, rel=1e-6)


def test_a_crs_without_an_ellipsoid_keeps_planar_areas_in_its_unit() -> None:
    local = 'LOCAL_CS["site grid",UNIT["US survey foot",0.304800609601219],AXIS["X",EAST],AXIS["Y",NORTH]]'
    t = Affine(2, 0, 1000, 0, -2, 5000)
    (region,) = merge_hits([Hit(0, 0.5, Window(0, 0, 10, 20), 0)], t, True, local, 0.304800609601219)
    assert region.area == pytest.approx(20 * 40 * 0.304800609601219**2)
    assert pixel_ground_size(t, 100, 100, local, 0.304800609601219) == pytest.approx(2 * 0.304800609601219)
    (raw,) = merge_hits([Hit(0, 0.5, Window(0, 0, 10, 20), 0)], Affine.identity(), False)
    assert (raw.area, raw.area_units) == (200, "px2")


@pytest.mark.parametrize("lat", [0.0, 54.4, 70.0])
def test_a_web_mercator_pixel_is_measured_on_the_ground(lat: float) -> None:
    pixel = 1.64025
    centre = web_mercator_at(10.0, lat, pixel)
    t = centre @ Affine.translation(-500, -400)  # the raster's centre (col 500, row 400) sits at ``lat``
    m, n = radii(np.radians(lat))
    expected = pixel * math.cos(math.radians(lat)) * (m + n) / 2 / A  # conformal: both axes shrink by cos
    assert pixel_ground_size(t, 1000, 800, wkt(3857), 1.0) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(("lat", "seconds"), [(0.0, 1.0), (60.0, 1.0), (78.0, 3.0)])
def test_a_degree_pixel_is_measured_on_the_ground(lat: float, seconds: float) -> None:
    step = seconds / 3600
    t = Affine(step, 0, 10.0 - 50 * step, 0, -step, lat + 50 * step)
    m, n = radii(np.radians(lat))
    expected = (n * math.cos(math.radians(lat)) + m) * math.radians(step) / 2
    assert pixel_ground_size(t, 100, 100, wkt(4326), 1.0) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("easting", [500_000.0, 800_000.0])
def test_a_utm_pixel_is_measured_on_the_ground(easting: float) -> None:
    t = Affine(0.3, 0, easting - 150, 0, -0.3, 6_650_150)
    proj = Proj("EPSG:32633")
    lon, lat = proj(easting, 6_650_000, inverse=True)
    k = proj.get_factors(lon, lat).meridional_scale  # conformal: the same along every direction
    assert pixel_ground_size(t, 1000, 1000, wkt(32633), 1.0) == pytest.approx(0.3 / k, rel=1e-6)


def band_area(windows: list[Window], t: Affine) -> float:
    """Area of a union of pixel windows in EPSG:3857, cut into row bands of lat/lon rectangles."""
    rows = sorted({w.row_off for w in windows} | {w.row_end for w in windows})
    total = 0.0
    for r0, r1 in itertools.pairwise(rows):
        spans = sorted((w.col_off, w.col_end) for w in windows if w.row_off <= r0 and r1 <= w.row_end)
        merged: list[list[int]] = []
        for c0, c1 in spans:
            if merged and c0 <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], c1)
            else:
                merged.append([c0, c1])
        for c0, c1 in merged:
            (x0, y1), (x1, y0) = t @ (c0, r0), t @ (c1, r1)
            total += mercator_box_area(x0, y0, x1, y1)
    return total


def test_a_web_mercator_raster_indexes_and_reports_ground_sizes(tiny: ClipEmbedder, tmp_path: Path) -> None:
    with rasterio.open(shared_raster("colorado_rgb_015m.tif")) as src:
        pixels = src.read([1, 2, 3])
    t = web_mercator_at(10.0, 54.4, 1.64025)
    raster = write_geotiff(tmp_path / "wm54.tif", pixels, t, "EPSG:3857")
    settings = IndexSettings(
        tiling=TilingSettings(tile_size=50, tile_units="m", scales=(1.0,)), model=ModelSpec("tiny-random")
    )
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=tiny).path)
    # one pixel is 1.64025 m on the map but 0.955 m on the ground at 54.4 N: 50 m is 52 pixels, not 30
    centre_lat = math.degrees(math.atan(math.sinh((t @ (383 / 2, 232 / 2))[1] / A)))
    m, n = radii(np.radians(centre_lat))
    ground_pixel = 1.64025 * math.cos(math.radians(centre_lat)) * (m + n) / 2 / A
    assert index.manifest["base_tile_px"] == round(50 / float(ground_pixel)) == 52
    found = search(index, tiny, "a roof", top_k=6)
    assert found.regions
    for region in found.regions:
        windows = [h.window for h in region.members]
        assert region.area_units == "m2" and region.area == pytest.approx(band_area(windows, t), rel=1e-6)
    every_tile = [Hit(i, 0.0, index.window(i), 0) for i in range(index.count)]  # one region of all the tiles
    (everything,) = build_regions(every_tile, [list(range(index.count))], t, True, index.raster.crs_wkt, 1.0)
    assert everything.area == pytest.approx(mercator_box_area(*(t @ (0, 232)), *(t @ (383, 0))), rel=1e-6)
