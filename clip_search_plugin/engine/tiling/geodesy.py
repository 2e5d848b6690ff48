"""Areas and lengths on the ground, measured on the ellipsoid of the raster's own CRS.

A map projection's plane is not the ground: Web Mercator at 54° N shows an area about 2.9 times too
large, UTM shows lengths 0.04% short on its central meridian and too long far from it, and degrees are
not metres at all. So every area and every size "in metres" is measured as QGIS's measure tool does:
the geometry in the raster's CRS is densified (so a long straight edge of the projection is followed,
not replaced by a geodesic), transformed to longitude and latitude on that CRS's ellipsoid, and
measured there (geodesic polygon area, geodesic distance; GeographicLib through pyproj). Edges take the
short way round, so a geometry crossing the antimeridian is measured as the piece it is.

A CRS whose ellipsoid cannot be known (a local engineering CRS, no CRS at all, a WKT PROJ cannot read)
falls back to the plane in the CRS's linear unit (``linear_units_factor`` metres per unit). Transformers
are built once per CRS and cached (they are thread-safe).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError, ProjError

log = logging.getLogger("clip_search.engine")

AREA_TOLERANCE = 1e-7  # relative area error allowed by densification (see densify_segments)
EARTH_RADIUS = 6_371_000.0  # metres, only to choose how finely to densify
MAX_LATITUDE = 89.9
MAX_SEGMENTS = 2000
POLYGON = 3  # shapely's type id


@dataclass(frozen=True)
class Ellipsoidal:
    """How to measure on the ground in one CRS: its coordinates to degrees on its ellipsoid, and that ellipsoid."""

    to_lonlat: Transformer
    geod: Geod

    def lonlat(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = self.to_lonlat.transform(xs, ys)
        return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


@functools.lru_cache(maxsize=32)
def ellipsoidal(crs_wkt: str) -> Ellipsoidal | None:
    """The measuring tools for a CRS given as WKT, or None when its ellipsoid cannot be known."""
    if not crs_wkt:
        return None
    try:
        crs = CRS.from_wkt(crs_wkt)
        if crs.is_bound and crs.source_crs is not None:
            crs = crs.source_crs  # measure on the CRS's own datum, not after its shift to WGS 84
        if crs.is_compound and crs.sub_crs_list:
            crs = crs.sub_crs_list[0]
        ellipsoid = crs.ellipsoid
        if ellipsoid is None:
            return None
        a, b = float(ellipsoid.semi_major_metre), float(ellipsoid.semi_minor_metre)
        return Ellipsoidal(Transformer.from_crs(crs, _degrees_on(crs, a, b), always_xy=True), Geod(a=a, b=b))
    except (CRSError, ProjError, ValueError) as exc:
        log.warning("Cannot measure on the ellipsoid of this CRS (%s); areas are planar in its unit.", exc)
        return None


def _degrees_on(crs: CRS, a: float, b: float) -> CRS:
    """The CRS's own geographic CRS when it counts in degrees (the transformation is then the projection
    alone, found in a few milliseconds), else longitude and latitude in degrees on its ellipsoid."""
    geographic = crs.geodetic_crs
    if geographic is not None and geographic.is_geographic and all(
        math.isclose(axis.unit_conversion_factor, math.pi / 180, rel_tol=1e-9) for axis in geographic.axis_info[:2]
    ):
        return geographic
    return CRS.from_dict({"proj": "longlat", "a": a, "b": b, "no_defs": True})


def _rings_lonlat(tools: Ellipsoidal, geometry: shapely.Geometry) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(+1 for an exterior or -1 for a hole, longitudes, latitudes) of every ring, transformed in one call."""
    parts = shapely.get_parts(geometry)
    rings, owner = shapely.get_rings(parts[shapely.get_type_id(parts) == POLYGON], return_index=True)
    if len(rings) == 0:
        return []
    xy = shapely.get_coordinates(rings)
    lon, lat = tools.lonlat(xy[:, 0], xy[:, 1])
    ends = np.cumsum(shapely.get_num_coordinates(rings)).tolist()
    starts = [0, *ends[:-1]]
    first = [i == 0 or owner[i] != owner[i - 1] for i in range(len(rings))]
    return [(1.0 if f else -1.0, lon[a:b], lat[a:b]) for f, a, b in zip(first, starts, ends, strict=True)]


