"""Throughput of a build on a local Dask cluster, against the single-process build of the same raster.

Usage::

    python scripts/bench_cluster.py [--size 2048] [--raster R.tif] [--model ViT-B-32] [--pretrained none]
        [--workers 1 2] [--tile-size 224] [--overlap 0.5] [--batch-size 0] [--json OUT.json]

On a benchmark raster made by ``make_bench_raster.py`` (real aerial scene photos in a tiled JPEG GeoTIFF, made
once and kept under build/bench) it times, with the model itself (``torch``) on the CPU:

- **single**: ``build_index`` in this process (the model loaded beforehand, as the engine process keeps it);
- **local:N** for each ``--workers`` N: ``build_on_cluster`` on a LocalCluster of N worker processes started for
  the build, so the figure includes starting the workers, loading the model in each and closing them;

and reports tiles per second of each, and of each cluster build against the single-process one. The indexes are
compared: the same tiles in the same order, and the largest difference of a vector.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_index import bench_raster, machine  # noqa: E402

from clip_search_plugin.engine.building.build import build_index, open_index  # noqa: E402
from clip_search_plugin.engine.building.distributed import build_on_cluster  # noqa: E402
from clip_search_plugin.engine.embedding.embedder import load_embedder  # noqa: E402
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings  # noqa: E402


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=2048, help="benchmark raster width and height in px")
    parser.add_argument("--raster", type=Path, help="use this raster instead of a benchmark raster")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="weights tag or file; none: random weights")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local cluster sizes to time")
    parser.add_argument("--tile-size", type=float, default=224)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=0, help="0: the engine's default for the CPU")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def agreement(built: Path, reference: Path) -> dict[str, Any]:
    """How a cluster's index agrees with the single-process one."""
    a, b = open_index(built), open_index(reference)
    same = a.count == b.count and bool(np.array_equal(a.tiles, b.tiles))
    gap = float(np.abs(a.vectors.reconstruct_n(0, a.count) - b.vectors.reconstruct_n(0, b.count)).max()) \
        if same else None
    return {"same_tiles": same, "max_vector_difference": gap}


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    raster = args.raster or bench_raster(args.size)
    spec = ModelSpec(args.model, args.pretrained)
    embedder = load_embedder(spec, "cpu")
    settings = IndexSettings(tiling=TilingSettings(tile_size=args.tile_size, overlap=args.overlap), model=spec,
                             device="cpu", batch_size=args.batch_size or embedder.default_batch_size(),
                             backend="torch")
    print(f"raster {raster} | {embedder.identity.label()} on cpu | batch {settings.batch_size}", flush=True)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        reference = Path(out) / "single"
        result = build_index(raster, settings, reference, embedder=embedder)
        rows["single"] = {"seconds": round(result.seconds, 2), "tiles_s": round(result.tile_count / result.seconds, 2)}
        print(f"single: {rows['single']['tiles_s']} tiles/s ({result.tile_count} tiles)", flush=True)
        for workers in args.workers:
            target = Path(out) / f"local-{workers}"
            started = time.perf_counter()
            build_on_cluster(raster, settings, target, embedder=embedder, cluster=f"local:{workers}")
            seconds = time.perf_counter() - started  # with starting and closing the cluster
            rows[f"local:{workers}"] = {"seconds": round(seconds, 2), "tiles_s": round(result.tile_count / seconds, 2),
                                        "over_single": round(result.seconds / seconds, 3),
                                        **agreement(target, reference)}
            print(f"local:{workers}: {rows[f'local:{workers}']}", flush=True)
    found = {"machine": machine(), "raster": raster.name, "model": embedder.identity.label(),
             "batch_size": settings.batch_size, "tile_px": args.tile_size, "overlap": args.overlap,
             "tiles": result.tile_count, "builds": rows}
    print(json.dumps(found["builds"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
