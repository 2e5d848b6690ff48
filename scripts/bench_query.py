"""Query latency: text to regions on indexes of 10,000 to 1,000,000 tiles, split into its parts.

Usage::

    python scripts/bench_query.py [--sizes 10000 100000 1000000] [--model ViT-B-32] [--pretrained none]
        [--device auto] [--queries 30] [--top-k 20] [--json OUT.json]

Each index is built in memory the way ``build_index`` stores one (a Faiss index of unit vectors and the
tile table of a 224 px grid with 50% overlap over a raster big enough for that many tiles), with
vectors drawn around a few hundred random centres so that they cluster the way image embeddings do. A
query goes through the engine's own search path: text encoding through the aerial prompt templates,
the relative-score statistics, the vector search (the top-k places: as many tiles fetched as the k places
need, re-scored with their look-alikes unless ``--no-rerank``), and the regions of those places with their
areas on the ground. The look-alikes of each index are found first, as ``build_index`` does, and that time is
reported beside the time a CPU build of that many tiles takes at ``--build-rate`` tiles/s (the end-to-end
rate of ``scripts/bench_index.py`` on this CPU). Each part is
timed on its own; p50 and p95 over ``--queries`` different queries (after one warm-up; each query new
to the model's text cache) are printed as a table, with the p50 of the same queries asked again (their
text vectors remembered, as for Search again); ``--json`` writes them. On a GPU the vectors are searched
there, as the engine does.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clip_search_plugin.engine.embedding.embedder import Embedder, load_embedder, normalise_rows  # noqa: E402
from clip_search_plugin.engine.index.ann import APPROXIMATE_FROM  # noqa: E402
from clip_search_plugin.engine.index.neighbours import mutual_neighbours  # noqa: E402
from clip_search_plugin.engine.index.store import OpenIndex  # noqa: E402
from clip_search_plugin.engine.query.searching import index_top_hits, place_regions, score_distribution, top_places  # noqa: E402
from clip_search_plugin.engine.query.vectors import embed_query  # noqa: E402
from clip_search_plugin.engine.settings import ModelSpec, TilingSettings  # noqa: E402
from clip_search_plugin.engine.tiling.raster_io import RasterInfo  # noqa: E402

UTM_33N = 'PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","32633"]]'  # noqa: E501 - the synthetic index's CRS: areas are measured on its ellipsoid, as for a real raster
WORDS = ("swimming pool", "tennis court", "parking lot", "solar panels", "football field", "harbour",
         "airport runway", "forest", "river", "bridge", "farmland", "storage tanks", "railway station",
         "golf course", "baseball diamond", "church", "roundabout", "greenhouse", "quarry", "beach")


def synthetic_index(n: int, dim: int, seed: int = 0) -> OpenIndex:
    """An in-memory index of ``n`` tiles: clustered unit vectors and a 224 px / 50% overlap grid."""
    import faiss

    rng = np.random.default_rng(seed)
    centres = normalise_rows(rng.normal(size=(256, dim)).astype(np.float32))
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        picks = rng.integers(0, len(centres), size=stop - start)
        noise = rng.normal(scale=0.6 / np.sqrt(dim), size=(stop - start, dim)).astype(np.float32)
        vectors[start:stop] = normalise_rows(centres[picks] + noise)
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    per_row = int(np.ceil(np.sqrt(n)))
    ids = np.arange(n)
    tiles = np.stack([(ids % per_row) * 112, (ids // per_row) * 112, np.full(n, 224), np.full(n, 224),
                      np.zeros(n, dtype=np.int64)], axis=1).astype(np.int32)
    side = per_row * 112 + 112
    raster = RasterInfo(
        path="synthetic.tif", width=side, height=side, count=3, dtype="uint8", crs_wkt=UTM_33N, is_geographic=False,
        linear_units_factor=1.0, transform=(0.3, 0.0, 500000.0, 0.0, -0.3, 4000000.0), georeferenced=True,
        bands=(1, 2, 3), stretch=None, fingerprint="synthetic",
    )
    from clip_search_plugin.engine.embedding.models import ModelIdentity

    identity = ModelIdentity("synthetic", "synthetic", False)
    return OpenIndex(Path("synthetic"), {"dim": dim}, raster, identity, TilingSettings(), tiles, flat)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def time_queries(index: OpenIndex, embedder: Embedder, queries: list[str], top_k: int,
                 rerank: bool = True) -> dict[str, list[float]]:
    """Timings of each part for each query; every query is new to the embedder (its text cache is emptied)."""
    cache = getattr(embedder, "_text_cache", None)
    if cache is not None:
        cache.clear()
    parts: dict[str, list[float]] = {"text": [], "statistics": [], "search": [], "merge": [], "total": []}
    for number, query in enumerate(["warm-up", *queries]):
        t0 = time.perf_counter()
        vector = embed_query(embedder, query)
        t1 = time.perf_counter()
        score_distribution(index, vector)
        t2 = time.perf_counter()
        top = top_places(index, vector, top_k, None, None, True, rerank)
        t3 = time.perf_counter()
        place_regions(index, top)
        t4 = time.perf_counter()
        if number == 0:
            continue
        for key, value in (("text", t1 - t0), ("statistics", t2 - t1), ("search", t3 - t2), ("merge", t4 - t3),
                           ("total", t4 - t0)):
            parts[key].append(value * 1000)
    return parts


def time_queries_repeated(index: OpenIndex, embedder: Embedder, queries: list[str], top_k: int,
                          rerank: bool = True) -> list[float]:
    """Total time of queries asked again (their text vectors remembered), as after Search again."""
    totals = []
    for query in queries:
        t0 = time.perf_counter()
        vector = embed_query(embedder, query)
        score_distribution(index, vector)
        place_regions(index, top_places(index, vector, top_k, None, None, True, rerank))
        totals.append((time.perf_counter() - t0) * 1000)
    return totals


def approximate_figures(index: OpenIndex, embedder: Embedder, queries: list[str], top_k: int,
                        rerank: bool = True) -> dict[str, Any]:
    """Build the engine's IVF index over ``index``'s vectors (calibrated as build_index does) and time it."""
    from clip_search_plugin.engine.index.ann import CALIBRATION_CONCEPTS, build_ivf

    exact = index.vectors
    started = time.perf_counter()
    calibration = np.stack([embed_query(embedder, c) for c in CALIBRATION_CONCEPTS])
    ivf, settings = build_ivf(exact, calibration)
    build_s = time.perf_counter() - started
    vectors = [embed_query(embedder, q) for q in queries]
    truth = [{i for i, _ in index_top_hits(index, v, 100)} for v in vectors]
    index.vectors = ivf
    parts = time_queries(index, embedder, queries, top_k, rerank)
    found = [{i for i, _ in index_top_hits(index, v, 100)} for v in vectors]
    index.vectors = exact
    recall = float(np.mean([len(t & f) / len(t) for t, f in zip(truth, found, strict=True)]))
    print(f"  approximate: {settings}, built in {build_s:.0f} s, recall@100 on the benchmark queries {recall:.4f}")
    return {"ivf": settings, "ivf_build_s": round(build_s, 1), "ivf_recall_at_100": round(recall, 4),
            "ivf_total_p50_ms": round(percentile(parts["total"], 50), 2),
            "ivf_search_p50_ms": round(percentile(parts["search"], 50), 2)}


def measure_size(size: int, embedder: Embedder, queries: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one index size: look-alikes, then the queries on the exact index and, where build_index
    would store one (or with --approximate), on the approximate index."""
    index = synthetic_index(size, embedder.dim)
    started = time.perf_counter()
    index.neighbours = mutual_neighbours(index.vectors, index.tiles)
    look_alikes_s = time.perf_counter() - started
    if embedder.device.startswith("cuda"):
        index.to_device(embedder.device)  # as the engine does on a GPU
    rerank = not args.no_rerank
    parts = time_queries(index, embedder, queries, args.top_k, rerank)
    again = time_queries_repeated(index, embedder, queries, args.top_k, rerank)
    other = time_queries(index, embedder, queries, args.top_k, not rerank)["search"]  # the same, the other way
    row = {"tiles": size, "rerank": rerank, "look_alikes_s": round(look_alikes_s, 1),
           f"search_{'plain' if rerank else 'reranked'}_p50_ms": round(percentile(other, 50), 2),
           "look_alikes_share_of_cpu_build": round(look_alikes_s / (size / args.build_rate), 4),
           **{f"{k}_p50_ms": round(percentile(v, 50), 2) for k, v in parts.items()},
           **{f"{k}_p95_ms": round(percentile(v, 95), 2) for k, v in parts.items()},
           "repeated_total_p50_ms": round(percentile(again, 50), 2)}
    as_built = "ivf" if size >= APPROXIMATE_FROM else "exact"
    if args.approximate or as_built == "ivf":
        row.update(approximate_figures(index, embedder, queries, args.top_k, rerank))
    row["as_built"] = as_built
    row["as_built_total_p50_ms"] = row["ivf_total_p50_ms"] if as_built == "ivf" else row["total_p50_ms"]
    print(f"{size:>9,} tiles: total p50 {row['total_p50_ms']:.1f} ms, p95 {row['total_p95_ms']:.1f} ms "
          f"(text {row['text_p50_ms']:.1f}, statistics {row['statistics_p50_ms']:.1f}, "
          f"search {row['search_p50_ms']:.1f}, merge {row['merge_p50_ms']:.1f}); look-alikes found in "
          f"{look_alikes_s:.1f} s, {100 * row['look_alikes_share_of_cpu_build']:.2f}% of a CPU build", flush=True)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print("| tiles | total p50 ms (exact) | total p95 ms | text p50 | statistics p50 | search p50 | merge p50 | "
          "repeated query p50 | as built_index stores it: total p50 | look-alikes s (share of a CPU build) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tiles']:,} | {r['total_p50_ms']:.1f} | {r['total_p95_ms']:.1f} | {r['text_p50_ms']:.1f} | "
              f"{r['statistics_p50_ms']:.1f} | {r['search_p50_ms']:.1f} | {r['merge_p50_ms']:.1f} | "
              f"{r['repeated_total_p50_ms']:.1f} | {r['as_built_total_p50_ms']:.1f} ({r['as_built']}) | "
              f"{r['look_alikes_s']:.0f} ({100 * r['look_alikes_share_of_cpu_build']:.2f}%) |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--approximate", action="store_true",
                        help="also time the approximate (IVF) index of every size, with its recall (it is timed "
                        f"anyway from {APPROXIMATE_FROM:,} tiles, where build_index stores one)")
    parser.add_argument("--no-rerank", action="store_true", help="search without look-alike re-ranking")
    parser.add_argument("--build-rate", type=float, default=22.0,
                        help="tiles/s of a CPU build, to compare the look-alikes' time with (default 22)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import faiss
    import torch

    embedder = load_embedder(ModelSpec(args.model, args.pretrained), args.device)
    queries = [f"{WORDS[i % len(WORDS)]} {'near a road' if i >= len(WORDS) else ''}".strip()
               for i in range(args.queries)]
    rows = [measure_size(size, embedder, queries, args) for size in args.sizes]
    print_table(rows)
    if args.json:
        report = {"machine": {"cpu": platform.machine(), "python": platform.python_version(),
                              "torch": torch.__version__, "faiss": faiss.__version__,
                              "faiss_threads": faiss.omp_get_max_threads()},
                  "model": embedder.identity.label(), "device": embedder.device, "top_k": args.top_k,
                  "queries": args.queries, "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
