"""Build a labelled benchmark raster: scene photos placed on a georeferenced canvas, labels beside it.

Usage::

    python scripts/make_labeled_mosaic.py OUT.tif [--classes pond,park,...] [--per-class 3]
        [--scales 0.5 1 1.5] [--gap 120] [--width 4000] [--scenes DIR] [--seed 0]

Each chosen scene photo (``<class>_<nn>.jpg``, default folder ``../shared/data/aerial_scenes``) is
resized by one of ``--scales`` (taken in turn, so one class appears at several sizes: small and large
things in one raster) and placed on a plain ground-coloured canvas with ``--gap`` pixels between photos,
row by row up to ``--width`` pixels. The raster is RGB uint8 in EPSG:32633 with 0.3 m pixels, tiled and
deflate-compressed. Beside it, ``OUT.labels.geojson`` holds one polygon per photo in the raster's CRS
with the properties ``class`` (the readable class name from ``classes.txt``, e.g. "football field", which
is also the default query), ``scene`` and ``scale``. ``scripts/evaluate.py`` scores searches against it.
"""

from __future__ import annotations

import argparse
import json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bench_raster import CRS, DEFAULT_SCENES, ORIGIN, PIXEL_M, find_scenes

GROUND = (118, 116, 104)  # a dull earth colour, with some noise


@dataclass(frozen=True)
class Placed:
    scene: Path
    label: str
    scale: float
    x: int  # column of the upper-left pixel
    y: int  # row of the upper-left pixel
    size: int  # pixels (square)


def class_names(scenes_dir: Path) -> dict[str, str]:
    """File-name prefix -> readable class name (``footballfield`` -> ``football field``)."""
    readable = (scenes_dir / "classes.txt").read_text().split("\n") if (scenes_dir / "classes.txt").exists() else []
    names = {name.replace(" ", ""): name for name in (r.strip() for r in readable) if name}
    return names


def choose_scenes(scenes_dir: Path, classes: list[str] | None, per_class: int, seed: int) -> list[tuple[Path, str]]:
    names = class_names(scenes_dir)
    by_class: dict[str, list[Path]] = {}
    for path in find_scenes(scenes_dir):
        prefix = path.stem.rsplit("_", 1)[0]
        by_class.setdefault(names.get(prefix, prefix), []).append(path)
    wanted = classes or sorted(by_class)
    unknown = [c for c in wanted if c not in by_class]
    if unknown:
        raise SystemExit(f"error: no scenes of class {', '.join(unknown)} in {scenes_dir}; "
                         f"classes there: {', '.join(sorted(by_class))}")
    rng = random.Random(seed)
    chosen = []
    for name in wanted:
        paths = list(by_class[name])
        rng.shuffle(paths)
        chosen.extend((p, name) for p in paths[:per_class])
    rng.shuffle(chosen)
    return chosen


def lay_out(chosen: list[tuple[Path, str]], scales: list[float], gap: int, width: int) -> tuple[list[Placed], int]:
    """Shelf layout, row by row; returns the placements and the canvas height."""
    placed, x, y, row_height = [], gap, gap, 0
    for i, (path, label) in enumerate(chosen):
        scale = scales[i % len(scales)]
        size = max(16, round(600 * scale))
        if x + size + gap > width and x > gap:
            x, y, row_height = gap, y + row_height + gap, 0
        placed.append(Placed(path, label, scale, x, y, size))
        x += size + gap
        row_height = max(row_height, size)
    return placed, y + row_height + gap


def read_scene_at(path: Path, size: int) -> np.ndarray:
    """A scene photo as (3, size, size) uint8, averaged down (or interpolated up) from its pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            bands = [1, 1, 1] if src.count < 3 else [1, 2, 3]
            shrink = size < min(src.width, src.height)
            data: np.ndarray = src.read(bands, out_shape=(3, size, size),
                                        resampling=Resampling.average if shrink else Resampling.bilinear)
    return data.astype(np.uint8, copy=False)


def make_labeled_mosaic(
    out: Path, scenes_dir: Path = DEFAULT_SCENES, classes: list[str] | None = None, per_class: int = 3,
    scales: list[float] | None = None, gap: int = 120, width: int = 4000, seed: int = 0,
) -> Path:
    """Write the raster at ``out`` and its labels beside it; returns the labels path."""
    if not scenes_dir.is_dir():
        raise SystemExit(f"error: scene photos not found at {scenes_dir}; give --scenes DIR")
    placed, height = lay_out(choose_scenes(scenes_dir, classes, per_class, seed), scales or [1.0], gap, width)
    width = max(p.x + p.size for p in placed) + gap
    rng = np.random.default_rng(seed)
    canvas = (np.array(GROUND, dtype=np.int16)[:, None, None] + rng.integers(-10, 11, size=(3, height, width)))
    canvas = canvas.clip(0, 255).astype(np.uint8)
    for p in placed:
        canvas[:, p.y:p.y + p.size, p.x:p.x + p.size] = read_scene_at(p.scene, p.size)
    transform = Affine(PIXEL_M, 0.0, ORIGIN[0], 0.0, -PIXEL_M, ORIGIN[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=CRS,
                       transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(canvas)
    features: list[dict[str, Any]] = []
    for p in placed:
        x0, y0 = transform @ (p.x, p.y)
        x1, y1 = transform @ (p.x + p.size, p.y + p.size)
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"class": p.label, "scene": p.scene.name, "scale": p.scale}})
    labels = out.with_suffix(".labels.geojson")
    labels.write_text(json.dumps({"type": "FeatureCollection", "name": "labels",
                                  "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                                  "features": features}))
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scenes", type=Path, default=DEFAULT_SCENES)
    parser.add_argument("--classes", help="comma-separated readable class names (default: all)")
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--gap", type=int, default=120)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    labels = make_labeled_mosaic(args.out, args.scenes, classes, args.per_class, args.scales, args.gap,
                                 args.width, args.seed)
    with rasterio.open(args.out) as ds:
        print(f"wrote {args.out} ({ds.width} x {ds.height} px, {CRS}, {PIXEL_M} m) and {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
