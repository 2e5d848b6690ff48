"""The compact index (IVF-PQ candidates re-scored on memory-mapped float16 vectors) at millions of tiles:
build time, file sizes, recall@k against exact search, search latency and the memory of a process that searches.

Usage::

    python scripts/bench_compact.py [--tiles 1000000] [--dim 512] [--block 100000] [--queries 100] [--top-k 20]
        [--folder DIR] [--keep] [--json OUT.json]

The vectors are drawn, block by block, around 256 random centres as in ``scripts/bench_query.py`` (so that they
cluster the way image embeddings do) and streamed into the compact index: no more than one block is ever in
memory, and the float16 file is written as they come. The cells and codebooks are trained on a sample drawn
from the same distribution (the engine trains on rows spread over the index). The index is stored with
``store.write_index`` as the engine stores one, with a synthetic 224 px / 50% overlap tile table.

Queries: half are text-like (a centre mixed with a direction common to all queries, cosine ~0.3 to the nearest
tiles, as CLIP text vectors lie apart from image vectors), half are stored vectors (search by example); none of
them is among the 80 the probe count was calibrated on. Their true top-k is found by brute force over the float16
file, block by block. A fresh process then opens the index (``open_index``, checksums included) and searches each
query through the engine's own ``top_hits``; it reports p50/p95 of the search and its peak resident memory
(VmHWM: the pages of the memory-mapped files it touched count too).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clip_search_plugin.engine.embedding.embedder import normalise_rows  # noqa: E402
from clip_search_plugin.engine.index import compact  # noqa: E402

CENTRES = 256
NOISE = 0.6  # norm of a vector's offset from its centre, as in scripts/bench_query.py


def centres_of(dim: int, seed: int) -> np.ndarray:
    return normalise_rows(np.random.default_rng(seed).normal(size=(CENTRES, dim)).astype(np.float32))


def clustered_block(centres: np.ndarray, n: int, seed: int, number: int) -> np.ndarray:
    """Block ``number`` of the clustered vectors: the same for the same seed, without drawing the others."""
    rng = np.random.default_rng([seed, number])
    dim = centres.shape[1]
    noise = rng.normal(scale=NOISE / np.sqrt(dim), size=(n, dim)).astype(np.float32)
    return normalise_rows(centres[rng.integers(0, CENTRES, size=n)] + noise)


def blocks_of(centres: np.ndarray, total: int, block: int, seed: int) -> Iterator[np.ndarray]:
    for number, start in enumerate(range(0, total, block)):
        yield clustered_block(centres, min(block, total - start), seed, number)


def text_like(centres: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries offset from the data: a centre mixed with one direction shared by all (a modality gap)."""
    rng = np.random.default_rng([seed, 7])
    dim = centres.shape[1]
    gap = normalise_rows(np.random.default_rng([seed, 8]).normal(size=(1, dim)).astype(np.float32))
    noise = rng.normal(scale=0.5 / np.sqrt(dim), size=(n, dim)).astype(np.float32)
    return normalise_rows(0.35 * centres[rng.integers(0, CENTRES, size=n)] + 0.9 * gap + noise)


