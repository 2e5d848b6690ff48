"""Queries through the backend a build chose: the text tower exported and verified with the model's weights, used
by later searches of that model (in a new process too), refused when its vectors disagree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from clip_search_plugin.engine.embedding.backends.export import TEXT_INT8, export_folder, remember_file
from clip_search_plugin.engine.embedding.backends.text import PROMPTS
from clip_search_plugin.engine.embedding.backends.verdicts import VERDICTS
from clip_search_plugin.engine.embedding.backends.verify import MIN_COSINE
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder, load_embedder
from clip_search_plugin.engine.index.store import open_index
from clip_search_plugin.engine.query.searching import search
from clip_search_plugin.engine.settings import ModelSpec

from .test_backends import build

QUERIES = ["a road", "houses", "a river", "bare ground next to a parking lot"]


@pytest.fixture()
def model() -> ClipEmbedder:
    return load_embedder(ModelSpec("tiny-random"), "cpu")


def verdicts(model: ClipEmbedder) -> dict:
    return json.loads((export_folder(model.identity, model.input_size) / VERDICTS).read_text())


def test_an_int8_build_verifies_its_text_tower_and_later_queries_use_it(model: ClipEmbedder, tmp_path: Path) -> None:
    index = open_index(build(model, "torch", tmp_path / "torch").path)
    by_own = search(index, model, "houses", top_k=5)  # nothing verified on this computer yet: the model itself
    assert model.text_tower is None
    build(model, "onnx-int8", tmp_path / "int8")
    verdict = verdicts(model)["text:onnx-int8"]
    assert verdict["passed"] and verdict["agreement"]["prompts"] == len(PROMPTS)
    assert verdict["agreement"]["min_cosine"] >= MIN_COSINE
    assert model.text_tower is None and model.fast_text() is not None  # this process: loaded at its next query
    restarted = load_embedder(ModelSpec("tiny-random"), "cpu")  # a later process: from the recorded verdict
    fast = restarted.encode_text(QUERIES)
    own = restarted.encode_text_with(None, QUERIES)
    assert restarted.text_tower is not None and not np.array_equal(fast, own)  # int8, not the model
    assert np.sum(fast * own, axis=1).min() >= MIN_COSINE
    by_fast = search(index, restarted, "houses", top_k=5)
    assert np.allclose([r.score for r in by_fast.regions], [r.score for r in by_own.regions], atol=0.01)


def test_a_torch_build_makes_no_text_tower(model: ClipEmbedder, tmp_path: Path) -> None:
    build(model, "torch", tmp_path / "torch")
    assert model.text_tower is None and not (export_folder(model.identity, model.input_size) / TEXT_INT8).exists()


def test_a_broken_text_tower_is_refused_and_queries_stay_with_the_model(model: ClipEmbedder, tmp_path: Path) -> None:
    build(model, "onnx-int8", tmp_path / "first")
    folder = export_folder(model.identity, model.input_size)
    graph = onnx.load(str(folder / TEXT_INT8))  # a weight scaled by -3, the file recorded as made
    weight = next(t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * -3.0, weight.name))
    onnx.save(graph, str(folder / TEXT_INT8))
    remember_file(folder, TEXT_INT8)
    fresh = load_embedder(ModelSpec("tiny-random"), "cpu")
    assert fresh.fast_text() is None  # its recorded verdict was on another file: not trusted
    again = build(fresh, "onnx-int8", tmp_path / "again")
    assert again.backend == "onnx-int8"  # the image tower still verifies; only the text tower is refused
    verdict = verdicts(model)["text:onnx-int8"]
    assert not verdict["passed"] and "differ from the model's" in verdict["reason"]
    assert fresh.fast_text() is None
    assert load_embedder(ModelSpec("tiny-random"), "cpu").fast_text() is None
