"""Tile grid: pure functions over pixel windows.

Everything here works in the raster's pixel grid (columns, rows). Map coordinates appear only at the
edges: converting a ground tile size to pixels and an area of interest to pixel space.

Edge policy (explicit and tested): along each axis tiles start every ``stride`` pixels; the last tile
is *shifted inward* so that it ends exactly on the raster's edge. Every tile therefore lies fully inside
the raster and has the full tile size, except on an axis shorter than one tile, where the single tile is
the whole axis. No tile ever reads past the edge, so no tile is padded with invented pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels: columns [col_off, col_off + width), rows [row_off, row_off + height)."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    def overlaps(self, other: Window) -> bool:
        """True when the two windows share pixels (touching edges do not count)."""
        return (
            self.col_off < other.col_end
            and other.col_off < self.col_end
            and self.row_off < other.row_end
            and other.row_off < self.row_end
        )

    def union_bounds(self, other: Window) -> Window:
        """The smallest window that holds both."""
        col = min(self.col_off, other.col_off)
        row = min(self.row_off, other.row_off)
        return Window(col, row, max(self.col_end, other.col_end) - col, max(self.row_end, other.row_end) - row)

    def to_bounds(self) -> tuple[int, int, int, int]:
        """(col_min, row_min, col_max, row_max)."""
        return (self.col_off, self.row_off, self.col_end, self.row_end)


@dataclass(frozen=True)
class Tile:
    """One tile of the grid: a source window and the index of its scale in the tiling's scale list."""

    window: Window
    scale_index: int


def tile_table(tiles: Sequence[Tile]) -> np.ndarray:
    """The index's int32 (N, 5) tile table of ``tiles``: column offset, row offset, width, height, scale index."""
    rows = [[t.window.col_off, t.window.row_off, t.window.width, t.window.height, t.scale_index] for t in tiles]
    return np.array(rows, dtype=np.int32).reshape(-1, 5)


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``size`` pixels every ``stride`` pixels along an axis of ``length``.

    The count is ``ceil((length - size) / stride) + 1`` for ``length > size`` and 1 otherwise; the last
    start is ``length - size`` (shifted inward, see the module docstring).
    """
    if length <= 0 or size <= 0 or stride <= 0:
        raise InputError(f"Tile grid needs positive sizes (length={length}, size={size}, stride={stride}).")
    if length <= size:
        return [0]
    count = math.ceil((length - size) / stride) + 1
    starts = [i * stride for i in range(count - 1)]
    starts.append(length - size)
    return starts


def stride_for(size: int, overlap: float) -> int:
    """Stride in pixels for tiles of ``size`` pixels that overlap by the fraction ``overlap``."""
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"Overlap must be at least 0 and below 1 (a fraction of the tile); got {overlap}.")
    return max(1, round(size * (1.0 - overlap)))


def scaled_size(base_size: int, scale: float) -> int:
    """Tile size in source pixels at ``scale`` times the base tile."""
    if scale <= 0:
        raise InputError(f"Scales must be positive multiples of the tile size; got {scale}.")
    return max(1, round(base_size * scale))


def build_grid(width: int, height: int, base_size: int, overlap: float, scales: Sequence[float]) -> list[Tile]:
    """All tiles of a raster of ``width`` x ``height`` pixels, scale by scale, row-major within a scale."""
    if base_size < 1:
        raise InputError(f"Tile size must be at least 1 pixel; got {base_size}.")
    if not scales:
        raise InputError("Give at least one scale (1 is the base tile size).")
    tiles: list[Tile] = []
    for scale_index, scale in enumerate(scales):
        size = scaled_size(base_size, scale)
        stride = stride_for(size, overlap)
        cols = tile_starts(width, size, stride)
        rows = tile_starts(height, size, stride)
        tile_w = min(size, width)
        tile_h = min(size, height)
        tiles.extend(Tile(Window(col, row, tile_w, tile_h), scale_index) for row in rows for col in cols)
    return tiles


def ground_size_to_pixels(size_m: float, pixel_size_m: float) -> int:
    """A tile's ground size in metres as a whole number of pixels (at least 1)."""
    if size_m <= 0:
        raise InputError(f"Tile ground size must be positive; got {size_m} m.")
    if pixel_size_m <= 0:
        raise InputError("The raster's pixel size is zero; it has no usable georeference.")
    return max(1, round(size_m / pixel_size_m))
