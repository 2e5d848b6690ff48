"""Paired builds of one raster with several inference backends (used by ``bench_index.py --backends``).

Each round builds the whole raster once with each backend, in the same order, with one model loaded once; the first
backend is the baseline. A first build with each other backend (which exports and verifies the model on this
computer, once) is timed apart. The vectors of every backend's index are compared with the baseline's, tile by tile.
Where a build verified a fast text tower, a query's text (its prompt ensemble) is timed with it and with the model,
in turn, and their query vectors compared.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clip_search_plugin.engine.building.build import build_index
from clip_search_plugin.engine.embedding.backends.verify import agreement
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.index.ann import CALIBRATION_CONCEPTS
from clip_search_plugin.engine.index.store import open_index
from clip_search_plugin.engine.query.templates import AERIAL_TEMPLATES
from clip_search_plugin.engine.query.vectors import embed_query, ensemble
from clip_search_plugin.engine.settings import IndexSettings


def _vectors(path: Path) -> np.ndarray:
    index = open_index(path)
    return np.asarray(index.vectors.reconstruct_n(0, index.count), dtype=np.float32)


def _build(raster: Path, settings: IndexSettings, embedder: ClipEmbedder, backend: str, out: Path) -> dict[str, Any]:
    result = build_index(raster, replace(settings, backend=backend), out, embedder=embedder)
    speed = result.tile_count / result.seconds
    print(f"  {backend:>9} -> {result.backend:<9} {speed:6.1f} tiles/s ({result.seconds:.1f} s)"
          + (f"  NOTE {result.backend_note}" if result.backend_note else ""), flush=True)
    return {"used": result.backend, "tiles_s": speed, "seconds": result.seconds}


def paired_builds(raster: Path, settings: IndexSettings, embedder: ClipEmbedder, backends: list[str],
                  rounds: int) -> dict[str, Any]:
    """Figures of ``rounds`` paired builds per backend: speeds, ratios against the first, agreement of vectors."""
    baseline = backends[0]
    found: dict[str, Any] = {"baseline": baseline, "rounds": rounds, "first_build": {}, "builds": {}}
    queries = np.stack([embed_query(embedder, c) for c in CALIBRATION_CONCEPTS])
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print("first builds (export and verification included):", flush=True)
        for backend in backends[1:]:
            found["first_build"][backend] = _build(raster, settings, embedder, backend, folder / f"first-{backend}")
        runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for number in range(rounds):
            print(f"round {number + 1}:", flush=True)
            for backend in backends:
                runs[backend].append(_build(raster, settings, embedder, backend, folder / f"{backend}-{number}"))
        reference = _vectors(folder / f"{baseline}-0")
        for backend in backends:
            speeds = [r["tiles_s"] for r in runs[backend]]
            pairs = [r["tiles_s"] / b["tiles_s"] for r, b in zip(runs[backend], runs[baseline], strict=True)]
            agree = agreement(reference, _vectors(folder / f"{backend}-0"), queries)
            found["builds"][backend] = {
                "used": runs[backend][0]["used"], "tiles_s": [round(s, 2) for s in speeds],
                "median_tiles_s": round(statistics.median(speeds), 2),
                "ratio_per_pair": [round(p, 3) for p in pairs], "median_ratio": round(statistics.median(pairs), 3),
                "whole_index_agreement": agree.to_dict(),
            }
    print("verified on the sample:", embedder.backend.to_dict(), flush=True)
    found["choice"] = embedder.backend.to_dict()
    if embedder.fast_text() is not None:
        found["query_text"] = query_text(embedder)
    return found


def _ms(encode: Any) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vector = ensemble(encode())
    return (time.perf_counter() - started) * 1000, vector


def query_text(embedder: ClipEmbedder, rounds: int = 3) -> dict[str, Any]:
    """Milliseconds to encode a query's prompt ensemble with the verified text tower and with the model, in turn
    (median over the calibration concepts and rounds), and the lowest cosine between the two query vectors."""
    times: dict[str, list[float]] = {"fast": [], "model": []}
    lowest = 1.0
    for _ in range(rounds):
        for concept in CALIBRATION_CONCEPTS:
            prompts = [t.format(concept) for t in AERIAL_TEMPLATES]
            fast_ms, fast = _ms(lambda: embedder.encode_text_with(embedder.text_tower, prompts))  # noqa: B023
            model_ms, own = _ms(lambda: embedder.encode_text_with(None, prompts))  # noqa: B023
            times["fast"].append(fast_ms)
            times["model"].append(model_ms)
            lowest = min(lowest, float(fast @ own))
    fast_ms, model_ms = statistics.median(times["fast"]), statistics.median(times["model"])
    print(f"query text ({len(AERIAL_TEMPLATES)} prompts): model {model_ms:.1f} ms, fast text tower {fast_ms:.1f} ms "
          f"({model_ms / fast_ms:.2f}x), lowest cosine of query vectors {lowest:.5f}", flush=True)
    return {"prompts": len(AERIAL_TEMPLATES), "model_ms": round(model_ms, 2), "fast_ms": round(fast_ms, 2),
            "ratio": round(model_ms / fast_ms, 3), "min_cosine": round(lowest, 6)}
