"""Headless demo: build a sample raster, index it, search it, print ranked regions, write a GeoPackage.

    python scripts/demo.py [--output demo-output] [--model ViT-B-32-openai]

The sample raster is a georeferenced mosaic of real aerial scene photos when the shared test data sits
beside the repository, and a synthetic scene otherwise. When the model's weights cannot be downloaded
(no internet), the demo says so and carries on with random weights, labelled as such everywhere.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import Embedder, load_embedder
from clip_search_plugin.engine.embedding.models import DEFAULT_PRESET, PRESETS
from clip_search_plugin.engine.errors import ClipSearchError, ModelError
from clip_search_plugin.engine.query.export import write_regions
from clip_search_plugin.engine.serve.cli import TerminalProgress
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

SCENES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "aerial_scenes"
QUERIES = ("an airport with runways", "a beach by the sea", "a bridge over a river", "a football field")
SIZE = 1800


def synthetic_scene(path: Path) -> None:
    """A made-up scene (fields, a road, a lake) for machines without the real scene photos."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    data = np.empty((3, SIZE, SIZE), dtype=np.uint8)
    fields = ((xx // 300 + yy // 300) % 3).astype(np.uint8)
    for band, colours in enumerate(((90, 140, 170), (130, 110, 150), (60, 70, 90))):
        data[band] = np.take(np.array(colours, dtype=np.uint8), fields)
    data[:, 880:920, :] = 100  # a road
    lake = (xx - 1300) ** 2 + (yy - 500) ** 2 < 180**2
    data[:, lake] = np.array([40, 70, 120], dtype=np.uint8)[:, None]
    data = np.clip(data.astype(np.int16) + rng.integers(-12, 12, size=data.shape), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(0.3, 0, 600_000, 0, -0.3, 5_340_000),
                       tiled=True, compress="deflate") as dst:
        dst.write(data)


def sample_raster(folder: Path) -> Path:
    path = folder / "sample.tif"
    if path.exists():
        return path
    if SCENES.is_dir():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from make_bench_raster import make_bench_raster

        make_bench_raster(path, SIZE, SIZE, SCENES)
        print(f"sample raster: {path} (mosaic of real aerial scenes, labels beside it)")
    else:
        synthetic_scene(path)
        print(f"sample raster: {path} (synthetic; the real scene photos were not found at {SCENES})")
    return path


def load_model(name: str) -> Embedder:
    try:
        return load_embedder(ModelSpec(name))
    except ModelError as exc:
        arch = PRESETS[name].arch if name in PRESETS else name
        print(f"\nCould not load the weights of {name}: {exc}\n"
              f"Carrying on with {arch} and RANDOM WEIGHTS: the demo shows the whole path, but its "
              "scores and ranks mean nothing.\n")
        return load_embedder(ModelSpec(arch, "none"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    parser.add_argument("--model", default=DEFAULT_PRESET)
    parser.add_argument("--sample-only", action="store_true", help="only build the sample raster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # our own messages say what open_clip would log
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        raster = sample_raster(args.output)
        if args.sample_only:
            return 0
        embedder = load_model(args.model)
        print(f"model: {embedder.identity.label()} on {embedder.device}")
        settings = IndexSettings(tiling=TilingSettings(tile_size=224, overlap=0.5))
        result = build_index(raster, settings, args.output / "index", progress=TerminalProgress(), embedder=embedder)
        print(f"indexed {result.tile_count} tiles in {result.seconds:.1f} s -> {result.path}")
        index = open_index(result.path)
        gpkg = args.output / "results.gpkg"
        for number, query in enumerate(QUERIES):
            found = search(index, embedder, query, top_k=10)
            print(f"\n{query!r}: {len(found.regions)} region(s) in {found.seconds * 1000:.0f} ms")
            for region in found.regions[:5]:
                x0, y0, x1, y1 = region.bounds
                print(f"  {region.rank:>2}. score {region.score:.4f}  {len(region.members)} tile(s)  "
                      f"{region.area:,.0f} m2  ({x0:.1f}, {y0:.1f}) - ({x1:.1f}, {y1:.1f})")
            if number == 0:
                write_regions(gpkg, [r.to_dict() for r in found.regions], query, index.raster.crs_wkt,
                              embedder.identity.random_weights)
        print(f"\nGeoPackage of the first query's regions: {gpkg}")
        if embedder.identity.random_weights:
            print("REMINDER: RANDOM WEIGHTS were used; results are meaningless (and marked so in the file).")
    except ClipSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
