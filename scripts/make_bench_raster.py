"""Build a large, realistic benchmark GeoTIFF by mosaicking real aerial scene photos.

Usage::

    python scripts/make_bench_raster.py OUT.tif --size 4096 [--scenes DIR] [--seed 0]
    python scripts/make_bench_raster.py OUT.tif --width 6000 --height 3000

The scene photos (``<class>_<nn>.jpg``, 600 x 600 px, default folder ``../shared/data/aerial_scenes``
relative to the repository) are placed on a grid of 600 px cells in a seeded random order (every photo
is used once before any repeats), cropped at the right and bottom edges. The result is an RGB uint8
GeoTIFF in EPSG:32633 with 0.3 m pixels, tiled 256 x 256, JPEG (quality 90, YCbCr), with average
overviews 2, 4, 8, 16. It is written in bands of whole tile rows, so memory stays small however large
the raster is (one band of rows plus one row of decoded scenes).

Beside it, ``OUT.labels.geojson`` holds one polygon per placed scene (its part inside the raster) in the
raster's CRS, with properties ``class``, ``scene`` (the file name), ``col`` and ``row`` (its cell).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENES = REPO.parent / "shared" / "data" / "aerial_scenes"
CELL = 600
BLOCK = 256
ROWS_PER_WRITE = 2 * BLOCK
PIXEL_M = 0.3
CRS = "EPSG:32633"
ORIGIN = (600_000.0, 5_340_000.0)  # UTM 33N, near Vienna: upper-left corner (x, y)
OVERVIEWS = (2, 4, 8, 16)


@dataclass(frozen=True)
class Placement:
    """One scene photo placed in grid cell (col, row)."""

    path: Path
    col: int
    row: int

    @property
    def label(self) -> str:
        return self.path.stem.rsplit("_", 1)[0]


def find_scenes(folder: Path) -> list[Path]:
    """The scene photos in ``folder``, sorted by name."""
    return sorted(p for p in folder.glob("*.jpg") if "_" in p.stem)


def plan_placements(scenes: list[Path], cols: int, rows: int, seed: int) -> list[Placement]:
    """Scenes for a ``cols`` x ``rows`` grid, row by row, in seeded random order (reshuffled per cycle)."""
    rng = random.Random(seed)
    order: list[Path] = []
    while len(order) < cols * rows:
        cycle = list(scenes)
        rng.shuffle(cycle)
        order.extend(cycle)
    return [Placement(order[r * cols + c], c, r) for r in range(rows) for c in range(cols)]


def read_scene(path: Path) -> np.ndarray:
    """A scene photo as (3, CELL, CELL) uint8 (grey replicated, other sizes resampled)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            bands = [1, 1, 1] if src.count < 3 else [1, 2, 3]
            data: np.ndarray = src.read(bands, out_shape=(3, CELL, CELL), resampling=Resampling.bilinear)
    return data.astype(np.uint8, copy=False)


def profile_for(width: int, height: int) -> dict[str, Any]:
    """The GeoTIFF creation profile: tiled JPEG/YCbCr RGB, EPSG:32633, 0.3 m pixels."""
    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS,
        "transform": Affine(PIXEL_M, 0.0, ORIGIN[0], 0.0, -PIXEL_M, ORIGIN[1]),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "JPEG",
        "jpeg_quality": 90,
        "photometric": "YCBCR",
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }


def write_mosaic(out: Path, width: int, height: int, placements: list[Placement], cols: int) -> None:
    """Write the mosaic in bands of ``ROWS_PER_WRITE`` rows (whole tile rows), then build overviews."""
    cache: dict[int, list[np.ndarray]] = {}  # cell row -> decoded scenes of that row
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(out, "w", **profile_for(width, height)) as dst:
        for r0 in range(0, height, ROWS_PER_WRITE):
            r1 = min(height, r0 + ROWS_PER_WRITE)
            band = np.zeros((3, r1 - r0, width), dtype=np.uint8)
            for cell_row in range(r0 // CELL, (r1 - 1) // CELL + 1):
                if cell_row not in cache:
                    cache.clear()
                    row_scenes = placements[cell_row * cols : (cell_row + 1) * cols]
                    cache[cell_row] = [read_scene(p.path) for p in row_scenes]
                y0 = max(r0, cell_row * CELL)
                y1 = min(r1, (cell_row + 1) * CELL)
                s0, s1 = y0 - cell_row * CELL, y1 - cell_row * CELL  # rows inside the scenes
                for c, scene in enumerate(cache[cell_row]):
                    x0 = c * CELL
                    x1 = min(width, x0 + CELL)
                    band[:, y0 - r0 : y1 - r0, x0:x1] = scene[:, s0:s1, : x1 - x0]
            dst.write(band, window=Window(0, r0, width, r1 - r0))
            del band
        dst.build_overviews(list(OVERVIEWS), Resampling.average)
        dst.update_tags(ns="rio_overview", resampling="average")


def label_features(placements: list[Placement], width: int, height: int) -> dict[str, Any]:
    """GeoJSON FeatureCollection: each placed scene's footprint (inside the raster) in the raster CRS."""
    transform = profile_for(width, height)["transform"]
    features = []
    for p in placements:
        c0, r0 = p.col * CELL, p.row * CELL
        c1, r1 = min(width, c0 + CELL), min(height, r0 + CELL)
        corners = [transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))]
        ring = [[round(x, 3), round(y, 3)] for x, y in corners[::-1]]  # counter-clockwise (RFC 7946)
        features.append(
            {
                "type": "Feature",
                "properties": {"class": p.label, "scene": p.path.name, "col": p.col, "row": p.row},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return {
        "type": "FeatureCollection",
        "name": "scene_labels",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": features,
    }


def labels_path(out: Path) -> Path:
    """``OUT.labels.geojson`` beside ``OUT.tif``."""
    return out.with_suffix(".labels.geojson")


def make_bench_raster(out: Path, width: int, height: int, scenes_dir: Path, seed: int = 0) -> Path:
    """Write the mosaic GeoTIFF at ``out`` and its labels beside it; returns the labels path."""
    scenes = find_scenes(scenes_dir)
    if not scenes:
        raise FileNotFoundError(f"No scene photos (<class>_<nn>.jpg) in {scenes_dir}.")
    cols, rows = math.ceil(width / CELL), math.ceil(height / CELL)
    placements = plan_placements(scenes, cols, rows, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mosaic(out, width, height, placements, cols)
    labels = labels_path(out)
    labels.write_text(json.dumps(label_features(placements, width, height)))
    return labels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="output GeoTIFF path")
    parser.add_argument("--size", type=int, default=4096, help="width and height in pixels (default 4096)")
    parser.add_argument("--width", type=int, default=None, help="width in pixels (overrides --size)")
    parser.add_argument("--height", type=int, default=None, help="height in pixels (overrides --size)")
    parser.add_argument("--scenes", type=Path, default=DEFAULT_SCENES, help="scene photo folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scene order (default 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    width = args.width if args.width is not None else args.size
    height = args.height if args.height is not None else args.size
    if width < 1 or height < 1:
        print(f"error: width and height must be positive; got {width} x {height}", file=sys.stderr)
        return 2
    if not args.scenes.is_dir():
        print(
            f"error: scene folder not found: {args.scenes}\n"
            "It holds the real aerial scene photos (../shared/data/aerial_scenes beside the repository); "
            "pass another folder of <class>_<nn>.jpg photos with --scenes.",
            file=sys.stderr,
        )
        return 2
    try:
        labels = make_bench_raster(args.out, width, height, args.scenes, args.seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({width} x {height} px, {CRS}, {PIXEL_M} m) and {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
