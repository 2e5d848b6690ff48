"""Indexing throughput: end-to-end build_index against the model alone (ceiling) and a naive loop (floor).

Usage::

    python scripts/bench_index.py [--size 2048] [--model ViT-B-32] [--pretrained none] [--device auto]
        [--batch-size 0] [--tile-size 224] [--overlap 0.5] [--naive-tiles 128] [--json OUT.json]

On a benchmark raster made by ``make_bench_raster.py`` (real aerial scene photos in a tiled JPEG GeoTIFF
with overviews; made once and kept under build/bench) it measures, with one model loaded once:

- **end-to-end**: the real ``build_index`` (reading, cutting, resizing, embedding, writing the index) with the
  model itself (``torch``, like the ceiling and the floor), tiles per second over the whole build;
- **model-only**: the same model, batch size, precision and device on input tensors already on the
  device and already at the model's size (``encode_image`` alone): the ceiling;
- **naive**: each tile read on its own with rasterio at full resolution, converted with PIL and
  open_clip's own preprocessing on the CPU, batched, and embedded by the same model: the floor that
  tools reading tile by tile get;
- peak resident memory of the process and, on CUDA, peak GPU memory;
- **backends** (``--backends torch auto``): whole builds of the same raster with each backend in turn, ``--rounds``
  times (a first ``auto`` build, which exports and verifies the model, is timed apart), the ratio of each pair, and
  how the vectors of the whole index agree with the model's own (lowest cosine, same top 10 for 30 queries), and,
  where a build verified a fast text tower, a query's text encoded with it and with the model.

Prints a table and the ratios end-to-end / model-only and end-to-end / naive; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from clip_search_plugin.engine.building.build import IndexResult, build_index, plan_tiles  # noqa: E402
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder, load_embedder  # noqa: E402
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings  # noqa: E402
from clip_search_plugin.engine.tiling.raster_io import describe_raster  # noqa: E402

BENCH_DIR = REPO / "build" / "bench"


def bench_raster(size: int) -> Path:
    """The benchmark raster of ``size`` x ``size`` pixels, made once."""
    from make_bench_raster import DEFAULT_SCENES, make_bench_raster

    path = BENCH_DIR / f"bench_{size}.tif"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        make_bench_raster(path, size, size, DEFAULT_SCENES)
    return path


def synchronize(embedder: ClipEmbedder) -> None:
    import torch

    if embedder.device.startswith("cuda"):
        torch.cuda.synchronize()


def model_only(embedder: ClipEmbedder, batch_size: int, seconds: float) -> float:
    """Tiles/s of ``encode_image`` on batches already on the device at the model's size and precision."""
    import torch

    size = embedder.input_size
    x = torch.rand(batch_size, 3, size, size, device=embedder.device).to(embedder.dtype)
    with torch.inference_mode():
        embedder.model.encode_image(x)  # warm-up
        synchronize(embedder)
        started, batches = time.perf_counter(), 0
        while batches < 2 or time.perf_counter() - started < seconds:
            embedder.model.encode_image(x)
            batches += 1
        synchronize(embedder)
    return batches * batch_size / (time.perf_counter() - started)


def naive(embedder: ClipEmbedder, raster: Path, tiling: TilingSettings, batch_size: int, limit: int) -> float:
    """Tiles/s of the tile-by-tile loop: a rasterio read per tile, PIL and open_clip preprocessing on the CPU."""
    import open_clip
    import rasterio
    import torch
    from PIL import Image
    from rasterio.windows import Window

    preprocess = open_clip.image_transform(embedder.input_size, is_train=False)
    _, tiles = plan_tiles(describe_raster(str(raster)), tiling)
    tiles = tiles[:limit]
    started = time.perf_counter()
    with rasterio.open(raster) as ds, torch.inference_mode():
        batch: list[Any] = []
        for n, tile in enumerate(tiles):
            w = tile.window
            pixels = ds.read((1, 2, 3), window=Window(w.col_off, w.row_off, w.width, w.height))
            batch.append(preprocess(Image.fromarray(np.moveaxis(pixels, 0, -1))))
            if len(batch) == batch_size or n == len(tiles) - 1:
                x = torch.stack(batch).to(embedder.device).to(embedder.dtype)
                embedder.model.encode_image(x).float().cpu()
                batch = []
        synchronize(embedder)
    return len(tiles) / (time.perf_counter() - started)


