"""Inference backends: exported, verified against the model on the raster's own tiles, refused when they disagree,
recorded in the manifest; an index built with one backend searched with another. (Speed: scripts/bench_index.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from clip_search_plugin.engine.building.build import IndexResult, build_index
from clip_search_plugin.engine.embedding.backends.choice import FAST_FROM_TILES, candidates
from clip_search_plugin.engine.embedding.backends.export import FP32, INT8, export_folder, remember_file
from clip_search_plugin.engine.embedding.backends.runtime import openvino_device
from clip_search_plugin.engine.embedding.backends.verdicts import VERDICTS
from clip_search_plugin.engine.embedding.backends.verify import MIN_COSINE, agreement, same_top
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder, load_embedder
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.index.store import open_index
from clip_search_plugin.engine.query.searching import search, search_similar
from clip_search_plugin.engine.requests import IndexRequest
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import shared_raster

TILING = TilingSettings(tile_size=64, tile_units="px", overlap=0.5)


@pytest.fixture(autouse=True)
def backend_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Exports and verdicts of these tests in a folder of their own."""
    folder = tmp_path / "backends"
    monkeypatch.setenv("CLIP_SEARCH_BACKEND_CACHE", str(folder))
    yield folder


@pytest.fixture()
def model() -> ClipEmbedder:
    """A tiny model of this test's own (a choice of backend stays with the embedder that made it)."""
    return load_embedder(ModelSpec("tiny-random"), "cpu")


def build(model: ClipEmbedder, backend: str, out: Path, raster: str = "colorado_rgb_015m.tif") -> IndexResult:
    return build_index(shared_raster(raster), IndexSettings(tiling=TILING, model=ModelSpec("tiny-random"),
                                                            device="cpu", backend=backend), out, embedder=model)


def vectors(path: Path) -> np.ndarray:
    index = open_index(path)
    return np.asarray(index.vectors.reconstruct_n(0, index.count))


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_an_int8_build_agrees_with_the_model_and_the_manifest_says_how_it_was_made(
        model: ClipEmbedder, tmp_path: Path, backend_cache: Path) -> None:
    fast = build(model, "onnx-int8", tmp_path / "int8")
    own = build(model, "torch", tmp_path / "torch")
    assert (fast.backend, fast.backend_note, own.backend) == ("onnx-int8", "", "torch")
    recorded = manifest(fast.path)["backend"]
    assert recorded["name"] == "onnx-int8" and recorded["requested"] == "onnx-int8"
    assert recorded["agreement"]["tiles"] == 32 and recorded["agreement"]["min_cosine"] >= MIN_COSINE
    assert manifest(own.path)["backend"] == {"name": "torch", "requested": "torch"}
    whole = np.sum(vectors(fast.path) * vectors(own.path), axis=1)  # every tile of the raster, not the sample
    assert whole.min() >= MIN_COSINE
    folder = export_folder(model.identity, model.input_size)
    assert (folder / FP32).is_file() and (folder / INT8).is_file()
    verdicts = json.loads((folder / VERDICTS).read_text())
    assert verdicts["onnx-int8"]["passed"] and verdicts["torch"]["tiles_per_second"] > 0


def break_int8_export(folder: Path) -> None:
    """Scale the first float weight of the int8 export by -3, as a faulty exporter might write it, and record the
    file as made (so only the verification can tell)."""
    graph = onnx.load(str(folder / INT8))
    first = next(t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2)
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * -3.0, first.name))
    onnx.save(graph, str(folder / INT8))
    remember_file(folder, INT8)
    (folder / VERDICTS).unlink()


def test_a_broken_export_is_refused_the_model_itself_is_used_and_the_build_says_so(
        model: ClipEmbedder, tmp_path: Path) -> None:
    build(model, "onnx-int8", tmp_path / "first")
    folder = export_folder(model.identity, model.input_size)
    break_int8_export(folder)
    fresh = load_embedder(ModelSpec("tiny-random"), "cpu")
    refused = build(fresh, "onnx-int8", tmp_path / "refused")
    assert refused.backend == "torch"
    assert "onnx-int8 refused: its vectors differ from the model's" in refused.backend_note
    assert refused.backend_note.endswith("embedding with torch")
    assert manifest(refused.path)["backend"]["note"] == refused.backend_note
    verdict = json.loads((folder / VERDICTS).read_text())["onnx-int8"]
    assert not verdict["passed"] and verdict["agreement"]["min_cosine"] < MIN_COSINE
    automatic = build(fresh, "auto", tmp_path / "auto")  # the fp32 export still agrees: auto takes it or the model
    assert automatic.backend in ("onnx", "torch") and "onnx-int8 refused" in automatic.backend_note
    assert np.sum(vectors(automatic.path) * vectors(refused.path), axis=1).min() >= MIN_COSINE