def densify_segments(lon: np.ndarray, lat: np.ndarray) -> int:
    """Segments per diagonal that keep a straight edge of the CRS within ``AREA_TOLERANCE`` of its path.

    An edge cut into segments of ground length s strays from its path by about s² κ / 8, κ the edge's
    curvature on the ellipsoid (tan φ / R for a parallel; at most about 1 / R for a straight line of the
    usual projections). Over a region of diagonal D that is a relative area error of about
    s² κ / (12 D), so n = D / s = sqrt(max(1, tan φ) D / (12 ε R)): 3 for a tile, about 200 for 100 km.
    """
    south, north = math.radians(float(lat.min())), math.radians(float(lat.max()))
    west, east = float(lon.min()), float(lon.max())
    if east - west > 180.0:  # across the antimeridian: measure the short way round
        wrapped = np.where(lon < 0, lon + 360.0, lon)
        west, east = float(wrapped.min()), float(wrapped.max())
    width = math.radians(east - west) * math.cos((south + north) / 2)
    diagonal = EARTH_RADIUS * math.hypot(width, north - south)
    steep = max(1.0, math.tan(min(max(abs(south), abs(north)), math.radians(MAX_LATITUDE))))
    n = math.sqrt(steep * diagonal / (12 * AREA_TOLERANCE * EARTH_RADIUS))
    return int(min(MAX_SEGMENTS, max(1, math.ceil(n))))


def _ellipsoidal_area(tools: Ellipsoidal, geometry: shapely.Geometry) -> float:
    rings = _rings_lonlat(tools, geometry)
    if not rings:
        return 0.0
    lon = np.concatenate([r[1] for r in rings])
    lat = np.concatenate([r[2] for r in rings])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return math.nan
    segments = densify_segments(lon, lat)
    if segments > 1:
        x0, y0, x1, y1 = geometry.bounds
        rings = _rings_lonlat(tools, shapely.segmentize(geometry, math.hypot(x1 - x0, y1 - y0) / segments))
    return sum(sign * abs(float(tools.geod.polygon_area_perimeter(lo, la)[0])) for sign, lo, la in rings)


def ground_area(geometry: shapely.Geometry, crs_wkt: str, linear_units_factor: float = 1.0) -> float:
    """Area in square metres of a (multi)polygon in the CRS ``crs_wkt``, measured on its ellipsoid.

    Planar area times ``linear_units_factor`` squared when the CRS's ellipsoid cannot be known or the
    geometry lies outside where the CRS can be transformed.
    """
    planar = float(geometry.area) * linear_units_factor**2
    tools = ellipsoidal(crs_wkt)
    if tools is None:
        return planar
    area = _ellipsoidal_area(tools, geometry)
    return area if math.isfinite(area) else planar


def pixel_ground_size(
    transform: Affine, width: int, height: int, crs_wkt: str, linear_units_factor: float = 1.0
) -> float:
    """Ground size of one pixel at the raster's centre in metres: the mean of one step along a row and
    one step along a column, each a geodesic length on the CRS's ellipsoid (planar in the CRS's unit
    when that ellipsoid cannot be known)."""
    t = transform
    planar = (math.hypot(t.a, t.d) + math.hypot(t.b, t.e)) / 2.0 * linear_units_factor
    tools = ellipsoidal(crs_wkt)
    if tools is None:
        return planar
    c, r = width / 2.0, height / 2.0
    ends = [t @ (c - 0.5, r), t @ (c + 0.5, r), t @ (c, r - 0.5), t @ (c, r + 0.5)]
    lon, lat = tools.lonlat(np.array([p[0] for p in ends]), np.array([p[1] for p in ends]))
    _, _, steps = tools.geod.inv(lon[[0, 2]], lat[[0, 2]], lon[[1, 3]], lat[[1, 3]])
    size = float(np.mean(steps))
    return size if math.isfinite(size) and size > 0 else planar
