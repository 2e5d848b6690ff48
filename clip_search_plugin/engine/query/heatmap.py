"""Score heatmap: a raster of the best tile score per location for one query vector.

Every tile of the index is scored (in blocks, so memory stays bounded), and each cell of a grid over the
raster keeps the best score of the tiles that cover it. Band 1 is the relative score (standard
deviations above the index's mean for the query: the same scale for every query), band 2 the cosine
score; cells no tile covers are NaN. The cell is about a quarter of the smallest tile, so neighbouring
overlapping tiles still show as distinct steps, and the grid covers exactly the raster.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from affine import Affine

from ..errors import InputError
from ..index.neighbours import smoothed_all
from ..index.store import OpenIndex

SCORE_BLOCK = 65_536
CELLS_PER_TILE = 4
MAX_CELLS = 64_000_000  # 256 MB per float32 band: far beyond any screen, refuse rather than exhaust memory


def tile_scores(index: OpenIndex, vector: np.ndarray) -> np.ndarray:
    """Cosine score of every tile of ``index`` for the unit ``vector``, computed block by block."""
    query = vector.astype(np.float32)
    scores = np.empty(index.count, dtype=np.float32)
    for start in range(0, index.count, SCORE_BLOCK):
        n = min(SCORE_BLOCK, index.count - start)
        scores[start : start + n] = index.vectors.reconstruct_n(start, n) @ query
    return scores


def cell_size(index: OpenIndex) -> int:
    """Heatmap cell edge in raster pixels: a quarter of the smallest tile, at least one pixel."""
    smallest = int(index.tiles[:, 2:4].min()) if index.count else 1
    return max(1, smallest // CELLS_PER_TILE)


def grid_shape(index: OpenIndex, cell: int) -> tuple[int, int, float, float]:
    """(rows, cols, cell height, cell width) of a heatmap grid covering the raster exactly.

    The cells are ``cell`` pixels or a little less, so that the grid ends on the raster's right and bottom
    edges instead of running past them (a raster of 686 px and cells of 56 px gets 13 cells of 52.8 px).
    """
    rows = -(-index.raster.height // cell)
    cols = -(-index.raster.width // cell)
    if rows * cols > MAX_CELLS:
        raise InputError(
            f"A heatmap of this index would have {rows * cols:,} cells; index with larger tiles or "
            "search a smaller area."
        )
    return rows, cols, index.raster.height / rows, index.raster.width / cols


def best_score_grid(index: OpenIndex, scores: np.ndarray, cell: int) -> np.ndarray:
    """(rows, cols) float32 grid: the best score of the tiles covering each cell; NaN where none does."""
    rows, cols, cell_h, cell_w = grid_shape(index, cell)
    grid = np.full((rows, cols), -np.inf, dtype=np.float32)
    tiles = index.tiles.astype(np.int64)
    c0 = np.clip(np.floor(tiles[:, 0] / cell_w), 0, cols - 1).astype(np.int64)
    r0 = np.clip(np.floor(tiles[:, 1] / cell_h), 0, rows - 1).astype(np.int64)
    c1 = np.clip(np.ceil((tiles[:, 0] + tiles[:, 2]) / cell_w) - 1, 0, cols - 1).astype(np.int64)
    r1 = np.clip(np.ceil((tiles[:, 1] + tiles[:, 3]) / cell_h) - 1, 0, rows - 1).astype(np.int64)
    spans = np.stack([c1 - c0 + 1, r1 - r0 + 1], axis=1)
    # Tiles of one size cover the same number of cells: handle each size with one vectorised pass per offset.
    for span_c, span_r in np.unique(spans, axis=0):
        chosen = np.flatnonzero((spans[:, 0] == span_c) & (spans[:, 1] == span_r))
        rr, cc, ss = r0[chosen], c0[chosen], scores[chosen]
        for dr in range(int(span_r)):
            for dc in range(int(span_c)):
                np.maximum.at(grid, (rr + dr, cc + dc), ss)
    grid[np.isneginf(grid)] = np.nan
    return grid


def write_heatmap(index: OpenIndex, vector: np.ndarray, path: str | os.PathLike[str], mean: float, std: float,
                  rerank: bool = False) -> str:
    """Write the heatmap of ``vector`` over ``index`` as a two-band float32 GeoTIFF at ``path``.

    The file is written beside its target under a temporary name and renamed into place, so a reader
    never sees half a heatmap and an earlier file at ``path`` survives a failure.
    """
    import rasterio
    from rasterio.crs import CRS

    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"The heatmap is written as a GeoTIFF; give a .tif path, not {target.name}.")
    if not target.parent.is_dir():
        raise InputError(f"The folder {target.parent} does not exist; create it or choose another heatmap path.")
    cell = cell_size(index)
    scores = tile_scores(index, vector)
    if rerank:  # the scores the search ranks by: each tile's with its look-alikes' (see .neighbours)
        scores = smoothed_all(scores, index.look_alikes())
    cosine = best_score_grid(index, scores, cell)
    relative = (cosine - mean) / std
    info = index.raster
    rows, cols = cosine.shape  # cells of the raster's size over their number: the grid ends on its edges
    transform = info.affine @ Affine.scale(info.width / cols, info.height / rows)
    crs = CRS.from_wkt(info.crs_wkt) if info.crs_wkt else None
    fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tif")
    os.close(fd)
    try:
        with rasterio.open(
            scratch, "w", driver="GTiff", width=cosine.shape[1], height=cosine.shape[0], count=2,
            dtype="float32", transform=transform, crs=crs, nodata=float("nan"), compress="deflate",
            tiled=cosine.shape[0] >= 256 and cosine.shape[1] >= 256,
        ) as dst:
            dst.write(relative.astype(np.float32), 1)
            dst.write(cosine, 2)
            dst.set_band_description(1, "relative score (standard deviations above the index mean)")
            dst.set_band_description(2, "cosine score, with look-alikes" if rerank else "cosine score")
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return str(target)
