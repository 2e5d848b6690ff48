"""An index on a shared folder: searched in place by several analysts at once, never written by a search, and
replaced by a rebuild without any searcher seeing half an index."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clip_search_plugin.engine.building.build import build_index
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.index.store import open_index, write_index
from clip_search_plugin.engine.requests import ResultOptions, SearchRequest, SimilarRequest
from clip_search_plugin.engine.serve.service import Service
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import REPO, shared_raster

TINY = ModelSpec("tiny-random")
# a searcher in a process of its own, as another analyst's QGIS: searches the index over and over (the engine
# reopens it whenever its manifest changes) and prints one JSON line per search: the tile count it saw, or the error;
# until the file STOP exists
SEARCHER = """
import json, pathlib, sys
from clip_search_plugin.engine.errors import ClipSearchError
from clip_search_plugin.engine.requests import SearchRequest
from clip_search_plugin.engine.serve.service import Service
service, index, stop = Service("cpu"), sys.argv[1], pathlib.Path(sys.argv[2])
while not stop.exists():
    try:
        answer = service.answer(SearchRequest(index=index, query="a road"), lambda d, t: None, lambda: False)
        print(json.dumps({"tiles": service.open(index).count, "regions": len(answer["regions"])}), flush=True)
    except ClipSearchError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
"""


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry of ``folder`` and its parent: size, modification time and content hash of each file."""
    seen = {}
    for path in sorted([*folder.parent.iterdir(), *folder.iterdir()]):
        if path.is_file():
            stat = path.stat()
            seen[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            seen[str(path)] = (-1, path.stat().st_mtime_ns, "folder")
    return seen


def build(tiny: ClipEmbedder, target: Path, tile_size: float) -> Path:
    raster = shared_raster("drone_rgba_alpha.tif")
    settings = IndexSettings(model=TINY, tiling=TilingSettings(tile_size=tile_size), device="cpu")
    return build_index(raster, settings, output=target, embedder=tiny).path


def test_searches_read_a_shared_index_in_place_and_never_write_it(tiny: ClipEmbedder, tmp_path: Path) -> None:
    shared = build(tiny, tmp_path / "share" / "ortho-index", 96.0)
    before = snapshot(shared)
    service = Service("cpu")
    options = ResultOptions(top_k=5, heatmap=str(tmp_path / "heat.tif"))
    service.answer(SearchRequest(index=str(shared), query="a road", relevant_ids=(3,), irrelevant_ids=(4,),
                                 options=options), lambda d, t: None, lambda: False)
    service.answer(SimilarRequest(index=str(shared), tile_ids=(7,)), lambda d, t: None, lambda: False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    searches = [subprocess.Popen([sys.executable, "-m", "clip_search_plugin.engine", "search", str(shared),
                                  query, "--format", "json"], env=env, stdout=subprocess.PIPE, text=True)
                for query in ("a road", "trees", "a roof")]  # three analysts at once
    for search in searches:
        out, _ = search.communicate(timeout=120)
        assert search.returncode == 0 and json.loads(out)["regions"]
    assert snapshot(shared) == before  # nothing written, created or touched beside or inside it


def test_a_rebuild_publishes_beside_while_others_search(tiny: ClipEmbedder, tmp_path: Path) -> None:
    shared = build(tiny, tmp_path / "share" / "ortho-index", 96.0)
    other = open_index(build(tiny, tmp_path / "other", 128.0))
    first, second = open_index(shared), other
    env = dict(os.environ, PYTHONPATH=str(REPO))
    stop = tmp_path / "stop"
    searchers = [subprocess.Popen([sys.executable, "-c", SEARCHER, str(shared), str(stop)], env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    lines = [json.loads(searcher.stdout.readline() or "{}") for searcher in searchers if searcher.stdout]
    assert [line.get("tiles") for line in lines] == [first.count] * 2  # both are searching
    deadline = time.monotonic() + 8
    published = 0
    while time.monotonic() < deadline:  # rebuilds published over it, one after another, while they search
        index = (first, second)[published % 2]
        manifest = {k: v for k, v in index.manifest.items() if k not in ("files", "created", "format_version")}
        write_index(shared, manifest, index.vectors, index.tiles, index.neighbours)
        published += 1
    stop.touch()
    for searcher in searchers:
        out, _ = searcher.communicate(timeout=120)
        assert searcher.returncode == 0
        lines += [json.loads(line) for line in out.splitlines()]
    errors = [line["error"] for line in lines if "error" in line]
    assert not errors, f"{len(errors)} of {len(lines)} searches failed, e.g. {errors[:2]}"  # never half an index
    assert published > 20 and len(lines) > 20
    assert {line["tiles"] for line in lines} == {first.count, second.count}  # each search saw a whole index
    assert not [p.name for p in shared.parent.iterdir() if p.name.startswith(".")]  # nothing left beside


@pytest.mark.parametrize("name", ["manifest.json", "vectors.faiss"])
def test_a_search_never_repairs_or_rewrites_a_damaged_shared_index(tiny: ClipEmbedder, tmp_path: Path,
                                                                    name: str) -> None:
    shared = build(tiny, tmp_path / "share" / "ortho-index", 96.0)
    damaged = shared / name
    damaged.write_bytes(damaged.read_bytes()[:-40])
    before = snapshot(shared)
    result = subprocess.run([sys.executable, "-m", "clip_search_plugin.engine", "search", str(shared), "a road"],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "build" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(shared) == before
