"""The command line, run as a user runs it: a real subprocess, the tiny random-weight CLIP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest

from ..conftest import REPO, shared_raster

CLI = [sys.executable, "-m", "clip_search_plugin.engine"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_index_search_similar_info_through_the_cli(tmp_path: Path) -> None:
    raster = shared_raster("drone_rgba_alpha.tif")
    ix = tmp_path / "my index"  # a path with a space
    done = cli("index", str(raster), "--model", "clip-search-tiny", "--pretrained", "none", "--output", str(ix),
               "--tile-size", "60", "--tile-units", "m", "--scales", "1", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "RANDOM WEIGHTS" in done.stdout and str(ix) in done.stdout

    table = cli("search", str(ix), "solar panels on a roof", "--top-k", "8", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "RANDOM WEIGHTS" in table.stdout and "rank" in table.stdout

    gpkg = tmp_path / "results.gpkg"
    written = cli("search", str(ix), "road", "--top-k", "5", "-o", str(gpkg), cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    info = pyogrio.read_info(gpkg)
    assert info["crs"] == "EPSG:32750" and info["features"] >= 1
    assert {"rank", "score", "query", "tile_count", "area", "random_weights"} <= set(info["fields"])

    geojson = cli("similar", str(ix), "--tile-id", "0", "--top-k", "3", "--format", "geojson", cwd=tmp_path)
    features = json.loads(geojson.stdout)["features"]
    assert geojson.returncode == 0 and 1 <= len(features) <= 3
    assert [f["properties"]["rank"] for f in features] == list(range(1, len(features) + 1))

    described = json.loads(cli("info", str(ix), cwd=tmp_path).stdout)
    assert described["random_weights"] is True and described["tiles"] > 0

    # the user's own prompt templates, and a heatmap written beside the results
    (tmp_path / "my templates.txt").write_text("# mine\nan orthophoto of {}\n{} from a drone\n", encoding="utf-8")
    heat = tmp_path / "heat.tif"
    own = cli("search", str(ix), "road", "--templates-file", str(tmp_path / "my templates.txt"), "--heatmap",
              str(heat), "--format", "json", cwd=tmp_path)
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["heatmap"] == str(heat) and heat.stat().st_size > 0
    plain = cli("search", str(ix), "road", "--raw", "--format", "json", cwd=tmp_path)
    assert json.loads(plain.stdout)["regions"][0]["score"] != json.loads(own.stdout)["regions"][0]["score"]


def test_models_lists_every_preset_with_its_source_and_licence(tmp_path: Path) -> None:
    from clip_search_plugin.engine.embedding.models import DEFAULT_PRESET, PRESETS

    done = cli("models", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name, preset in PRESETS.items():
        assert f"\n{name}" in "\n" + done.stdout and preset.licence in done.stdout
    assert f"{DEFAULT_PRESET} (default):" in done.stdout and "Published figures:" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "missing.tif", "--model", "tiny-random"], "Raster not found"),
        (["index", "{gcps}", "--model", "tiny-random"], "gdalwarp"),
        (["index", "{raster}", "--model", "tiny-random", "--overlap", "1.5"], "Overlap"),
        (["search", "nowhere", "pool"], "not a complete CLIP Search index"),
        (["search", "{index}", "   "], "query is empty"),
        (["search", "{index}", "pool", "--top-k", "0"], "top-k"),
        (["search", "{index}", "pool", "--threshold", "2"], "threshold"),
        (["search", "{index}", "pool", "--templates-file", "missing.txt"], "Cannot read the prompt templates"),
        (["search", "{index}", "pool", "--heatmap", "heat.png"], "give a .tif path"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(args: list[str], message: str, tmp_path: Path) -> None:
    raster = shared_raster("colorado_rgb_015m.tif")
    index = tmp_path / "ix"
    if "{index}" in args:
        assert cli("index", str(raster), "--model", "tiny-random", "--output", str(index), cwd=tmp_path).returncode == 0
    filled = [a.format(raster=raster, index=index, gcps=raster.with_name("gcps_only.tif")) for a in args]
    done = cli(*filled, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_no_rerank_ranks_by_each_tiles_own_score(tmp_path: Path) -> None:
    raster = shared_raster("colorado_rgb_015m.tif")
    ix = tmp_path / "ix"
    # small tiles: enough of them that don't overlap each other to be look-alikes
    done = cli("index", str(raster), "--model", "tiny-random", "--output", str(ix), "--tile-size", "64", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answers = {}
    for command, what in (("search", ["road"]), ("similar", ["--tile-id", "0"])):
        for flags in ([], ["--no-rerank"]):
            done = cli(command, str(ix), *what, *flags, "--no-merge", "--format", "json", cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            answers[command, bool(flags)] = json.loads(done.stdout)
    for command in ("search", "similar"):
        reranked, plain = answers[command, False], answers[command, True]
        assert reranked["reranked"] is True and plain["reranked"] is False
        # the same query scored two ways: the look-alikes' scores change the tiles' scores
        assert [r["score"] for r in reranked["regions"]] != [r["score"] for r in plain["regions"]]
