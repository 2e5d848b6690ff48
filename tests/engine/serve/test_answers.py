"""Typed answers: what a real engine sends for a search, a locate, an info and a build reads back into its answer
class and is written out again as the same JSON; the index status says whether an index can be searched."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clip_search_plugin.engine.answers import IndexAnswer, IndexStatus, IndexSummary, InfoAnswer, SearchAnswer
from clip_search_plugin.engine.building.build import open_index, search
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.requests import LocateRequest, SearchRequest
from clip_search_plugin.engine.serve.service import Service
from clip_search_plugin.engine.settings import ModelSpec, TilingSettings

from ..conftest import write_geotiff

QUIET = (lambda done, total: None, lambda: False)
TINY = {"name": "tiny-random"}


def sent(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as the plugin receives it: through JSON, as the engine process writes it."""
    received: dict[str, Any] = json.loads(json.dumps(answer, allow_nan=False))
    return received


def raster(path: Path, seed: int = 3) -> Path:
    pixels = np.random.default_rng(seed).integers(1, 255, size=(3, 96, 96)).astype("uint8")
    return write_geotiff(path, pixels)


@pytest.fixture
def service() -> Service:
    return Service("cpu")


@pytest.fixture
def built(service: Service, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A raster and the engine's answer to indexing it into the (private) index cache."""
    path = raster(tmp_path / "r.tif")
    return path, service.handle("index", {"raster": str(path), "model": TINY, "tiling": {"tile_size": 32}}, *QUIET)


@pytest.mark.parametrize("heatmap", [False, True], ids=["plain", "with heatmap"])
def test_a_search_answer_reads_back_as_the_engine_sent_it(service: Service, built: tuple[Path, dict[str, Any]],
                                                          tiny: ClipEmbedder, tmp_path: Path, heatmap: bool) -> None:
    index = built[1]["path"]
    request = SearchRequest(index=index, query="red roofs but not tents", relevant_ids=(0,))
    params = {**request.to_params(), "top_k": 50, **({"heatmap": str(tmp_path / "heat.tif")} if heatmap else {})}
    answer = sent(service.handle("search", params, *QUIET))
    read = SearchAnswer.from_dict(answer)
    assert read.to_dict() == answer
    assert set(answer) == {f.name for f in fields(SearchAnswer)} - (set() if heatmap else {"heatmap"})
    assert read.query == request.label and read.random_weights is True and read.regions == answer["regions"]
    assert read.heatmap == (str(tmp_path / "heat.tif") if heatmap else None)
    assert read.fewer and read.requested == 50 and 0 < len(read.regions) < 50 and read.searched_tiles > 0
    assert read.reranked is True and read.ranking_note() == ", re-ranked with look-alikes"
    typed = search(open_index(index), tiny, "red roofs but not tents", relevant_ids=[0]).answer()
    assert SearchAnswer.from_dict(typed.to_dict()) == typed
    assert sent(typed.to_dict())["regions"] == answer["regions"]


def test_an_info_and_an_index_answer_read_back_as_the_engine_sent_them(
        service: Service, built: tuple[Path, dict[str, Any]]) -> None:
    path, build = built
    build = sent(build)
    assert IndexAnswer.from_dict(build).to_dict() == build
    info = sent(service.handle("info", {"index": build["path"]}, *QUIET))
    read = InfoAnswer.from_dict(info)
    assert read.to_dict() == info and set(info) == {f.name for f in fields(InfoAnswer)}
    assert (read.path, read.raster, read.tiles, read.random_weights) == (build["path"], str(path), build["tiles"], True)
    status = IndexAnswer.from_dict(build).status()
    assert status.ready and status.searchable and status.manifest == IndexSummary(
        build["model"], build["tiles"], "just now", True)


def locate(service: Service, path: Path, tile_size: float = 32) -> dict[str, Any]:
    request = LocateRequest(str(path), ModelSpec("tiny-random"), TilingSettings(tile_size=tile_size))
    return sent(service.handle("locate", sent(request.to_params()), *QUIET))


def read_back(answer: dict[str, Any]) -> IndexStatus:
    """The locate answer read, checked to give the engine's JSON again."""
    status = IndexStatus.from_dict(answer)
    assert status.to_dict() == answer and IndexStatus.from_dict(status.to_dict()) == status
    return status


def test_locate_answers_read_back_and_say_whether_the_index_is_searchable(
        service: Service, built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, build = built
    ready = read_back(locate(service, path))
    assert (ready.status, ready.path, ready.partial_tiles) == ("ready", build["path"], None)
    assert ready.manifest is not None and ready.manifest.tiles == build["tiles"] and ready.manifest.random_weights
    assert ready.searchable and not ready.raster_changed and ready.saved_tiles == 0

    other = read_back(locate(service, path, tile_size=48))  # built with other tiling settings
    assert (other.status, other.path, other.changed, other.partial_tiles) == ("stale", build["path"], False, 0)
    assert other.reason == "other model or tiling settings" and other.expected != other.path
    assert other.searchable and not other.raster_changed

    nowhere = read_back(locate(service, raster(tmp_path / "never.tif")))
    assert (nowhere.status, nowhere.manifest, nowhere.partial_tiles) == ("none", None, 0)
    assert not nowhere.searchable and not nowhere.raster_changed

    raster(path, seed=4)  # the raster's content changes after indexing
    changed = read_back(locate(service, path))
    assert (changed.status, changed.path, changed.changed) == ("stale", build["path"], True)
    assert "changed" in str(changed.reason) and changed.raster_changed and not changed.searchable

    Path(changed.expected or "").mkdir(parents=True)
    (Path(changed.expected or "") / "manifest.json").write_text("{}", encoding="utf-8")
    damaged = read_back(locate(service, path))
    assert damaged.status == "damaged" and damaged.message and damaged.manifest is None
    assert not damaged.searchable and not damaged.raster_changed
