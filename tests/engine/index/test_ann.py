"""The approximate (IVF) index of large indexes: calibrated recall, exact areas, readable vectors, checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import IndexFormatError
from clip_search_plugin.engine.index.ann import CALIBRATION_CONCEPTS, TARGET_RECALL, cell_count
from clip_search_plugin.engine.query.heatmap import tile_scores
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import shared_raster

SETTINGS = IndexSettings(tiling=TilingSettings(tile_size=24, overlap=0.5), model=ModelSpec("tiny-random"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, tiny: ClipEmbedder) -> tuple[object, object]:
    """The same raster indexed exactly and approximately (the threshold lowered so that it applies)."""
    raster = shared_raster("drone_rgba_alpha.tif")
    folder = tmp_path_factory.mktemp("ann")
    exact = build_index(raster, SETTINGS, folder / "exact", embedder=tiny)
    approximate = build_index(raster, SETTINGS, folder / "ivf", embedder=tiny, approximate_from=100)
    return open_index(exact.path), open_index(approximate.path)


def test_cells_grow_with_the_square_root_of_the_index() -> None:
    assert [cell_count(n) for n in (100, 10_000, 1_000_000, 10**9)] == [64, 256, 2048, 65536]


def clustered(n: int, dim: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres (as image embeddings cluster), and the centres."""
    from clip_search_plugin.engine.embedding.embedder import normalise_rows

    rng = np.random.default_rng(seed)
    middle = normalise_rows(rng.normal(size=(centres, dim)).astype(np.float32))
    points = middle[rng.integers(0, centres, size=n)] + rng.normal(scale=0.5 / np.sqrt(dim), size=(n, dim))
    return normalise_rows(points.astype(np.float32)), middle


def test_calibration_probes_few_cells_on_structured_vectors_and_fresh_queries_keep_the_recall() -> None:
    import faiss

    from clip_search_plugin.engine.embedding.embedder import normalise_rows
    from clip_search_plugin.engine.index.ann import build_ivf, exact_ids, recall

    vectors, middle = clustered(40_000, 64, 300, seed=1)
    rng = np.random.default_rng(2)
    calibration = normalise_rows(middle[:30] + rng.normal(scale=0.3 / 8, size=(30, 64)).astype(np.float32))
    exact = faiss.IndexFlatIP(64)
    exact.add(vectors)
    ivf, settings = build_ivf(exact, calibration)
    assert settings["nprobe"] < settings["nlist"] // 4  # far fewer cells than all
    fresh = normalise_rows(middle[100:160] + rng.normal(scale=0.3 / 8, size=(60, 64)).astype(np.float32))
    assert recall(exact_ids(ivf, fresh, 100), exact_ids(exact, fresh, 100)) >= 0.97  # queries it was not calibrated on


def test_an_approximate_index_keeps_its_measured_recall(pair: tuple[object, object], tiny: ClipEmbedder) -> None:
    exact, approximate = pair
    assert exact.manifest["search"] == {"kind": "exact"}  # type: ignore[attr-defined]
    settings = approximate.manifest["search"]  # type: ignore[attr-defined]
    assert settings["kind"] == "ivf" and approximate.count > 1000  # type: ignore[attr-defined]
    assert approximate.vectors.nprobe == settings["nprobe"] <= settings["nlist"]  # type: ignore[attr-defined]
    # (the tiny random model's vectors have no structure, so here it may have to probe every cell)
    assert min(settings["recall_text"], settings["recall_image"]) >= TARGET_RECALL
    # the same recall through the real search path, for the calibration concepts, top 100 tiles
    found = []
    for concept in CALIBRATION_CONCEPTS:
        truth = {h.tile_id for h in search(exact, tiny, concept, top_k=100, merge=False).hits}  # type: ignore[arg-type]
        got = {h.tile_id for h in search(approximate, tiny, concept, top_k=100, merge=False).hits}  # type: ignore[arg-type]
        found.append(len(truth & got) / len(truth))
    assert np.mean(found) >= TARGET_RECALL


def test_areas_examples_and_heatmaps_stay_exact(pair: tuple[object, object], tiny: ClipEmbedder) -> None:
    exact, approximate = pair
    box = exact.raster.bounds()  # type: ignore[attr-defined]
    corner = (box[0], box[1], box[0] + (box[2] - box[0]) / 4, box[1] + (box[3] - box[1]) / 4)
    a = search(exact, tiny, "a car", top_k=30, area=corner, merge=False)  # type: ignore[arg-type]
    b = search(approximate, tiny, "a car", top_k=30, area=corner, merge=False)  # type: ignore[arg-type]
    assert [h.tile_id for h in a.hits] == [h.tile_id for h in b.hits]  # a small area is searched exactly
    np.testing.assert_allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=1e-5)
    # stored vectors are readable by id (direct map): examples, feedback and heatmaps still work
    ids = np.arange(0, exact.count, 97)  # type: ignore[attr-defined]
    np.testing.assert_allclose(approximate.vectors.reconstruct_batch(ids),  # type: ignore[attr-defined]
                               exact.vectors.reconstruct_batch(ids), atol=1e-6)  # type: ignore[attr-defined]
    similar = search_similar(approximate, tile_ids=[5], top_k=10)  # type: ignore[arg-type]
    assert similar.hits and 5 not in {h.tile_id for h in similar.hits}
    query = tiny.encode_text(["a roof"])[0]
    np.testing.assert_allclose(tile_scores(approximate, query), tile_scores(exact, query), atol=1e-5)  # type: ignore[arg-type]


def test_a_manifest_that_does_not_match_its_vectors_is_refused(pair: tuple[object, object], tmp_path: Path) -> None:
    import shutil

    _, approximate = pair
    copy = tmp_path / "ivf"
    shutil.copytree(approximate.path, copy)  # type: ignore[attr-defined]
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["search"] = {"kind": "exact"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="search structure"):
        open_index(copy)
