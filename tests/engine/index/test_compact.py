"""The compact index of very large indexes: recall of the re-scored codes, stored and reopened through the
engine's own build and search paths, damaged float16 vectors refused, older indexes unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder, normalise_rows
from clip_search_plugin.engine.errors import IndexFormatError
from clip_search_plugin.engine.index import compact
from clip_search_plugin.engine.index.compact import FLOAT16_FILE, CompactIndex, build_compact, exact_top, recall
from clip_search_plugin.engine.index.store import write_index
from clip_search_plugin.engine.query import vectors as query_vectors
from clip_search_plugin.engine.query.vectors import top_hits
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import shared_raster
from .test_index import flat, sample

SETTINGS = IndexSettings(tiling=TilingSettings(tile_size=24, overlap=0.5), model=ModelSpec("tiny-random"))


def clustered_blocks(n: int, dim: int, block: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unit vectors around 200 random centres, in blocks, and queries: half offset from the data (as text
    vectors lie apart from image vectors), half near stored vectors."""
    rng = np.random.default_rng(seed)
    centres = normalise_rows(rng.normal(size=(200, dim)).astype(np.float32))
    blocks = [normalise_rows(centres[rng.integers(0, 200, size=min(block, n - s))]
                             + rng.normal(scale=0.6 / np.sqrt(dim), size=(min(block, n - s), dim)).astype(np.float32))
              for s in range(0, n, block)]
    gap = normalise_rows(rng.normal(size=(1, dim)).astype(np.float32))
    text = normalise_rows(0.35 * centres[rng.integers(0, 200, size=20)] + 0.9 * gap)
    near = normalise_rows(blocks[0][:20] + rng.normal(scale=0.2 / np.sqrt(dim), size=(20, dim)).astype(np.float32))
    return np.concatenate([text, near]), blocks


def test_re_scored_codes_find_the_true_top_20_from_streamed_blocks(tmp_path: Path) -> None:
    queries, blocks = clustered_blocks(60_000, 128, 10_000, seed=3)
    streamed = iter(blocks)  # a source read once, block by block
    index = build_compact(blocks[0][:20_000], streamed, 60_000, tmp_path)
    settings = compact.calibrate(index, queries[:10])
    assert settings["kind"] == "compact" and settings["nprobe"] < settings["nlist"] // 2  # far fewer cells than all
    truth = exact_top(index, queries, 20)
    _, found = index.search(queries, 20)
    assert recall(found, truth) >= 0.95
    # scores are exact (float16 rows) for what is returned, not the codes' estimates
    scores, ids = index.search(queries[:1], 5)
    np.testing.assert_allclose(scores[0], index.reconstruct_batch(ids[0]) @ queries[0], atol=1e-5)
    np.testing.assert_allclose(index.reconstruct_n(10_000, 3), blocks[1][:3], atol=1e-3)  # float16 copies
    # fewer vectors than announced: refused, nothing half-made kept
    with pytest.raises(ValueError, match="expected 60000"):
        build_compact(blocks[0][:20_000], iter(blocks[:2]), 60_000, tmp_path / "short")


