"""Typed requests answered, for the JSON-lines worker and the CLI.

A request's parameters are checked once, when :func:`..requests.read_request` reads them; each handler takes the
typed request. A :class:`Service` keeps loaded models and open indexes between requests, so a query costs a text
encoding and a search, not a model load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..answers import IndexAnswer
from ..building.build import IsCancelled, Progress, build_index
from ..building.checkpoint import locate_build
from ..building.survey import survey
from ..embedding.embedder import Embedder, load_embedder
from ..embedding.models import pick_device, resolve_identity
from ..index.published import Stamp, manifest_stamp, open_published
from ..index.store import OpenIndex, locate_web
from ..query.searching import index_model_spec, search, search_similar
from ..query.templates import TEMPLATE_SETS, prompt_templates
from ..requests import (
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
)
from ..settings import IndexSettings, ModelSpec
from ..sources.access import remember
from ..sources.collection import collection_vrt
from ..sources.names import read_source
from ..tiling.raster_io import describe_source

Answer = dict[str, Any]
Handler = Callable[[Any, Progress, IsCancelled], Answer]


def result_options(options: ResultOptions) -> dict[str, Any]:
    """A search request's result options as the search functions take them (keyword arguments)."""
    return {f.name: getattr(options, f.name) for f in fields(options)}


class Service:
    """Answers index / locate / search / similar / info / evaluate requests with models and indexes kept loaded."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._embedders: dict[tuple[str, str | None, str], Embedder] = {}
        self._indexes: dict[str, tuple[Stamp, OpenIndex]] = {}
        self.handlers: dict[type[Request], Handler] = {
            IndexRequest: self.do_index,
            SearchRequest: self.do_search,
            SimilarRequest: self.do_similar,
            InfoRequest: self.do_info,
            LocateRequest: self.do_locate,
            SurveyRequest: self.do_survey,
            CollectRequest: self.do_collect,
            EvaluateRequest: self.do_evaluate,
        }

    def embedder(self, spec: ModelSpec, device: str | None = None) -> Embedder:
        key = (spec.name, spec.pretrained, device or self.device)
        if key not in self._embedders:
            self._embedders[key] = load_embedder(spec, key[2])
        return self._embedders[key]

    def open(self, path: str) -> OpenIndex:
        full = str(Path(path).absolute())
        stamp = manifest_stamp(Path(full))  # None while a rebuild's publish has none in place
        cached = self._indexes.get(full)
        if cached is None or cached[0] != stamp:
            index = open_published(full)  # a shared index may be republished meanwhile
            device = pick_device(self.device)
            if device.startswith("cuda"):  # exact search on the GPU: a matrix product and a top-k
                index.to_device(device)
            self._indexes[full] = (stamp, index)
        return self._indexes[full][1]

    def handle(self, method: str, params: object, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        """The answer to a request as the engine receives it: a method name and its JSON parameters, checked
        here, once (an unknown method or a bad parameter raises one :class:`..errors.InputError`)."""
        return self.answer(read_request(method, params), progress, is_cancelled)

    def answer(self, request: Request, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        """The answer to a typed request (made, and so checked, by the command line or :meth:`handle`)."""
        return self.handlers[type(request)](request, progress, is_cancelled)

    def do_index(self, request: IndexRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        settings = IndexSettings(tiling=request.tiling, model=request.model, device=request.device or self.device,
                                 batch_size=request.batch_size, backend=request.backend)
        embedder = self.embedder(request.model, settings.device)
        if request.cluster is not None:  # on Dask: the same index, embedded by the cluster's workers
            from ..building.distributed import build_on_cluster

            result = build_on_cluster(request.raster, settings, request.output, progress, is_cancelled, embedder,
                                      request.cluster, auth=request.auth)
        else:
            result = build_index(request.raster, settings, request.output, progress, is_cancelled, embedder,
                                 auth=request.auth)
        self._indexes.pop(str(result.path), None)
        return IndexAnswer(path=str(result.path), tiles=result.tile_count, skipped_empty=result.skipped_empty,
                           grid_tiles=result.grid_count, seconds=round(result.seconds, 3), model=result.model,
                           random_weights=result.random_weights, resumed_tiles=result.resumed,
                           backend=result.backend, backend_note=result.backend_note).to_dict()

    def do_search(self, request: SearchRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        index = self.open(request.index)
        embedder = self.embedder(index_model_spec(index))
        progress(1, 2)  # the model and the index are loaded (seconds, the first time): the search itself is quick
        result = search(
            index, embedder, request.query, templates=prompt_templates(request.templates), negative=request.negative,
            negative_weight=request.negative_weight, relevant_ids=request.relevant_ids,
            irrelevant_ids=request.irrelevant_ids, label=request.label, **result_options(request.options),
        )
        return result.to_dict()

    def do_similar(self, request: SimilarRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        index = self.open(request.index)
        embedder = self.embedder(index_model_spec(index)) if request.bbox else None
        progress(1, 2)
        result = search_similar(
            index, embedder, tile_ids=request.tile_ids or None, bbox=request.bbox or None,
            exclude_examples=request.exclude_examples, label=request.label, **result_options(request.options),
        )
        return result.to_dict()

    def do_locate(self, request: LocateRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        """Where the index for a raster with these settings is, and whether it is ready, stale or missing."""
        identity, _ = resolve_identity(request.model)
        name = read_source(request.raster)
        remember(name.public(), name, request.auth)  # for reading it again here, e.g. an example box
        if name.is_web and request.tiling.area is None:  # a web layer before an area is chosen: its newest index
            return locate_web(name.public(), identity, request.tiling).to_dict()
        return locate_build(describe_source(request.raster, request.tiling, request.auth), identity, request.tiling)

    def do_survey(self, request: SurveyRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        """What a build would read (tiles, server requests, download, time), before anything is downloaded."""
        device = self.device if self.device != "auto" else pick_device(self.device)  # "cpu": no torch to import
        return survey(request.raster, request.tiling, device, request.auth).to_dict()

    def do_collect(self, request: CollectRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        """Several files as one collection: the mosaic VRT to index (written in the cache) and its sheets."""
        path, members, _ = collection_vrt(list(request.files), request.label)
        return {"path": str(path), "files": len(members)}

    def do_evaluate(self, request: EvaluateRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        """Score searches of an index against label polygons; write results.csv, results.md and pr.png."""
        from ..evaluation.labels import (
            Report,
            check_classes,
            class_queries,
            evaluate_configurations,
            parse_queries,
            read_labels,
        )

        index = self.open(request.index)
        labels = read_labels(Path(request.labels), request.class_field, index.raster.crs_wkt)
        queries = parse_queries(request.queries) if request.queries else class_queries(labels.classes())
        check_classes(labels, queries)  # before the model loads: a wrong class name fails at once
        embedder = self.embedder(index_model_spec(index))
        report = Report()
        evaluate_configurations(report, index, embedder, labels, queries,
                                [(s, TEMPLATE_SETS[s]) for s in request.template_sets], request.thresholds,
                                request.top_k, request.ks, request.min_overlap, request.random_runs)
        files = report.write(Path(request.output), Path(index.raster.path).name)
        means = [{**row.config, "ranking": row.query, **row.metrics} for row in report.means()]
        random_weights = index.identity.random_weights
        return {"files": files, "means": means, "queries": len(queries), "random_weights": random_weights}

    def do_info(self, request: InfoRequest, progress: Progress, is_cancelled: IsCancelled) -> Answer:
        return self.open(request.index).info(os.getpid()).to_dict()
