"""Indexing an XYZ layer served on localhost: end-to-end against the model alone, requests per tile, and the
second build's cache hits.

Usage::

    python scripts/bench_web.py [--size 2048] [--model ViT-B-32] [--pretrained none] [--device auto]
        [--format jpeg] [--delay 0] [--json OUT.json]

The benchmark raster of ``bench_index.py`` (real aerial scene photos, made once under build/bench) is cut into
Web-Mercator JPEG tiles at the zoom nearest its pixel size and served by the test suite's tile server on
127.0.0.1 (``--delay`` adds a fixed wait per request, as a distant server would). Then, with one model loaded
once:

- **first build** of the layer over the raster's footprint (`build_index`, the same code as the dock and the
  command line): tiles/s end to end, server requests, requests per index tile, bytes downloaded;
- **model-only**: the model alone on batches already at its size (bench_index's ceiling);
- **second build** of the same layer and area into another folder: its server requests (the cache's hits are
  the first build's requests less these) and its time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_index import bench_raster, machine, model_only, report  # noqa: E402

from clip_search_plugin.engine.building.build import build_index  # noqa: E402
from clip_search_plugin.engine.embedding.embedder import load_embedder  # noqa: E402
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings  # noqa: E402
from tests.servers.http import TileServer  # noqa: E402
from tests.servers.imagery import make_xyz_tiles, zoom_for  # noqa: E402


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=2048, help="benchmark raster width and height in px")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="weights tag or file; none: random weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="the served tiles' format")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the server waits before each answer")
    parser.add_argument("--model-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    raster = bench_raster(args.size)
    spec = ModelSpec(args.model, args.pretrained)
    embedder = load_embedder(spec, args.device)
    batch_size = args.batch_size or embedder.default_batch_size()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        zoom = zoom_for(raster)
        tiles = make_xyz_tiles(raster, folder / "tiles", zoom, args.format)
        os.environ["CLIP_SEARCH_WEB_CACHE"] = str(folder / "web-cache")
        tiling = TilingSettings(tile_size=224, overlap=0.5, area=tiles.footprint_3857)
        settings = IndexSettings(tiling=tiling, model=spec, device=embedder.device, batch_size=batch_size)
        print(f"{tiles.written} {args.format} tiles at zoom {zoom} | {embedder.identity.label()} on "
              f"{embedder.device} | batch {batch_size}", flush=True)
        ceiling = model_only(embedder, batch_size, args.model_seconds)
        with TileServer(folder / "tiles", ext=args.format) as server:
            server.delay_s = args.delay
            first = build_index(server_source(server, zoom), settings, folder / "one", embedder=embedder)
            requests, sent = server.count("/tiles/"), server.bytes_sent("/tiles/")
            server.clear_log()
            started = time.perf_counter()
            second = build_index(server_source(server, zoom), settings, folder / "two", embedder=embedder)
            again_s, again = time.perf_counter() - started, server.count("/tiles/")
    found: dict[str, Any] = {
        "machine": machine(), "raster_px": [args.size, args.size], "zoom": zoom, "format": args.format,
        "served_tiles": tiles.written, "server_delay_s": args.delay, "model": embedder.identity.label(),
        "device": embedder.device, "batch_size": batch_size, "index_tiles": first.tile_count,
        "end_to_end_tiles_s": round(first.tile_count / first.seconds, 1), "model_only_tiles_s": round(ceiling, 1),
        "end_to_end_over_model_only": round(first.tile_count / first.seconds / ceiling, 3),
        "first_build_s": round(first.seconds, 1), "requests": requests,
        "requests_per_index_tile": round(requests / first.tile_count, 3), "downloaded_mib": round(sent / 2**20, 1),
        "second_build_s": round(again_s, 1), "second_build_requests": again,
        "second_build_cache_hits": requests - again, "second_build_tiles": second.tile_count,
    }
    report(found, args.json)
    return 0


def server_source(server: TileServer, zoom: int) -> str:
    """QGIS's data source of the served layer, its top zoom the one the tiles were cut at."""
    return f"type=xyz&url={server.url_template}&zmax={zoom}&zmin=0"


if __name__ == "__main__":
    sys.exit(main())
