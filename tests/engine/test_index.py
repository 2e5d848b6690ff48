"""Index folder: Faiss against brute force, bit-identical reopen, atomic replace, damage detection."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from clip_search_plugin.engine.embedder import normalise_rows
from clip_search_plugin.engine.errors import IndexFormatError, InputError
from clip_search_plugin.engine.index import MANIFEST, TILES, VECTORS, open_index, write_index
from clip_search_plugin.engine.models import ModelIdentity
from clip_search_plugin.engine.raster_io import RasterInfo
from clip_search_plugin.engine.search import top_hits
from clip_search_plugin.engine.settings import TilingSettings

DIM = 32


def sample(n: int = 500, seed: int = 1) -> tuple[np.ndarray, dict[str, object], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = normalise_rows(rng.normal(size=(n, DIM)))
    tiles = np.array([[i * 10 % 1000, i // 100 * 10, 20, 20, 0] for i in range(n)], dtype=np.int32)
    info = RasterInfo("/data/x.tif", 1000, 60, 3, "uint8", "", False, 1.0, (1, 0, 0, 0, -1, 0), False,
                      (1, 2, 3), None, "f" * 32)
    manifest = {"raster": info.to_dict(), "model": ModelIdentity("a", "b", False).to_dict(), "dim": DIM,
                "tiling": TilingSettings().to_dict(), "base_tile_px": 20, "tile_count": n}
    return vectors, manifest, tiles


def flat(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def test_faiss_top_k_equals_numpy_brute_force() -> None:
    vectors, _, _ = sample()
    query = normalise_rows(np.random.default_rng(7).normal(size=(1, DIM)))[0]
    hits = top_hits(flat(vectors), query, 25)
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:25]
    assert [i for i, _ in hits] == order.tolist()
    assert np.allclose([s for _, s in hits], scores[order], atol=1e-5)


def test_restricted_search_and_threshold_equal_brute_force() -> None:
    vectors, _, _ = sample()
    query = normalise_rows(np.random.default_rng(8).normal(size=(1, DIM)))[0]
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[::3] = True
    hits = top_hits(flat(vectors), query, 40, threshold=0.1, allowed=allowed)
    scores = np.where(allowed, vectors @ query, -np.inf)
    expected = [int(i) for i in np.argsort(-scores, kind="stable")[:40] if scores[i] >= 0.1]
    assert [i for i, _ in hits] == expected
    assert all(allowed[i] for i, _ in hits)


def test_top_k_larger_than_index_returns_everything_and_bad_limits_are_refused() -> None:
    vectors, _, _ = sample(12)
    assert len(top_hits(flat(vectors), vectors[0], 1000)) == 12
    for bad in (0, -3):
        with pytest.raises(InputError, match="top-k"):
            top_hits(flat(vectors), vectors[0], bad)
    with pytest.raises(InputError, match="threshold"):
        top_hits(flat(vectors), vectors[0], 5, threshold=1.5)


def test_saved_index_reopens_bit_identical(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample()
    path = write_index(tmp_path / "ix", manifest, flat(vectors), tiles)
    index = open_index(path)
    assert index.count == len(vectors) and index.dim == DIM
    assert np.array_equal(index.vectors.reconstruct_n(0, index.count), vectors)
    assert np.array_equal(index.tiles, tiles)
    assert index.identity == ModelIdentity("a", "b", False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temporary folder left


def test_rewrite_replaces_whole_index_and_failed_write_keeps_the_old(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample()
    path = write_index(tmp_path / "ix", manifest, flat(vectors), tiles)
    first = (path / MANIFEST).read_text()
    with pytest.raises(TypeError):
        write_index(path, manifest, object(), tiles)  # fails while writing vectors
    assert (path / MANIFEST).read_text() == first
    open_index(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    v2, m2, t2 = sample(50, seed=3)
    write_index(path, dict(m2, tile_count=50), flat(v2), t2)
    assert open_index(path).count == 50


def test_a_folder_with_other_files_is_never_replaced(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample(5)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a CLIP Search index"):
        write_index(tmp_path / "mine", manifest, flat(vectors), tiles)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("damage", ["truncate_vectors", "flip_tiles", "version", "no_manifest", "bad_json"])
def test_damaged_index_is_refused_with_advice(tmp_path: Path, damage: str) -> None:
    vectors, manifest, tiles = sample()
    path = write_index(tmp_path / "ix", manifest, flat(vectors), tiles)
    if damage == "truncate_vectors":
        data = (path / VECTORS).read_bytes()
        (path / VECTORS).write_bytes(data[: len(data) // 2])
    elif damage == "flip_tiles":
        data = bytearray((path / TILES).read_bytes())
        data[-1] ^= 0xFF
        (path / TILES).write_bytes(bytes(data))
    elif damage == "version":
        m = json.loads((path / MANIFEST).read_text())
        m["format_version"] = 99
        (path / MANIFEST).write_text(json.dumps(m))
    elif damage == "no_manifest":
        (path / MANIFEST).unlink()
    else:
        (path / MANIFEST).write_text("{not json")
    with pytest.raises(IndexFormatError, match=r"(?i)build"):
        open_index(path)
