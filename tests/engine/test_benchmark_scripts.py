"""The benchmark scripts run and report consistent figures (their speed targets live in BENCHMARKS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .conftest import REPO, shared_raster

sys.path.insert(0, str(REPO / "scripts"))


def test_bench_index_reports_the_three_speeds_their_ratios_and_paired_backends(tmp_path: Path) -> None:
    import bench_index

    raster = shared_raster("drone_rgba_alpha.tif")
    out = tmp_path / "index.json"
    assert bench_index.main(["--raster", str(raster), "--model", "clip-search-tiny", "--device", "cpu",
                             "--tile-size", "96", "--model-seconds", "0.5", "--naive-tiles", "16",
                             "--backends", "torch", "onnx-int8", "--rounds", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in ("end_to_end_tiles_s", "model_only_tiles_s", "naive_tiles_s"):
        assert figures[key] > 0
    assert figures["end_to_end_over_model_only"] == pytest.approx(
        figures["end_to_end_tiles_s"] / figures["model_only_tiles_s"], rel=0.02)
    assert figures["tiles"] > 0 and figures["device"] == "cpu" and figures["peak_rss_mib"] > 100
    paired = figures["backends"]
    assert paired["builds"]["onnx-int8"]["used"] == "onnx-int8" and len(paired["builds"]["torch"]["tiles_s"]) == 1
    assert paired["builds"]["onnx-int8"]["whole_index_agreement"]["min_cosine"] >= 0.995
    text = paired["query_text"]  # the build verified the int8 text tower: a query's text timed both ways
    assert text["model_ms"] > 0 and text["fast_ms"] > 0 and text["min_cosine"] >= 0.995


def test_bench_query_reports_each_part_per_size(tmp_path: Path) -> None:
    import bench_query

    out = tmp_path / "query.json"
    assert bench_query.main(["--sizes", "500", "2000", "--model", "clip-search-tiny", "--device", "cpu",
                             "--queries", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["tiles"] for r in report["rows"]] == [500, 2000]
    for row in report["rows"]:
        parts = sum(row[f"{k}_p50_ms"] for k in ("text", "statistics", "search", "merge"))
        assert row["total_p50_ms"] > 0 and parts == pytest.approx(row["total_p50_ms"], rel=0.5)
        assert row["rerank"] is True and row["as_built"] == "exact" and row["look_alikes_s"] >= 0
        assert 0 <= row["look_alikes_share_of_cpu_build"] < 1


def test_bench_cluster_times_a_local_cluster_against_the_single_process_build(tmp_path: Path) -> None:
    import bench_cluster

    raster = shared_raster("drone_rgba_alpha.tif")
    out = tmp_path / "cluster.json"
    assert bench_cluster.main(["--raster", str(raster), "--model", "tiny-random", "--tile-size", "96",
                               "--workers", "2", "--batch-size", "8", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    single, cluster = figures["builds"]["single"], figures["builds"]["local:2"]
    assert figures["tiles"] > 0 and single["tiles_s"] > 0 and cluster["tiles_s"] > 0
    # rounded to 3 decimals in the report
    assert cluster["over_single"] == pytest.approx(single["seconds"] / cluster["seconds"], rel=0.05, abs=1e-3)
    assert cluster["same_tiles"] is True and cluster["max_vector_difference"] < 1e-4


def test_bench_compact_streams_an_index_and_reports_recall_latency_and_memory(tmp_path: Path) -> None:
    import bench_compact

    out = tmp_path / "compact.json"
    assert bench_compact.main(["--tiles", "12000", "--dim", "64", "--block", "5000", "--queries", "10",
                               "--folder", str(tmp_path), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["tiles"] == 12000 and row["search"]["kind"] == "compact"
    assert row["search"]["m"] == 64 // bench_compact.compact.DIMS_PER_CODE  # a byte of code a few dimensions
    assert row["file_bytes"]["vectors16.npy"] == 12000 * 64 * 2 + 128  # float16 rows and the .npy header
    assert min(row["recall_text"], row["recall_image"]) >= 0.9
    assert 0 < row["search_p50_ms"] <= row["search_p95_ms"] and 50 < row["search_peak_rss_mib"] < 2000
    assert row["build_total_s"] > 0 and not list(tmp_path.glob("bench-compact-*"))  # the scratch folder is removed
