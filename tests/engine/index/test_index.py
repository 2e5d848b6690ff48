"""Index folder: Faiss against brute force, bit-identical reopen, atomic replace, damage detection."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from clip_search_plugin.engine.embedding.embedder import normalise_rows
from clip_search_plugin.engine.embedding.models import ModelIdentity
from clip_search_plugin.engine.errors import IndexFormatError, InputError
from clip_search_plugin.engine.index.manifest_schema import SCHEMA, problems
from clip_search_plugin.engine.index.store import MANIFEST, TILES, VECTORS, open_index, write_index
from clip_search_plugin.engine.query.vectors import top_hits
from clip_search_plugin.engine.settings import TilingSettings
from clip_search_plugin.engine.tiling.raster_io import RasterInfo

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


def test_written_manifests_pass_the_schema_and_the_published_schema_is_the_one_used(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample(20)
    path = write_index(tmp_path / "ix", manifest, flat(vectors), tiles)
    assert problems(json.loads((path / MANIFEST).read_text()), SCHEMA) == []
    published = Path(__file__).resolve().parents[3] / "docs" / "index-manifest.schema.json"
    assert json.loads(published.read_text()) == SCHEMA


TAMPERED = {
    "tile count as text": (lambda m: m.update(tile_count="20"), "tile_count must be integer"),
    "dimension as a boolean": (lambda m: m.update(dim=True), "dim must be integer"),
    "five-number transform": (lambda m: m["raster"].update(transform=[1, 0, 0, 0, -1]), "transform has 5 items"),
    "overlap of 1.5": (lambda m: m["tiling"].update(overlap=1.5), "overlap = 1.5 is out of range"),
    "unknown tile units": (lambda m: m["tiling"].update(tile_units="ft"), "tile_units must be one of"),
    "a file entry that climbs out": (
        lambda m: m["files"].update({"../../outside.npy": {"size": 1, "sha256": "0" * 64}}),
        "files.../../outside.npy is not expected",
    ),
    "checksum that is not hex": (lambda m: m["files"]["tiles.npy"].update(sha256="x" * 64), "sha256"),
    "unknown search structure": (lambda m: m.update(search={"kind": "hnsw"}), "search.kind must be one of"),
    "model without architecture": (lambda m: m["model"].pop("arch"), "model.arch is missing"),
    "raster without a path": (lambda m: m["raster"].pop("path"), "raster.path is missing"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERED))
def test_a_manifest_that_breaks_the_schema_is_refused_naming_what_is_wrong(tmp_path: Path, tamper: str) -> None:
    vectors, manifest, tiles = sample(20)
    path = write_index(tmp_path / "ix", manifest, flat(vectors), tiles)
    change, expected = TAMPERED[tamper]
    stored = json.loads((path / MANIFEST).read_text())
    change(stored)
    (path / MANIFEST).write_text(json.dumps(stored))
    data = {name: (path / name).read_bytes() for name in (VECTORS, TILES)}
    with pytest.raises(IndexFormatError, match="Build the index again") as refused:
        open_index(path)
    assert expected in str(refused.value)
    assert {name: (path / name).read_bytes() for name in (VECTORS, TILES)} == data  # nothing touched


def test_index_files_that_lead_outside_their_folder_are_refused(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample(20)
    path = write_index(tmp_path / "ix", manifest, flat(vectors), tiles)
    outside = tmp_path / "elsewhere.faiss"
    (path / VECTORS).rename(outside)  # same bytes, same size and checksum: only where it lies is wrong
    (path / VECTORS).symlink_to(outside)
    with pytest.raises(IndexFormatError, match=r"leads outside .*build the index again"):
        open_index(path)
    (path / VECTORS).unlink()
    outside.rename(path / VECTORS)
    assert open_index(path).count == 20


def test_writing_through_a_link_replaces_the_folder_it_leads_to(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample(20)
    real = write_index(tmp_path / "real", manifest, flat(vectors), tiles)
    (tmp_path / "link").symlink_to(real)
    fewer, manifest_fewer, tiles_fewer = sample(12, seed=2)
    assert write_index(tmp_path / "link", manifest_fewer, flat(fewer), tiles_fewer) == real
    assert (tmp_path / "link").is_symlink() and open_index(tmp_path / "link").count == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # nothing left over beside them
