"""Requests as plain dicts, shared by the JSON-lines worker and the CLI.

A :class:`Service` keeps loaded models and open indexes between requests, so a query costs a text
encoding and a search, not a model load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..building.build import IsCancelled, Progress, build_index
from ..embedding.embedder import Embedder, load_embedder
from ..embedding.models import pick_device, resolve_identity
from ..errors import InputError
from ..index.store import OpenIndex, locate_index, open_index
from ..query.searching import index_model_spec, search, search_similar
from ..query.templates import AERIAL_TEMPLATES, parse_templates
from ..query.vectors import RERANK
from ..settings import IndexSettings, ModelSpec, TilingSettings
from ..tiling.raster_io import describe_raster

Handler = Callable[[dict[str, Any], Progress, IsCancelled], dict[str, Any]]


def _number(params: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = params.get(key, default)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{key} must be a {kind.__name__}; got {value!r}.") from exc


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false; got {value!r}.")
    return value


def _text(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{key} must be text (a file path); got {value!r}.")
    return value


def tiling_from(params: dict[str, Any]) -> TilingSettings:
    return TilingSettings.from_dict(
        {
            k: v
            for k, v in params.items()
            if k in ("tile_size", "tile_units", "overlap", "scales", "max_empty_fraction", "bands", "area")
        }
    )


def model_from(params: dict[str, Any]) -> ModelSpec:
    model = params.get("model") or {}
    if not isinstance(model, dict):
        raise InputError("model must be an object with 'name' and optionally 'pretrained'.")
    return ModelSpec(str(model.get("name", ModelSpec.name)), model.get("pretrained"))


def templates_from(value: Any) -> tuple[str, ...] | None:
    """'default' (or absent): the aerial ensemble; 'raw': the query alone; a list: those templates."""
    if value in (None, "default"):
        return AERIAL_TEMPLATES
    if value == "raw":
        return None
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return parse_templates("\n".join(value))
    raise InputError("templates must be 'default', 'raw' or a list of strings each containing '{}'.")


class Service:
    """Handles index / search / similar / info requests with models and indexes kept loaded."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._embedders: dict[tuple[str, str | None, str], Embedder] = {}
        self._indexes: dict[str, tuple[float, OpenIndex]] = {}
        self.handlers: dict[str, Handler] = {
            "index": self.do_index,
            "search": self.do_search,
            "similar": self.do_similar,
            "info": self.do_info,
            "locate": self.do_locate,
            "evaluate": self.do_evaluate,
        }

    def embedder(self, spec: ModelSpec, device: str | None = None) -> Embedder:
        key = (spec.name, spec.pretrained, device or self.device)
        if key not in self._embedders:
            self._embedders[key] = load_embedder(spec, key[2])
        return self._embedders[key]

    def open(self, path: Any) -> OpenIndex:
        if not isinstance(path, str) or not path:
            raise InputError("Give the index folder ('index' parameter).")
        full = str(Path(path).absolute())
        manifest = Path(full) / "manifest.json"
        stamp = manifest.stat().st_mtime_ns if manifest.exists() else -1.0
        cached = self._indexes.get(full)
        if cached is None or cached[0] != stamp:
            index = open_index(full)
            device = pick_device(self.device)
            if device.startswith("cuda"):  # exact search on the GPU: a matrix product and a top-k
                index.to_device(device)
            self._indexes[full] = (stamp, index)
        return self._indexes[full][1]

    def handle(
        self, method: str, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled
    ) -> dict[str, Any]:
        handler = self.handlers.get(method)
        if handler is None:
            raise InputError(f"Unknown request {method!r}; use one of {', '.join(self.handlers)}.")
        if not isinstance(params, dict):
            raise InputError("Request parameters must be a JSON object.")
        return handler(params, progress, is_cancelled)

    def do_index(self, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled) -> dict[str, Any]:
        raster = params.get("raster")
        if not isinstance(raster, str) or not raster:
            raise InputError("Give the raster to index ('raster' parameter).")
        spec = model_from(params)
        settings = IndexSettings(
            tiling=tiling_from(params.get("tiling") or {}),
            model=spec,
            device=str(params.get("device", self.device)),
            batch_size=_number(params, "batch_size", 0, int),
        )
        embedder = self.embedder(spec, settings.device)
        result = build_index(raster, settings, params.get("output"), progress, is_cancelled, embedder)
        self._indexes.pop(str(result.path), None)
        return {
            "path": str(result.path),
            "tiles": result.tile_count,
            "skipped_empty": result.skipped_empty,
            "grid_tiles": result.grid_count,
            "seconds": round(result.seconds, 3),
            "model": result.model,
            "random_weights": result.random_weights,
            "resumed_tiles": result.resumed,
        }

    def _search_args(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "top_k": _number(params, "top_k", 20, int),
            "threshold": _number(params, "threshold", None, float),
            "area": params.get("area"),
            "merge": bool(params.get("merge", True)),
            "min_relative": _number(params, "min_relative", None, float),
            "heatmap": _text(params, "heatmap"),
            "rerank": _flag(params, "rerank", RERANK),
        }

    def do_search(self, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled) -> dict[str, Any]:
        index = self.open(params.get("index"))
        query = params.get("query")
        if not isinstance(query, str):
            raise InputError("Give the text to search for ('query' parameter).")
        embedder = self.embedder(index_model_spec(index))
        progress(1, 2)  # the model and the index are loaded (seconds, the first time): the search itself is quick
        result = search(
            index,
            embedder,
            query,
            templates=templates_from(params.get("templates")),
            negative=params.get("negative") or None,
            negative_weight=_number(params, "negative_weight", 0.5, float),
            relevant_ids=params.get("relevant_ids"),
            irrelevant_ids=params.get("irrelevant_ids"),
            **self._search_args(params),
        )
        return result.to_dict()

    def do_similar(self, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled) -> dict[str, Any]:
        index = self.open(params.get("index"))
        bbox = params.get("bbox")
        embedder = self.embedder(index_model_spec(index)) if bbox is not None else None
        progress(1, 2)
        result = search_similar(
            index,
            embedder,
            tile_ids=params.get("tile_ids"),
            bbox=bbox,
            exclude_examples=bool(params.get("exclude_examples", True)),
            label=_text(params, "label"),
            **self._search_args(params),
        )
        return result.to_dict()

    def do_locate(self, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled) -> dict[str, Any]:
        """Where the index for a raster with these settings is, and whether it is ready, stale or missing."""
        raster = params.get("raster")
        if not isinstance(raster, str) or not raster:
            raise InputError("Give the raster ('raster' parameter).")
        spec = model_from(params)
        tiling = tiling_from(params.get("tiling") or {})
        identity, _ = resolve_identity(spec)
        return locate_index(describe_raster(raster, tiling.bands), identity, tiling)

    def do_evaluate(self, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled) -> dict[str, Any]:
        """Score searches of an index against label polygons; write results.csv, results.md and pr.png."""
        from ..evaluation.labels import (
            TEMPLATE_SETS,
            Report,
            check_classes,
            class_queries,
            evaluate_configurations,
            parse_queries,
            read_labels,
        )

        index = self.open(params.get("index"))
        labels_path, output = _text(params, "labels"), _text(params, "output")
        if labels_path is None or output is None:
            raise InputError("Give the label polygons ('labels') and a folder for the reports ('output').")
        class_field = _text(params, "class_field") or "class"
        sets = params.get("template_sets") or ["aerial"]
        if not isinstance(sets, list) or any(s not in TEMPLATE_SETS for s in sets):
            raise InputError(f"template_sets must be a list of {', '.join(TEMPLATE_SETS)}; got {sets!r}.")
        thresholds = params.get("thresholds") or [None]
        if not isinstance(thresholds, list):
            raise InputError("thresholds must be a list of numbers (or null for none).")
        thresholds = [None if t is None else float(t) for t in thresholds]
        ks = params.get("ks") or [5, 10, 20]
        if not isinstance(ks, list) or any(not isinstance(k, int) or k < 1 for k in ks):
            raise InputError(f"ks must be whole numbers of at least 1, e.g. [5, 10, 20]; got {ks!r}.")
        top_k = _number(params, "top_k", 20, int)
        if top_k < max(ks):
            raise InputError(f"top_k ({top_k}) must be at least the largest k ({max(ks)}).")
        min_overlap = _number(params, "min_overlap", 0.5, float)
        if not 0 < min_overlap <= 1:
            raise InputError(f"min_overlap is a share of a result's area, above 0 and at most 1; got {min_overlap}.")
        labels = read_labels(Path(labels_path), class_field, index.raster.crs_wkt)
        queries_text = _text(params, "queries")
        queries = parse_queries(queries_text) if queries_text else class_queries(labels.classes())
        check_classes(labels, queries)  # before the model loads: a wrong class name fails at once
        embedder = self.embedder(index_model_spec(index))
        report = Report()
        evaluate_configurations(report, index, embedder, labels, queries, [(s, TEMPLATE_SETS[s]) for s in sets],
                                thresholds, top_k, tuple(ks), min_overlap, _number(params, "random_runs", 20, int))
        files = report.write(Path(output), Path(index.raster.path).name)
        means = [{**row.config, "ranking": row.query, **row.metrics} for row in report.means()]
        random_weights = index.identity.random_weights
        return {"files": files, "means": means, "queries": len(queries), "random_weights": random_weights}

    def do_info(self, params: dict[str, Any], progress: Progress, is_cancelled: IsCancelled) -> dict[str, Any]:
        info = self.open(params.get("index")).summary()
        info["pid"] = os.getpid()
        return info
