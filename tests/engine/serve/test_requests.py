"""Typed requests: each one's JSON round trip, the refusals and their messages, the labels of searches, the one
default model; the engine reading them (Service, and a real engine process answering a bad request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.embedding.presets import DEFAULT_PRESET, PRESETS
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.requests import (
    REQUESTS,
    CollectRequest,
    EvaluateRequest,
    IndexRequest,
    InfoRequest,
    LocateRequest,
    Request,
    ResultOptions,
    SearchRequest,
    SimilarRequest,
    SurveyRequest,
    read_request,
    search_label,
    similar_label,
)
from clip_search_plugin.engine.serve.service import Service
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import write_geotiff
from .test_worker import Engine

SQUARE = [{"type": "Polygon", "coordinates": [[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]]]}]
EVERY_KIND: list[Request] = [
    IndexRequest(raster="r.tif", model=ModelSpec("tiny-random", "none"), device="cpu", batch_size=8, output="ix",
                 tiling=TilingSettings(tile_size=60, tile_units="m", overlap=0.25, scales=(1.0, 2.0),
                                       max_empty_fraction=0.5, bands=(3, 2, 1), area=(0.0, 0.0, 10.0, 10.0))),
    IndexRequest(raster="r.tif", tiling=TilingSettings(area=SQUARE)),
    LocateRequest(raster="r.tif", model=ModelSpec("ViT-B-32", "openai"), tiling=TilingSettings(tile_size=112)),
    SurveyRequest(raster="type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19", auth={"user": "u", "password": "p"},
                  tiling=TilingSettings(area=(0.0, 0.0, 10.0, 10.0), resolution=0.5)),
    CollectRequest(files=("a.tif", "b.tif"), label="sheets"),
    SearchRequest(index="ix", query="red roofs", templates=("a {} from above", "{} on a map"), negative="tents",
                  negative_weight=0.3, relevant_ids=(1, 2), irrelevant_ids=(3,),
                  options=ResultOptions(top_k=5, threshold=0.2, min_relative=1.5, area=(0.0, 0.0, 1.0, 1.0),
                                        merge=False, rerank=False, heatmap="heat.tif")),
    SearchRequest(index="ix", query="pool", templates="raw", options=ResultOptions(area=SQUARE)),
    SimilarRequest(index="ix", tile_ids=(4, 5), exclude_examples=False, options=ResultOptions(top_k=3)),
    SimilarRequest(index="ix", bbox=((0.0, 0.0, 1.0, 1.0), (2.0, 2.0, 3.0, 3.0)), label="my two fields"),
    InfoRequest(index="ix"),
    EvaluateRequest(index="ix", labels="labels.gpkg", output="report", class_field="kind", queries="pond = a pond",
                    template_sets=("aerial", "raw"), thresholds=(None, 0.2), ks=(5, 10), top_k=10, min_overlap=0.4,
                    random_runs=3),
]


@pytest.mark.parametrize("request_", EVERY_KIND, ids=lambda r: type(r).__name__)
def test_every_request_reads_back_the_same_from_its_json(request_: Request) -> None:
    sent = json.loads(json.dumps(request_.to_params(), allow_nan=False))  # as the engine process receives it
    assert read_request(request_.method, sent) == request_
    assert type(request_).from_params(sent) == request_


def test_every_kind_of_request_is_covered_and_read_by_its_method() -> None:
    assert {type(r) for r in EVERY_KIND} == set(REQUESTS.values())
    assert all(REQUESTS[r.method] is type(r) for r in EVERY_KIND)


def test_a_search_sends_its_result_options_flat_beside_its_own() -> None:
    params = SearchRequest(index="ix", query="pool", options=ResultOptions(top_k=7, rerank=False)).to_params()
    assert params["top_k"] == 7 and params["rerank"] is False and "options" not in params
    assert params == {"index": "ix", "query": "pool", "templates": "default", "negative": None,
                      "negative_weight": 0.5, "relevant_ids": [], "irrelevant_ids": [], "top_k": 7,
                      "threshold": None, "min_relative": None, "area": None, "merge": True, "rerank": False,
                      "heatmap": None}


LONG = "pool " * 250
REFUSALS: list[tuple[Any, Any, str]] = [
    ("search", {"index": "ix", "query": "   "}, "The query is empty; describe what to find"),
    ("search", {"index": "ix", "query": LONG}, "The query is 1249 characters long; keep it under 1000"),
    ("search", {"index": "ix", "query": 7}, "The query must be text."),
    ("search", {"index": "ix"}, "Give the text to search for ('query' parameter)."),
    ("search", {"query": "pool"}, "Give the index folder ('index' parameter)."),
    ("similar", {"index": "", "tile_ids": [1]}, "Give the index folder ('index' parameter)."),
    ("info", {}, "Give the index folder ('index' parameter)."),
    ("index", {"output": "ix"}, "Give the raster to index ('raster' parameter)."),
    ("locate", {"raster": None}, "Give the raster ('raster' parameter)."),
    ("search", {"index": "ix", "query": "pool", "colour": "red", "depth": 2},
     "Unknown parameter(s) for search: colour, depth; use area, heatmap, index, irrelevant_ids, merge, min_relative, "
     "negative, negative_weight, query, relevant_ids, rerank, templates, threshold, top_k."),
    ("similar", {"index": "ix", "tile_ids": [1], "options": {"top_k": 3}}, "Unknown parameter(s) for similar: options"),
    ("search", {"index": "ix", "query": "pool", "rerank": "no"}, "rerank must be true or false; got 'no'."),
    ("similar", {"index": "ix", "tile_ids": [1], "merge": 1}, "merge must be true or false; got 1."),
    ("search", {"index": "ix", "query": "pool", "top_k": 0}, "top-k must be a whole number of at least 1; got 0."),
    ("search", {"index": "ix", "query": "pool", "top_k": "many"}, "top_k must be a int; got 'many'."),
    ("search", {"index": "ix", "query": "pool", "threshold": 2},
     "The score threshold is a cosine similarity between -1 and 1; got 2.0."),
    ("search", {"index": "ix", "query": "pool", "relevant_ids": [1, "2"]}, "relevant_ids must be a list of tile ids"),
    ("search", {"index": "ix", "query": "pool", "templates": ["a photo of"]}, "line 1"),
    ("similar", {"index": "ix", "bbox": [[1.0, 0.0, 0.0, 1.0]]},
     "Each example box is xmin, ymin, xmax, ymax with min below max"),
    ("similar", {"index": "ix", "bbox": [0.0, 0.0, 1.0]}, "Each example box is xmin, ymin, xmax, ymax"),
    ("similar", {"index": "ix", "bbox": "somewhere"}, "bbox must be xmin, ymin, xmax, ymax"),
    ("similar", {"index": "ix", "tile_ids": [1], "bbox": [0.0, 0.0, 1.0, 1.0]},
     "Give the examples as tile ids or as boxes (one of them)."),
    ("similar", {"index": "ix"}, "Give the examples as tile ids or as boxes (one of them)."),
    ("similar", {"index": "ix", "tile_ids": [], "bbox": []}, "Give the examples as tile ids or as boxes"),
    ("index", {"raster": "r.tif", "model": "RemoteCLIP"}, "model must be an object with 'name'"),
    ("index", {"raster": "r.tif", "tiling": {"overlap": 1.5}}, "Overlap must be at least 0 and below 1"),
    ("index", {"raster": "r.tif", "tiling": {"tile_size": "big"}}, "tiling has a value of the wrong kind"),
    ("teleport", {}, "Unknown request 'teleport'; use one of index, locate, survey, collect, search, similar, info, "
                       "evaluate."),
    (None, {}, "Unknown request None"),
    ("info", ["ix"], "Request parameters must be a JSON object."),
]
EVALUATE = {"index": "ix", "labels": "labels.gpkg", "output": "report"}
REFUSALS += [
    ("evaluate", {**EVALUATE, "ks": [0]}, "ks must be whole numbers of at least 1, e.g. [5, 10, 20]; got [0]."),
    ("evaluate", {**EVALUATE, "ks": []}, "ks must be whole numbers of at least 1"),
    ("evaluate", {**EVALUATE, "ks": [5, True]}, "ks must be whole numbers of at least 1"),
    ("evaluate", {**EVALUATE, "ks": [5, 10], "top_k": 3}, "top_k (3) must be at least the largest k (10)."),
    ("evaluate", {**EVALUATE, "top_k": None}, "top_k (None) must be at least the largest k (20)."),
    ("evaluate", {**EVALUATE, "min_overlap": 0},
     "min_overlap is a share of a result's area, above 0 and at most 1; got 0.0."),
    ("evaluate", {**EVALUATE, "min_overlap": 1.5}, "above 0 and at most 1; got 1.5."),
    ("evaluate", {**EVALUATE, "random_runs": 0}, "random_runs must be a whole number of at least 1; got 0."),
    ("evaluate", {**EVALUATE, "template_sets": ["fancy"]}, "template_sets must be a list of aerial, raw"),
    ("evaluate", {**EVALUATE, "thresholds": 0.5}, "thresholds must be a list of numbers"),
    ("evaluate", {"index": "ix", "labels": "labels.gpkg"},
     "Give the label polygons ('labels') and a folder for the reports ('output')."),
]


@pytest.mark.parametrize(("method", "params", "message"), REFUSALS)
def test_bad_requests_are_refused_with_what_to_give(method: Any, params: Any, message: str) -> None:
    with pytest.raises(InputError) as refused:
        read_request(method, params)
    assert message in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


def test_requests_made_in_code_are_checked_as_when_read() -> None:
    with pytest.raises(InputError, match="The query is empty"):
        SearchRequest(index="ix", query=" ")
    with pytest.raises(InputError, match="top-k must be a whole number of at least 1"):
        ResultOptions(top_k=0)
    with pytest.raises(InputError, match="one of them"):
        SimilarRequest(index="ix")
    with pytest.raises(InputError, match="at least the largest k"):
        EvaluateRequest(index="ix", labels="l.gpkg", output="out", top_k=10)  # ks up to 20


def test_but_not_in_the_query_becomes_the_negative_text_and_the_label_says_so() -> None:
    request = SearchRequest(index="ix", query="  ships   BUT not  boats ")
    assert (request.query, request.negative) == ("ships", "boats")
    assert request.label == "ships but not boats"
    with_feedback = SearchRequest(index="ix", query="ships but not boats", relevant_ids=(4, 5), irrelevant_ids=(6,))
    assert with_feedback.label == "ships but not boats (feedback: 2 relevant, 1 not)"
    given = SearchRequest(index="ix", query="bread but not butter", negative="crumbs")  # the negative as given
    assert (given.query, given.negative) == ("bread but not butter", "crumbs")
    assert SearchRequest(index="ix", query="but not this").negative is None
    assert search_label("ships", "boats", (1,), ()) == "ships but not boats (feedback: 1 relevant, 0 not)"


def test_searches_by_example_are_named_by_their_examples_unless_named() -> None:
    assert SimilarRequest(index="ix", tile_ids=(4, 5)).label == "similar to tile(s) 4, 5"
    assert SimilarRequest(index="ix", bbox=((0.5, 0, 1.25, 2),)).label == "similar to box 0.5, 0, 1.25, 2"
    one_box = read_request("similar", {"index": "ix", "bbox": [0.5, 0, 1.25, 2]})  # one box may come unlisted
    assert isinstance(one_box, SimilarRequest) and one_box.bbox == ((0.5, 0.0, 1.25, 2.0),)
    assert one_box.label == "similar to box 0.5, 0, 1.25, 2"
    assert SimilarRequest(index="ix", bbox=((0, 0, 1, 1), (2, 2, 3, 3))).label == "similar to 2 example boxes"
    assert SimilarRequest(index="ix", tile_ids=(4,), label="my field").label == "my field"
    assert similar_label(tile_ids=[7]) == "similar to tile(s) 7"


def test_the_one_default_model_is_the_registrys_default_preset() -> None:
    assert ModelSpec() == ModelSpec(DEFAULT_PRESET, None) and DEFAULT_PRESET in PRESETS
    assert IndexSettings().model == ModelSpec()
    assert IndexRequest(raster="r.tif").model == ModelSpec() == LocateRequest(raster="r.tif").model
    read = read_request("index", {"raster": "r.tif", "model": {"pretrained": "w.pt"}})
    assert isinstance(read, IndexRequest) and read.model == ModelSpec(DEFAULT_PRESET, "w.pt")


@pytest.fixture
def small_index(tiny: ClipEmbedder, tmp_path: Path) -> Path:
    pixels = np.random.default_rng(3).integers(1, 255, size=(3, 96, 96)).astype("uint8")
    raster = write_geotiff(tmp_path / "r.tif", pixels)
    settings = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"))
    return build_index(raster, settings, tmp_path / "ix", embedder=tiny).path


def test_the_python_api_and_the_engine_name_a_search_alike(small_index: Path, tiny: ClipEmbedder) -> None:
    service, index = Service("cpu"), open_index(small_index)
    quiet = (lambda done, total: None, lambda: False)
    typed = SearchRequest(index=str(small_index), query="ships but not boats", relevant_ids=(0,), irrelevant_ids=(1,))
    answered = service.handle("search", typed.to_params(), *quiet)
    searched = search(index, tiny, "ships but not boats", relevant_ids=[0], irrelevant_ids=[1])
    assert answered["query"] == searched.query == typed.label == "ships but not boats (feedback: 1 relevant, 1 not)"
    assert [r["score"] for r in answered["regions"]] == pytest.approx([r.score for r in searched.regions])
    similar = service.handle("similar", {"index": str(small_index), "tile_ids": [2]}, *quiet)
    assert similar["query"] == search_similar(index, tile_ids=[2]).query == "similar to tile(s) 2"
    assert search(index, tiny, "ships", label="my ships").query == "my ships"
    assert service.answer(InfoRequest(index=str(small_index)), *quiet)["tiles"] == index.count


def test_the_service_refuses_an_unknown_request_or_bad_parameters_in_one_message(small_index: Path) -> None:
    quiet = (lambda done, total: None, lambda: False)
    with pytest.raises(InputError, match=r"^Unknown request 'teleport'; use one of index, locate, survey"):
        Service("cpu").handle("teleport", {}, *quiet)
    with pytest.raises(InputError, match=r"^Unknown parameter\(s\) for info: query; use index\.$"):
        Service("cpu").handle("info", {"index": str(small_index), "query": "pool"}, *quiet)


def test_a_real_engine_answers_a_bad_request_with_one_error_event() -> None:
    engine = Engine()
    try:
        engine.send(1, "search", index="ix", query="pool", top_k=0)
        events, error = engine.until(1)
        assert events == [error] and error["event"] == "error"
        assert error["error"] == {"kind": "input", "message": "top-k must be a whole number of at least 1; got 0."}
        engine.send(2, "similar", index="ix", tile_ids=[1], bbox=[0, 0, 1, 1])
        events, error = engine.until(2)
        assert events == [error] and error["error"]["message"] == (
            "Give the examples as tile ids or as boxes (one of them).")
        engine.send(3, "ping")  # and it keeps serving
        assert engine.until(3)[1]["result"]["pong"] is True
        assert engine.close() == 0
    finally:
        if engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait()


def test_whole_and_decimal_numbers_are_one_tiling_and_one_cache_key() -> None:
    made_in_python = TilingSettings(tile_size=32, overlap=0, scales=(1, 2))
    read_from_json = TilingSettings.from_dict(json.loads(json.dumps(made_in_python.to_dict())))
    assert made_in_python == read_from_json and made_in_python.key() == read_from_json.key()
    assert made_in_python.key() == TilingSettings(tile_size=32.0, overlap=0.0, scales=(1.0, 2.0)).key()