def synthetic_manifest(n: int, dim: int, settings: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """A manifest and tile table as build_index writes them, for a raster with a 224 px / 50% overlap grid."""
    from bench_query import UTM_33N

    from clip_search_plugin.engine.settings import TilingSettings
    from clip_search_plugin.engine.tiling.raster_io import RasterInfo

    per_row = int(np.ceil(np.sqrt(n)))
    ids = np.arange(n, dtype=np.int64)
    tiles = np.stack([(ids % per_row) * 112, (ids // per_row) * 112, np.full(n, 224), np.full(n, 224),
                      np.zeros(n, dtype=np.int64)], axis=1).astype(np.int32)
    side = per_row * 112 + 112
    raster = RasterInfo(path="synthetic.tif", width=side, height=side, count=3, dtype="uint8", crs_wkt=UTM_33N,
                        is_geographic=False, linear_units_factor=1.0,
                        transform=(0.3, 0.0, 500000.0, 0.0, -0.3, 4000000.0), georeferenced=True, bands=(1, 2, 3),
                        stretch=None, fingerprint="0123456789abcdef")
    manifest = {"raster": raster.to_dict(), "model": {"arch": "synthetic", "weights": "synthetic",
                                                      "random_weights": False},
                "dim": dim, "tiling": TilingSettings().to_dict(), "base_tile_px": 224, "tile_count": n,
                "grid_count": n, "search": settings}
    return manifest, tiles


def build(args: argparse.Namespace, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Stream the vectors into a compact index, calibrate it, store it; the time of each step."""
    from clip_search_plugin.engine.index.store import write_index

    centres = centres_of(args.dim, args.seed)
    t0 = time.perf_counter()
    sample = np.concatenate(list(blocks_of(centres, compact.train_size(args.tiles), args.block, args.seed + 1)))
    structure = {"m": args.m} if args.m else {}
    index = compact.build_compact(sample, blocks_of(centres, args.tiles, args.block, args.seed), args.tiles,
                                  folder, **structure)
    t1 = time.perf_counter()
    settings = compact.calibrate(index, text_like(centres, 30, args.seed + 2))
    t2 = time.perf_counter()
    manifest, tiles = synthetic_manifest(args.tiles, args.dim, settings)
    path = write_index(folder / "index", manifest, index, tiles)
    t3 = time.perf_counter()
    sizes = {p.name: p.stat().st_size for p in path.iterdir()}
    print(f"built {args.tiles:,} tiles: stream {t1 - t0:.0f} s, calibrate {t2 - t1:.0f} s, store {t3 - t2:.0f} s; "
          f"{settings}; files {sizes}", flush=True)
    return path, {"build_stream_s": round(t1 - t0, 1), "calibrate_s": round(t2 - t1, 1), "store_s": round(t3 - t2, 1),
                  "build_total_s": round(t3 - t0, 1), "search": settings, "file_bytes": sizes,
                  "build_peak_rss_mib": round(peak_rss_mib(), 1)}


def status_mib(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM; getrusage where there is no /proc), in MiB."""
    return status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def search_only(folder: Path, queries_file: Path, out: Path, top_k: int) -> None:
    """In a fresh process: open the index and search each query through the engine's search path."""
    from clip_search_plugin.engine.index.store import open_index
    from clip_search_plugin.engine.query.vectors import top_hits

    started = time.perf_counter()
    index = open_index(folder)
    open_s = time.perf_counter() - started
    queries = np.load(queries_file, allow_pickle=False)
    top_hits(index.vectors, queries[0], top_k)  # warm-up
    times, found = [], []
    for query in queries:
        t = time.perf_counter()
        hits = top_hits(index.vectors, query, top_k)
        times.append((time.perf_counter() - t) * 1000)
        found.append([i for i, _ in hits] + [-1] * (top_k - len(hits)))
    # resident now, split: private memory, and pages of the mapped files (the kernel may drop those at any time)
    split = {"rss_anon_mib": status_mib("RssAnon"), "rss_file_mib": status_mib("RssFile")}
    out.write_text(json.dumps({"open_s": open_s, "ms": times, "found": found, "peak_rss_mib": peak_rss_mib(), **split}))


def measure(args: argparse.Namespace, path: Path, folder: Path) -> dict[str, Any]:
    """Recall@k of fresh queries against brute force, and the fresh process's latency and memory."""
    from clip_search_plugin.engine.index.store import open_index

    centres = centres_of(args.dim, args.seed)
    stored = open_index(path, verify=False).vectors
    rng = np.random.default_rng([args.seed, 9])
    half = args.queries // 2
    queries = {"text": text_like(centres, args.queries - half, args.seed + 3),
               "image": stored.reconstruct_batch(rng.choice(args.tiles, size=half, replace=False))}
    started = time.perf_counter()
    truths = {kind: compact.exact_top(stored, q, args.top_k) for kind, q in queries.items()}
    truth_s = time.perf_counter() - started
    everything = np.concatenate(list(queries.values()))
    np.save(folder / "queries.npy", everything)
    report = folder / "search.json"
    subprocess.run([sys.executable, __file__, "--search-only", str(path), str(folder / "queries.npy"), str(report),
                    "--top-k", str(args.top_k)], check=True)
    searched = json.loads(report.read_text())
    found = np.array(searched["found"])
    text_n = len(queries["text"])
    return {"recall_text": round(compact.recall(found[:text_n], truths["text"]), 4),
            "recall_image": round(compact.recall(found[text_n:], truths["image"]), 4),
            "search_p50_ms": round(float(np.percentile(searched["ms"], 50)), 2),
            "search_p95_ms": round(float(np.percentile(searched["ms"], 95)), 2),
            "open_s": round(searched["open_s"], 2), "search_peak_rss_mib": round(searched["peak_rss_mib"], 1),
            "search_rss_anon_mib": searched["rss_anon_mib"], "search_rss_file_mib": searched["rss_file_mib"],
            "brute_force_truth_s": round(truth_s, 1)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tiles", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--block", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100, help="half text-like, half stored vectors")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--m", type=int, default=0,
                        help=f"code bytes a vector (default: dim / {compact.DIMS_PER_CODE})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, help="where the index is built (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the index built in --folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--search-only", nargs=3, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.search_only:
        search_only(*args.search_only, args.top_k)
        return 0
    import faiss

    with tempfile.TemporaryDirectory(dir=args.folder, prefix="bench-compact-") as scratch:
        folder = Path(scratch)
        path, built = build(args, folder)
        row = {"tiles": args.tiles, "dim": args.dim, "top_k": args.top_k, "queries": args.queries, **built,
               **measure(args, path, folder)}
        if args.keep and args.folder:
            path.rename(args.folder / f"compact-{args.tiles}")
    print(f"{args.tiles:,} tiles: recall@{args.top_k} text {row['recall_text']:.4f}, image {row['recall_image']:.4f}; "
          f"search p50 {row['search_p50_ms']:.1f} ms, p95 {row['search_p95_ms']:.1f} ms; peak RSS while searching "
          f"{row['search_peak_rss_mib']:.0f} MiB; build {row['build_total_s']:.0f} s", flush=True)
    if args.json:
        report = {"machine": {"cpu": platform.machine(), "python": platform.python_version(),
                              "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()},
                  "rows": [row]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