def test_calibration_takes_the_cheapest_probes_and_candidates_that_reach_the_target(tmp_path: Path) -> None:
    queries, blocks = clustered_blocks(60_000, 128, 10_000, seed=5)
    index = build_compact(blocks[0][:20_000], iter(blocks), 60_000, tmp_path)
    settings = compact.calibrate(index, queries[:10])
    chosen = (settings["nprobe"], settings["candidates"])
    measure = compact._recall_of(index, queries[:10], 20)  # the same queries and truth as calibration's
    assert min(measure(*chosen).values()) >= compact.TARGET_RECALL
    assert min(settings["recall_text"], settings["recall_image"]) >= compact.TARGET_RECALL
    # half the probes or half the candidates (each cheaper) no longer reach it
    cheaper = [(chosen[0] // 2, chosen[1])] if chosen[0] > 1 else []
    cheaper += [(chosen[0], chosen[1] // 2)] if chosen[1] > compact.CANDIDATES else []
    for pair in cheaper:
        assert compact.search_cost_ms(index, *pair) < compact.search_cost_ms(index, *chosen)
        assert min(measure(*pair).values()) < compact.TARGET_RECALL, pair
    # the estimate grows with both
    assert compact.search_cost_ms(index, 2, 256) > compact.search_cost_ms(index, 1, 256)
    assert compact.search_cost_ms(index, 1, 512) > compact.search_cost_ms(index, 1, 256)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny: ClipEmbedder) -> tuple[object, object]:
    """The same raster indexed exactly and as a compact index (both thresholds lowered so that it applies)."""
    raster = shared_raster("drone_rgba_alpha.tif")
    folder = tmp_path_factory.mktemp("compact")
    exact = build_index(raster, SETTINGS, folder / "exact", embedder=tiny)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIP_SEARCH_CACHE", str(folder / "cache"))
        patch.setattr(compact, "COMPACT_FROM", 500)
        small = build_index(raster, SETTINGS, folder / "compact", embedder=tiny, approximate_from=100)
    return open_index(exact.path), open_index(small.path)


def test_a_large_build_is_stored_compact_and_searched_through_the_engine(
        built: tuple[object, object], tiny: ClipEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    exact, small = built
    settings = small.manifest["search"]  # type: ignore[attr-defined]
    assert settings["kind"] == "compact" and settings["compact_from"] == 500 and settings["candidates"] > 0
    assert isinstance(small.vectors, CompactIndex) and small.vectors.nprobe == settings["nprobe"]  # type: ignore[attr-defined]
    assert FLOAT16_FILE in small.manifest["files"] and (small.path / FLOAT16_FILE).is_file()  # type: ignore[attr-defined]
    assert min(settings["recall_text"], settings["recall_image"]) >= compact.TARGET_RECALL
    truth = {h.tile_id for h in search(exact, tiny, "a roof", top_k=20, merge=False).hits}  # type: ignore[arg-type]
    got = {h.tile_id for h in search(small, tiny, "a roof", top_k=20, merge=False).hits}  # type: ignore[arg-type]
    assert len(truth & got) >= 0.9 * len(truth)
    # an area: its tiles searched among the candidates the selector lets through
    box = exact.raster.bounds()  # type: ignore[attr-defined]
    half = (box[0], box[1], (box[0] + box[2]) / 2, box[3])
    inside = search(small, tiny, "a car", top_k=10, area=half, merge=False)  # type: ignore[arg-type]
    reference = search(exact, tiny, "a car", top_k=10, area=half, merge=False)  # type: ignore[arg-type]
    assert inside.hits and {h.tile_id for h in inside.hits} <= set(range(small.count))  # type: ignore[attr-defined]
    assert len({h.tile_id for h in inside.hits} & {h.tile_id for h in reference.hits}) >= 8
    # an area of more tiles than are scored one by one: the candidates pass Faiss's id selector, then re-scored
    monkeypatch.setattr(query_vectors, "EXACT_SUBSET", 10)
    allowed = np.zeros(small.count, dtype=bool)  # type: ignore[attr-defined]
    allowed[::3] = True
    query = tiny.encode_text(["a car"])[0]
    hits = top_hits(small.vectors, query, 10, allowed=allowed)  # type: ignore[attr-defined]
    assert len(hits) == 10 and all(i % 3 == 0 for i, _ in hits)
    ids = np.array([i for i, _ in hits])
    np.testing.assert_allclose([s for _, s in hits], small.vectors.reconstruct_batch(ids) @ query,  # type: ignore[attr-defined]
                               atol=1e-5)
    similar = search_similar(small, tile_ids=[5], top_k=10)  # type: ignore[arg-type]
    assert similar.hits and 5 not in {h.tile_id for h in similar.hits}


def test_a_truncated_or_damaged_float16_file_is_refused(built: tuple[object, object], tmp_path: Path) -> None:
    _, small = built
    truncated = tmp_path / "truncated"
    shutil.copytree(small.path, truncated)  # type: ignore[attr-defined]
    data = (truncated / FLOAT16_FILE).read_bytes()
    (truncated / FLOAT16_FILE).write_bytes(data[:-4096])
    with pytest.raises(IndexFormatError, match=r"vectors16\.npy is missing or truncated; build the index again"):
        open_index(truncated)
    damaged = tmp_path / "damaged"
    shutil.copytree(small.path, damaged)  # type: ignore[attr-defined]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (damaged / FLOAT16_FILE).write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match=r"vectors16\.npy does not match its checksum"):
        open_index(damaged)
    # a file of the right size whose header is not float16 vectors of the index's shape
    (damaged / FLOAT16_FILE).write_bytes(data.replace(b"'<f2'", b"'<i2'", 1))
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["files"][FLOAT16_FILE]["sha256"] = hashlib.sha256((damaged / FLOAT16_FILE).read_bytes()).hexdigest()
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="do not match its codes"):
        open_index(damaged)


def test_big_files_are_checked_by_a_sampled_checksum(built: tuple[object, object], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, small = built
    entry = small.manifest["files"][FLOAT16_FILE]  # type: ignore[attr-defined]
    assert entry["sample_sha256"] != entry["sha256"]
    copy = tmp_path / "copy"
    shutil.copytree(small.path, copy)  # type: ignore[attr-defined]
    data = bytearray((copy / FLOAT16_FILE).read_bytes())
    data[-10] ^= 0xFF  # inside the last sampled piece
    (copy / FLOAT16_FILE).write_bytes(bytes(data))
    from clip_search_plugin.engine.index import store

    monkeypatch.setattr(store, "HASH_WHOLE_UPTO", 1024)  # as if the file were gigabytes
    with pytest.raises(IndexFormatError, match="does not match its checksum"):
        open_index(copy)


def test_an_exact_index_is_written_and_opened_as_before(tmp_path: Path) -> None:
    vectors, manifest, tiles = sample(300)
    path = write_index(tmp_path / "exact", dict(manifest, search={"kind": "exact"}), flat(vectors), tiles)
    written = json.loads((path / "manifest.json").read_text())
    assert set(written["files"]) == {"vectors.faiss", "tiles.npy"}
    assert all(set(entry) == {"size", "sha256"} for entry in written["files"].values())
    opened = open_index(path)
    assert not isinstance(opened.vectors, CompactIndex) and opened.vectors.ntotal == 300
    # a manifest that claims a compact index over plain vectors is refused
    written["search"] = {"kind": "compact", "nprobe": 4}
    (path / "manifest.json").write_text(json.dumps(written))
    with pytest.raises(IndexFormatError, match="search structure"):
        open_index(path)
