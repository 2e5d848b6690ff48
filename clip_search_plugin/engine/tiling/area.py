"""Areas of interest: a bounding box or polygons in the raster's CRS, tested against tile footprints; geometry
between the raster's pixel space and its CRS."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from affine import Affine
from shapely.affinity import affine_transform
from shapely.geometry import box, shape

from ..errors import InputError
from ..settings import Area


def to_crs(geometry: shapely.Geometry, transform: Affine) -> shapely.Geometry:
    """Pixel-space geometry to the raster's CRS."""
    t = transform
    return affine_transform(geometry, [t.a, t.b, t.d, t.e, t.c, t.f])


def to_pixels(geometry: shapely.Geometry, transform: Affine) -> shapely.Geometry:
    """CRS geometry to pixel space."""
    return to_crs(geometry, ~transform)


def area_geometry(area: Area) -> shapely.Geometry:
    """The area as one shapely geometry in the raster's CRS."""
    if isinstance(area, tuple | list) and len(area) == 4 and all(isinstance(v, int | float) for v in area):
        xmin, ymin, xmax, ymax = (float(v) for v in area)  # type: ignore[arg-type]
        if not (xmin < xmax and ymin < ymax):
            raise InputError(f"Bounding box must be xmin ymin xmax ymax with min < max; got {list(area)}.")
        return box(xmin, ymin, xmax, ymax)
    if isinstance(area, list) and area and all(isinstance(g, dict) for g in area):
        try:
            geoms = [shape(g) for g in area]
        except Exception as exc:
            raise InputError(f"Area polygons are not valid GeoJSON geometries: {exc}.") from exc
        if any(g.geom_type not in ("Polygon", "MultiPolygon") for g in geoms):
            raise InputError("Areas must be Polygon or MultiPolygon geometries in the raster's CRS.")
        return shapely.union_all([shapely.make_valid(g) for g in geoms])
    raise InputError("An area is a bounding box (xmin, ymin, xmax, ymax) or a list of GeoJSON polygons.")


def tiles_in_area(tiles: np.ndarray, area: Area, transform: Affine) -> np.ndarray:
    """Boolean mask over a tile table (N, >=4: col, row, width, height) of tiles touching the area."""
    pixel_area = to_pixels(area_geometry(area), transform)
    if tiles.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    cols, rows = tiles[:, 0].astype(float), tiles[:, 1].astype(float)
    boxes = shapely.box(cols, rows, cols + tiles[:, 2], rows + tiles[:, 3])
    shapely.prepare(pixel_area)
    # Tiles that merely touch the area's edge (no shared interior) do not count.
    return np.asarray(shapely.intersects(pixel_area, boxes) & ~shapely.touches(pixel_area, boxes))


def share_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether windows ``a`` and ``b`` (rows of a tile table: col, row, width, height, ...; any shapes that
    broadcast) share pixels; windows that only touch at an edge do not."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return ((a[..., 0] < b[..., 0] + b[..., 2]) & (b[..., 0] < a[..., 0] + a[..., 2])
            & (a[..., 1] < b[..., 1] + b[..., 3]) & (b[..., 1] < a[..., 1] + a[..., 3]))


def tiles_overlapping(tiles: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """Boolean mask over a tile table (N, >=4: col, row, width, height) of tiles sharing pixels with any of
    the ``examples`` (rows of the same table form); tiles that only touch an example's edge do not count."""
    mask = np.zeros(tiles.shape[0], dtype=bool)
    for example in np.asarray(examples)[:, :4]:
        mask |= share_pixels(tiles[:, :4], example)
    return mask


def describe_area(area: Area | None) -> Any:
    """JSON-ready form of an area for manifests and results."""
    if area is None:
        return None
    return list(area) if isinstance(area, tuple) else area