def test_a_damaged_export_is_made_again_and_verified(model: ClipEmbedder, tmp_path: Path) -> None:
    build(model, "onnx", tmp_path / "first")
    folder = export_folder(model.identity, model.input_size)
    exported = (folder / FP32).read_bytes()
    (folder / FP32).write_bytes(exported[: len(exported) // 2])  # cut short, as by a full disk
    again = build(load_embedder(ModelSpec("tiny-random"), "cpu"), "onnx", tmp_path / "again")
    assert again.backend == "onnx" and (folder / FP32).read_bytes() == exported


def test_an_index_built_with_one_backend_is_searched_with_another(model: ClipEmbedder, tmp_path: Path) -> None:
    fast = open_index(build(model, "onnx-int8", tmp_path / "int8").path)
    own = open_index(build(model, "torch", tmp_path / "torch").path)
    other = load_embedder(ModelSpec("tiny-random"), "cpu")  # as after a restart (text: the verified int8 tower)
    for query in ("a road", "houses", "a river"):
        by_fast = search(fast, other, query, top_k=5)
        by_own = search(own, model, query, top_k=5)
        assert by_fast.model == by_own.model and len(by_fast.regions) == len(by_own.regions) == 5
        # random weights score tiles within a hair of each other, so places may trade ranks; scores may not move
        assert np.allclose([r.score for r in by_fast.regions], [r.score for r in by_own.regions], atol=0.01)
    box = search(own, model, "houses", top_k=1).regions[0].bounds  # an example box drawn on the map
    assert model.backend.name == "torch"  # the last build asked for the model itself
    by_model = search_similar(own, model, bbox=box, top_k=3)
    model.use_backend("onnx-int8", lambda: np.zeros((0, 64, 64, 3), np.uint8))
    assert model.backend.name == "onnx-int8"  # verified before on this computer: no sample needed
    by_int8 = search_similar(own, model, bbox=box, top_k=3)  # the box's pixels embedded with int8
    assert np.allclose([r.score for r in by_int8.regions], [r.score for r in by_model.regions], atol=0.01)


def test_auto_keeps_the_model_for_a_small_first_build_and_refuses_unknown_backends(
        model: ClipEmbedder, tmp_path: Path, backend_cache: Path) -> None:
    small = build(model, "auto", tmp_path / "small")  # 77 tiles: not worth an export's wait
    assert small.tile_count < FAST_FROM_TILES and small.backend == "torch" and not backend_cache.exists()
    with pytest.raises(InputError, match="Unknown backend 'fast'; use one of auto, torch, onnx, onnx-int8"):
        IndexRequest(raster="x.tif", backend="fast")
    with pytest.raises(InputError, match="runs on the CPU"):
        candidates("onnx-int8", "cuda")
    assert candidates("auto", "cuda") == [] and candidates("torch", "cpu") == []
    assert candidates("auto", "cpu")[-2:] == ["onnx-int8", "onnx"]


def test_agreement_needs_close_vectors_and_the_same_top_tiles_ties_aside() -> None:
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((40, 16)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    queries = reference[:3]
    assert agreement(reference, reference.copy(), queries).passed
    swapped = reference.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # two tiles trade their vectors: each tile's vector is wrong
    found = agreement(reference, swapped, queries)
    assert not found.passed and "lowest cosine" in found.reason()
    scores = np.linspace(1.0, 0.0, 20)
    query = np.ones(1)
    tied = scores.copy()
    tied[10] = tied[9] + 1e-6  # the 11th a hair above the 10th: a tie when the model's own scores are this close
    assert same_top(np.c_[np.r_[scores[:9], scores[9], scores[9] - 0.004, scores[11:]]], np.c_[tied], query)
    assert not same_top(np.c_[np.r_[scores[:9], scores[9], scores[9] - 0.006, scores[11:]]], np.c_[tied], query)
    assert not same_top(np.c_[scores], np.c_[scores[::-1]], query)


@pytest.mark.skipif(openvino_device() is None, reason="OpenVINO is not installed in the engine environment")
def test_openvino_runs_the_export_and_agrees(model: ClipEmbedder, tmp_path: Path) -> None:
    result = build(model, "openvino", tmp_path / "ov")
    assert result.backend == "openvino" and not result.backend_note
    assert manifest(result.path)["backend"]["agreement"]["min_cosine"] >= MIN_COSINE