def machine() -> dict[str, Any]:
    import faiss
    import open_clip
    import rasterio
    import torch

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "faiss": faiss.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=2048, help="benchmark raster width and height in px")
    parser.add_argument("--raster", type=Path, help="use this raster instead of a benchmark raster")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none", help="weights tag or file; none: random weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the engine's default for the device")
    parser.add_argument("--tile-size", type=float, default=224)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--naive-tiles", type=int, default=128, help="tiles the naive loop embeds")
    parser.add_argument("--model-seconds", type=float, default=20.0, help="how long to time the model alone")
    parser.add_argument("--backends", nargs="*", default=["torch", "auto"],
                        help="backends built in turn, the first the baseline (none: skip)")
    parser.add_argument("--rounds", type=int, default=2, help="paired builds per backend")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    raster = args.raster or bench_raster(args.size)
    spec = ModelSpec(args.model, args.pretrained)
    embedder = load_embedder(spec, args.device)
    batch_size = args.batch_size or embedder.default_batch_size()
    tiling = TilingSettings(tile_size=args.tile_size, overlap=args.overlap)
    print(f"raster {raster} | {embedder.identity.label()} on {embedder.device} | batch {batch_size} | "
          f"{tiling.tile_size:g} px tiles, overlap {tiling.overlap:g}", flush=True)

    ceiling = model_only(embedder, batch_size, args.model_seconds)
    print(f"model only: {ceiling:,.1f} tiles/s", flush=True)
    floor = naive(embedder, raster, tiling, batch_size, args.naive_tiles)
    print(f"naive: {floor:,.1f} tiles/s ({args.naive_tiles} tiles)", flush=True)
    with tempfile.TemporaryDirectory() as out:
        settings = IndexSettings(tiling=tiling, model=spec, device=embedder.device, batch_size=batch_size,
                                 backend="torch")  # the model itself, as the ceiling and the floor
        result = build_index(raster, settings, Path(out) / "index", embedder=embedder)
    end_to_end = result.tile_count / result.seconds
    print(f"end-to-end: {end_to_end:,.1f} tiles/s ({result.tile_count} tiles in {result.seconds:.1f} s)")
    speeds = {"end_to_end": end_to_end, "model_only": ceiling, "naive": floor}
    found = figures(args, raster, embedder, batch_size, result, speeds)
    if len(args.backends) > 1:
        from bench_backends import paired_builds

        found["backends"] = paired_builds(raster, settings, embedder, args.backends, args.rounds)
    report(found, args.json)
    return 0


def figures(args: argparse.Namespace, raster: Path, embedder: ClipEmbedder, batch_size: int, result: IndexResult,
            speeds: dict[str, float]) -> dict[str, Any]:
    """The figures of one run; ``speeds``: tiles/s end to end, of the model only and of the naive loop."""
    end_to_end, ceiling, floor = speeds["end_to_end"], speeds["model_only"], speeds["naive"]
    found: dict[str, Any] = {
        "machine": machine(),
        "raster": str(raster.name),
        "raster_px": list(describe_raster(str(raster)).__dict__[k] for k in ("width", "height")),
        "model": embedder.identity.label(),
        "device": embedder.device,
        "precision": str(embedder.dtype).replace("torch.", ""),
        "batch_size": batch_size,
        "tile_px": args.tile_size,
        "overlap": args.overlap,
        "tiles": result.tile_count,
        "end_to_end_tiles_s": round(end_to_end, 1),
        "model_only_tiles_s": round(ceiling, 1),
        "naive_tiles_s": round(floor, 1),
        "end_to_end_over_model_only": round(end_to_end / ceiling, 3),
        "end_to_end_over_naive": round(end_to_end / floor, 2),
        "build_s": round(result.seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if embedder.device.startswith("cuda"):
        import torch

        found["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return found


def report(found: dict[str, Any], path: Path | None) -> None:
    """The figures as a table on stdout, and as JSON in ``path`` when given."""
    print()
    print("| figure | value |")
    print("|---|---:|")
    for key, value in found.items():
        if key != "machine":
            print(f"| {key} | {value} |")
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
