"""Merging hit tiles into regions, and geometry between pixel space and the raster's CRS.

Hits whose footprints share pixels are grouped (transitively); a region's polygon is the union of its
members' footprints, its score the best member score. Grouping and union happen in pixel space, and the
result is mapped to the CRS with the raster's affine transform (so rotated rasters work too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from affine import Affine
from shapely.affinity import affine_transform
from shapely.geometry import box, mapping

from .grid import Window


@dataclass(frozen=True)
class Hit:
    """One tile that matched a query."""

    tile_id: int
    score: float
    window: Window
    scale_index: int


@dataclass
class Region:
    """Merged hits: a polygon in the raster's CRS, ranked by its best member's score."""

    rank: int
    score: float
    geometry: dict[str, Any]
    bounds: tuple[float, float, float, float]
    area: float
    area_units: str
    members: list[Hit] = field(default_factory=list)
    relative: float | None = None  # standard deviations above the index's typical tile for this query

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": self.score,
            "relative": self.relative,
            "geometry": self.geometry,
            "bounds": list(self.bounds),
            "area": self.area,
            "area_units": self.area_units,
            "tile_count": len(self.members),
            "members": [{"tile_id": h.tile_id, "score": h.score, "scale_index": h.scale_index} for h in self.members],
        }


def group_overlapping(windows: Sequence[Window]) -> list[list[int]]:
    """Indices of ``windows`` grouped so that windows sharing pixels (transitively) are together.

    A sweep over windows sorted by column keeps the pair checks to those whose columns overlap.
    Groups are returned in order of their smallest index; members in increasing order.
    """
    parent = list(range(len(windows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(len(windows)), key=lambda i: windows[i].col_off)
    active: list[int] = []
    for i in order:
        w = windows[i]
        active = [j for j in active if windows[j].col_end > w.col_off]
        for j in active:
            if windows[j].overlaps(w):
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
        active.append(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(windows)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def pixel_polygon(windows: Sequence[Window]) -> shapely.Geometry:
    """Union of the windows as a polygon in pixel coordinates (x = column, y = row)."""
    return shapely.union_all([box(w.col_off, w.row_off, w.col_end, w.row_end) for w in windows])


def to_crs(geometry: shapely.Geometry, transform: Affine) -> shapely.Geometry:
    """Pixel-space geometry to the raster's CRS."""
    t = transform
    return affine_transform(geometry, [t.a, t.b, t.d, t.e, t.c, t.f])


def to_pixels(geometry: shapely.Geometry, transform: Affine) -> shapely.Geometry:
    """CRS geometry to pixel space."""
    return to_crs(geometry, ~transform)


def ground_area(
    geometry: shapely.Geometry, georeferenced: bool, is_geographic: bool, linear_units_factor: float
) -> tuple[float, str]:
    """(area, units): square metres, or square pixels for a raster without georeference.

    In a geographic CRS the area is converted at the polygon's latitude (accurate to well under 1% at
    region sizes).
    """
    if not georeferenced:
        return float(geometry.area), "px2"
    if is_geographic:
        lat = math.radians(geometry.centroid.y)
        metres_lat = 111_132.954 - 559.822 * math.cos(2 * lat)
        metres_lon = 111_319.488 * math.cos(lat)
        return float(geometry.area * metres_lat * metres_lon), "m2"
    return float(geometry.area * linear_units_factor**2), "m2"


def merge_hits(
    hits: Sequence[Hit],
    transform: Affine,
    georeferenced: bool = True,
    is_geographic: bool = False,
    linear_units_factor: float = 1.0,
    merge: bool = True,
) -> list[Region]:
    """Regions from hits (merged where footprints overlap unless ``merge`` is false), best first."""
    groups = group_overlapping([h.window for h in hits]) if merge else [[i] for i in range(len(hits))]
    regions = []
    for group in groups:
        members = sorted((hits[i] for i in group), key=lambda h: -h.score)
        geometry = to_crs(pixel_polygon([h.window for h in members]), transform)
        area, units = ground_area(geometry, georeferenced, is_geographic, linear_units_factor)
        regions.append(
            Region(
                rank=0,
                score=members[0].score,
                geometry=mapping(geometry),
                bounds=tuple(float(v) for v in geometry.bounds),  # type: ignore[arg-type]
                area=area,
                area_units=units,
                members=members,
            )
        )
    regions.sort(key=lambda r: -r.score)
    for rank, region in enumerate(regions, start=1):
        region.rank = rank
    return regions
