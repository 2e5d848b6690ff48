"""Hit tiles as result regions, and geometry between pixel space and the raster's CRS.

Hits are gathered into places (see :mod:`.places`: each place is a best tile and the hits overlapping it, so
a region stays local); a region's polygon is the union of its members' footprints, its score the best
member's. Grouping and union happen in pixel space, and the result is mapped to the CRS with the raster's
affine transform (so rotated rasters work too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from affine import Affine
from shapely.geometry import box, mapping

from ..tiling import geodesy
from ..tiling.area import to_crs
from ..tiling.grid import Window
from .places import gather_places


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
    file: str | None = None  # the sheet it lies on, in an index of a collection

    def to_dict(self) -> dict[str, Any]:
        return ({"file": self.file} if self.file is not None else {}) | {
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


def pixel_polygon(windows: Sequence[Window]) -> shapely.Geometry:
    """Union of the windows as a polygon in pixel coordinates (x = column, y = row)."""
    return shapely.union_all([box(w.col_off, w.row_off, w.col_end, w.row_end) for w in windows])


def ground_area(
    geometry: shapely.Geometry, georeferenced: bool, crs_wkt: str, linear_units_factor: float
) -> tuple[float, str]:
    """(area, units): square metres measured on the CRS's ellipsoid (see ``geodesy``), or square pixels
    for a raster without georeference."""
    if not georeferenced:
        return float(geometry.area), "px2"
    return geodesy.ground_area(geometry, crs_wkt, linear_units_factor), "m2"


def merge_hits(
    hits: Sequence[Hit],
    transform: Affine,
    georeferenced: bool = True,
    crs_wkt: str = "",
    linear_units_factor: float = 1.0,
    merge: bool = True,
    k: int | None = None,
) -> list[Region]:
    """At most ``k`` regions from ranked hits (best first): places of overlapping hits (see :mod:`.places`),
    or one region per hit when ``merge`` is false."""
    if merge:
        groups = gather_places([h.window for h in hits], k).places
    else:
        groups = [[i] for i in range(len(hits) if k is None else min(k, len(hits)))]
    return build_regions(hits, groups, transform, georeferenced, crs_wkt, linear_units_factor)


def build_regions(
    hits: Sequence[Hit],
    groups: Sequence[Sequence[int]],
    transform: Affine,
    georeferenced: bool = True,
    crs_wkt: str = "",
    linear_units_factor: float = 1.0,
) -> list[Region]:
    """One region per group of hits (positions in ``hits``), best first, ranked from 1."""
    regions = []
    for group in groups:
        members = sorted((hits[i] for i in group), key=lambda h: -h.score)
        geometry = to_crs(pixel_polygon([h.window for h in members]), transform)
        area, units = ground_area(geometry, georeferenced, crs_wkt, linear_units_factor)
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
