"""Look-alike re-ranking: mutual nearest neighbours found at index time, stored, and the scores smoothed over them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from clip_search_plugin.engine.building.build import build_index, search_similar
from clip_search_plugin.engine.embedding.embedder import normalise_rows
from clip_search_plugin.engine.errors import IndexFormatError, InputError
from clip_search_plugin.engine.index.neighbours import NEIGHBOURS, mutual_neighbours, smoothed
from clip_search_plugin.engine.index.store import MANIFEST, NEIGHBOURS_FILE, open_index
from clip_search_plugin.engine.serve.service import Service
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import shared_raster


def flat(vectors: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def clustered(n: int, dim: int = 32, centres: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = normalise_rows(rng.normal(size=(centres, dim)).astype(np.float32))
    return normalise_rows(middle[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32))


def brute_force(vectors: np.ndarray, tiles: np.ndarray | None, k: int) -> list[set[int]]:
    """Mutual k nearest neighbours by their definition, one tile at a time."""
    n = len(vectors)
    similarity = vectors @ vectors.T
    nearest = []
    for i in range(n):
        order = [j for j in np.argsort(-similarity[i], kind="stable") if j != i]
        if tiles is not None:
            order = [j for j in order if not overlap(tiles[i], tiles[j])]
        nearest.append(set(order[:k]))
    return [{j for j in nearest[i] if i in nearest[j]} for i in range(n)]


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3])


def test_look_alikes_are_the_mutual_nearest_neighbours_and_never_overlap() -> None:
    vectors = clustered(300)
    ids = np.arange(300)
    # a 50%-overlap grid of 20 x 15 tiles of 64 px: each tile shares pixels with up to 8 others
    tiles = np.stack([(ids % 20) * 32, (ids // 20) * 32, np.full(300, 64), np.full(300, 64), np.zeros(300)],
                     axis=1).astype(np.int32)
    for table_of_tiles in (None, tiles):
        table = mutual_neighbours(flat(vectors), table_of_tiles)
        assert table.dtype == np.int32 and table.shape == (300, NEIGHBOURS)
        expected = brute_force(vectors, table_of_tiles, NEIGHBOURS)
        for i, row in enumerate(table):
            kept = [int(j) for j in row if j >= 0]
            assert (row[len(kept):] == -1).all()  # packed to the left
            assert set(kept) == expected[i]
            assert all(i in table[j] for j in kept)
            if table_of_tiles is not None:
                assert not any(overlap(tiles[i], tiles[j]) for j in kept)
    assert sum(len(e) for e in expected) > 300  # most tiles have look-alikes: the test is not vacuous


def test_above_the_exact_limit_the_look_alikes_come_from_cells_and_nearly_agree() -> None:
    vectors = clustered(6000, centres=40)
    exact = mutual_neighbours(flat(vectors))
    approximate = mutual_neighbours(flat(vectors), exact_upto=1000)
    pairs = {(i, int(j)) for i, row in enumerate(exact) for j in row if j >= 0}
    found = {(i, int(j)) for i, row in enumerate(approximate) for j in row if j >= 0}
    assert len(pairs & found) >= 0.9 * len(pairs)


def test_an_approximate_index_is_searched_in_more_cells_than_its_text_queries_probe() -> None:
    vectors = clustered(3000, centres=40)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(32), 32, 64, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors)
    ivf.add(vectors)
    ivf.make_direct_map()
    ivf.nprobe = 1  # a setting for text queries that would find few tile-to-tile neighbours
    exact = mutual_neighbours(flat(vectors))
    approximate = mutual_neighbours(ivf)
    assert ivf.nprobe == 1  # left as it was
    pairs = {(i, int(j)) for i, row in enumerate(exact) for j in row if j >= 0}
    found = {(i, int(j)) for i, row in enumerate(approximate) for j in row if j >= 0}
    assert len(pairs & found) >= 0.95 * len(pairs)


def test_smoothed_score_is_the_mean_of_the_tile_and_its_look_alikes() -> None:
    vectors = normalise_rows(np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32))
    query = np.array([1.0, 0.0], dtype=np.float32)
    table = np.array([[1, -1], [0, -1], [3, -1], [2, -1]], dtype=np.int32)
    found = [(i, float(vectors[i] @ query)) for i in range(4)]
    ranked = smoothed(found, query, table, lambda ids: vectors[ids])
    expected = {0: (1 + 0.8) / 2, 1: (0.8 + 1) / 2, 2: (0 + 0.6) / 2, 3: (0.6 + 0) / 2}
    assert [i for i, _ in ranked] == [0, 1, 2, 3]  # ties keep the cosine order
    assert all(score == pytest.approx(expected[i]) for i, score in ranked)
    lonely = np.full((4, 2), -1, dtype=np.int32)
    assert smoothed(found, query, lonely, lambda ids: vectors[ids]) == sorted(found, key=lambda f: -f[1])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raster = shared_raster("colorado_rgb_015m.tif")
    settings = IndexSettings(tiling=TilingSettings(tile_size=64, overlap=0.5), model=ModelSpec("tiny-random"))
    return build_index(raster, settings, tmp_path_factory.mktemp("ix") / "ix").path


def test_an_index_stores_its_look_alikes_and_an_older_index_finds_them_when_first_needed(
        built: Path, tmp_path: Path) -> None:
    index = open_index(built)
    manifest = json.loads((built / MANIFEST).read_text())
    assert NEIGHBOURS_FILE in manifest["files"] and index.neighbours is not None
    assert (index.neighbours >= 0).any()
    older = tmp_path / "older"
    shutil.copytree(built, older)
    (older / NEIGHBOURS_FILE).unlink()
    del manifest["files"][NEIGHBOURS_FILE]
    (older / MANIFEST).write_text(json.dumps(manifest))
    reopened = open_index(older)
    assert reopened.neighbours is None
    a = search_similar(index, tile_ids=[3], top_k=5, merge=False)
    b = search_similar(reopened, tile_ids=[3], top_k=5, merge=False)
    assert np.array_equal(reopened.look_alikes(), index.neighbours)
    assert [h.tile_id for h in a.hits] == [h.tile_id for h in b.hits]


def test_damaged_look_alikes_are_refused(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    table = np.load(copy / NEIGHBOURS_FILE)
    table[0, 0] = len(table) + 5  # a tile that does not exist
    np.save(copy / NEIGHBOURS_FILE, table)
    manifest = json.loads((copy / MANIFEST).read_text())
    with pytest.raises(IndexFormatError, match="build the index again"):
        open_index(copy)  # the checksum no longer matches
    manifest["files"][NEIGHBOURS_FILE]["sha256"] = __import__("hashlib").sha256(
        (copy / NEIGHBOURS_FILE).read_bytes()).hexdigest()
    manifest["files"][NEIGHBOURS_FILE]["size"] = (copy / NEIGHBOURS_FILE).stat().st_size
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="inconsistent"):
        open_index(copy)  # the checksum matches, the ids do not fit


def test_rerank_changes_the_order_only_through_the_look_alikes(built: Path) -> None:
    index = open_index(built)
    plain = search_similar(index, tile_ids=[7], top_k=15, merge=False, rerank=False)
    reranked = search_similar(index, tile_ids=[7], top_k=15, merge=False, rerank=True)
    assert plain.extra["reranked"] is False and reranked.extra["reranked"] is True
    scores = [h.score for h in plain.hits]
    assert scores == sorted(scores, reverse=True)
    vector = normalise_rows(index.read_vectors(np.array([7])))[0]
    for hit in reranked.hits:
        row = [int(j) for j in index.look_alikes()[hit.tile_id] if j >= 0]
        own = float(index.read_vectors(np.array([hit.tile_id]))[0] @ vector)
        others = [float(index.read_vectors(np.array([j]))[0] @ vector) for j in row]
        assert hit.score == pytest.approx((own + sum(others)) / (1 + len(others)), abs=1e-5)
    assert [h.tile_id for h in plain.hits] != [h.tile_id for h in reranked.hits]


def test_the_service_takes_rerank_as_true_or_false_only(built: Path) -> None:
    service = Service("cpu")
    params = {"index": str(built), "tile_ids": [2], "top_k": 3}
    quiet = (lambda done, total: None, lambda: False)
    assert service.handle("similar", params, *quiet)["reranked"] is True
    assert service.handle("similar", {**params, "rerank": False}, *quiet)["reranked"] is False
    with pytest.raises(InputError, match="rerank must be true or false"):
        service.handle("similar", {**params, "rerank": "no"}, *quiet)
