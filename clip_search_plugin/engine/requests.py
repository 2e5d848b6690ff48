"""Typed requests and answers: what the dock, Processing and the command line send the engine, and what comes back.

Standard library only, so the plugin imports it in QGIS's own Python. Every request is a frozen dataclass that
checks itself when it is made, so one rule and one message hold wherever a request is made; ``to_params`` gives
the JSON object the engine process receives, and ``from_params`` (the engine's only way in) makes the request
again from it. Labels of searches, which name results layers, are made here and nowhere else.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from . import request_values as values
from .errors import InputError
from .query.text import clean_query, example_boxes, search_label, similar_label, split_negative
from .settings import Area, ModelSpec, TilingSettings

Params = dict[str, Any]
R = TypeVar("R", bound="Request")


# --- requests -------------------------------------------------------------------------------------------------
def _required(f: Any) -> bool:
    return bool(f.default is MISSING and f.default_factory is MISSING)


class Request:
    """A request's JSON round trip. Subclasses are frozen dataclasses that check themselves in __post_init__."""

    method: ClassVar[str]

    def to_params(self) -> Params:
        out: Params = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ModelSpec | TilingSettings | ResultOptions):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_params(cls: type[R], params: object) -> R:
        if not isinstance(params, dict):
            raise InputError("Request parameters must be a JSON object.")
        known = cls.param_names()
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"Unknown parameter(s) for {cls.method}: {', '.join(map(str, unknown))}; "
                             f"use {', '.join(sorted(known))}.")
        required = {f.name: None for f in fields(cls) if _required(f)}  # type: ignore[arg-type]
        return cls(**required | cls._nested(params))

    @classmethod
    def param_names(cls) -> set[str]:
        """The names of this request's JSON parameters."""
        return {f.name for f in fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def _nested(cls, params: Params) -> Params:
        """``params`` as this request's fields (a search's flat result options gathered into one)."""
        return params


@dataclass(frozen=True)
class ResultOptions:
    """What every search shares: how many places, which scores count, where, merged or not, a heatmap file."""

    top_k: int = 20
    threshold: float | None = None
    min_relative: float | None = None
    area: Area | None = None
    merge: bool = True
    rerank: bool = True
    heatmap: str | None = None

    def __post_init__(self) -> None:
        top_k, threshold = values.number(self.top_k, "top_k", int), values.number(self.threshold, "threshold", float)
        values.check_search_limits(top_k, threshold)
        object.__setattr__(self, "top_k", top_k)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "min_relative", values.number(self.min_relative, "min_relative", float))
        object.__setattr__(self, "merge", values.flag(self.merge, "merge"))
        object.__setattr__(self, "rerank", values.flag(self.rerank, "rerank"))
        object.__setattr__(self, "heatmap", values.optional_text(self.heatmap, "heatmap"))
        area: Any = self.area
        if isinstance(area, list) and len(area) == 4 and all(isinstance(v, int | float) for v in area):
            object.__setattr__(self, "area", tuple(float(v) for v in area))

    def to_dict(self) -> Params:
        data = asdict(self)
        data["area"] = list(self.area) if isinstance(self.area, tuple) else self.area
        return data

    @classmethod
    def pick(cls, params: Params) -> tuple[ResultOptions, Params]:
        """The options among ``params`` (flat, as the engine receives them), and the rest."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names}), {
            k: v for k, v in params.items() if k not in names}


class _Searching(Request):
    """Searches send their result options flat beside their own parameters."""

    options: ResultOptions

    def to_params(self) -> Params:
        params = super().to_params()
        return {**{k: v for k, v in params.items() if k != "options"}, **params["options"]}

    @classmethod
    def param_names(cls) -> set[str]:
        return (super().param_names() - {"options"}) | {f.name for f in fields(ResultOptions)}

    @classmethod
    def _nested(cls, params: Params) -> Params:
        options, rest = ResultOptions.pick(params)
        return {**rest, "options": options}


@dataclass(frozen=True)
class RasterRequest(Request):
    """What the requests about one raster's index share: the raster (a file, a folder of sheets, a remote file or
    a web layer's source), the model and the tiling, and a web layer's credentials (never written down)."""

    raster_words: ClassVar[str] = "the raster"
    raster: str
    model: ModelSpec = field(default_factory=ModelSpec)
    tiling: TilingSettings = field(default_factory=TilingSettings)
    auth: dict[str, str] | None = field(default=None, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        values.path(self.raster, self.raster_words, "raster")
        object.__setattr__(self, "model", values.model(self.model))
        object.__setattr__(self, "tiling", values.tiling(self.tiling))
        object.__setattr__(self, "auth", values.auth(self.auth))


@dataclass(frozen=True)
class SurveyRequest(RasterRequest):
    """What a build of a source would read, before anything is downloaded: tiles, server requests, time."""

    method: ClassVar[str] = "survey"


@dataclass(frozen=True)
class LocateRequest(RasterRequest):
    """Where the index of a raster with these settings is, and whether it is ready, stale or missing."""

    method: ClassVar[str] = "locate"


@dataclass(frozen=True)
class IndexRequest(RasterRequest):
    """Build (or resume) the index of a raster: a raster, model and tiling as for ``locate``, and how to build."""

    method: ClassVar[str] = "index"
    raster_words: ClassVar[str] = "the raster to index"
    device: str | None = None
    batch_size: int = 0
    output: str | None = None
    backend: str = "auto"
    cluster: str | None = None  # build on Dask: "local", "local:N" (N worker processes) or "tcp://HOST:PORT"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "backend", values.backend(self.backend))
        object.__setattr__(self, "cluster", values.cluster(self.cluster))
        object.__setattr__(self, "batch_size", values.number(self.batch_size, "batch_size", int) or 0)
        object.__setattr__(self, "output", values.optional_text(self.output, "output"))
        object.__setattr__(self, "device", values.optional_text(self.device, "device"))


@dataclass(frozen=True)
class CollectRequest(Request):
    """Several raster files in one CRS made into one collection (a mosaic VRT in the cache) to index as one."""

    method: ClassVar[str] = "collect"
    files: tuple[str, ...]
    label: str = "collection"

    def __post_init__(self) -> None:
        files = self.files
        if not isinstance(files, list | tuple) or len(files) < 2 or not all(isinstance(f, str) and f for f in files):
            raise InputError("Give two or more raster files to make one collection of ('files' parameter).")
        object.__setattr__(self, "files", tuple(files))
        object.__setattr__(self, "label", values.optional_text(self.label, "label") or "collection")


@dataclass(frozen=True)
class SearchRequest(_Searching):
    """A text search, with an optional 'but not' text and relevance feedback (tile ids)."""

    method: ClassVar[str] = "search"
    index: str
    query: str
    templates: values.Templates = "default"
    negative: str | None = None
    negative_weight: float = 0.5
    relevant_ids: tuple[int, ...] = ()
    irrelevant_ids: tuple[int, ...] = ()
    options: ResultOptions = field(default_factory=ResultOptions)

    def __post_init__(self) -> None:
        values.path(self.index, "the index folder", "index")
        if self.query is None:
            raise InputError("Give the text to search for ('query' parameter).")
        query, negative = clean_query(self.query), values.optional_text(self.negative, "negative")
        if negative is None:  # "ships but not boats" typed in one box
            query, negative = split_negative(query)
        object.__setattr__(self, "query", query)
        object.__setattr__(self, "negative", negative)
        object.__setattr__(self, "templates", values.templates(self.templates))
        object.__setattr__(self, "negative_weight", values.number(self.negative_weight, "negative_weight", float))
        object.__setattr__(self, "relevant_ids", values.ids(self.relevant_ids, "relevant_ids"))
        object.__setattr__(self, "irrelevant_ids", values.ids(self.irrelevant_ids, "irrelevant_ids"))

    @property
    def label(self) -> str:
        return search_label(self.query, self.negative, self.relevant_ids, self.irrelevant_ids)


@dataclass(frozen=True)
class SimilarRequest(_Searching):
    """Places like examples: tiles of the index, or boxes (raster CRS) whose tiles are embedded afresh."""

    method: ClassVar[str] = "similar"
    index: str
    tile_ids: tuple[int, ...] = ()
    bbox: tuple[tuple[float, float, float, float], ...] = ()
    exclude_examples: bool = True
    label: str | None = None
    options: ResultOptions = field(default_factory=ResultOptions)

    def __post_init__(self) -> None:
        values.path(self.index, "the index folder", "index")
        object.__setattr__(self, "tile_ids", values.ids(self.tile_ids, "tile_ids"))
        object.__setattr__(self, "bbox", example_boxes(self.bbox))
        object.__setattr__(self, "exclude_examples", values.flag(self.exclude_examples, "exclude_examples"))
        if bool(self.tile_ids) == bool(self.bbox):
            raise InputError("Give the examples as tile ids or as boxes (one of them).")
        object.__setattr__(self, "label", similar_label(self.tile_ids, self.bbox,
                                                        values.optional_text(self.label, "label")))


@dataclass(frozen=True)
class InfoRequest(Request):
    """A description of an index: raster, model, tiling, tile count."""

    method: ClassVar[str] = "info"
    index: str

    def __post_init__(self) -> None:
        values.path(self.index, "the index folder", "index")


@dataclass(frozen=True)
class EvaluateRequest(Request):
    """Searches of an index scored against label polygons; reports written to ``output``."""

    method: ClassVar[str] = "evaluate"
    index: str
    labels: str
    output: str
    class_field: str = "class"
    queries: str | None = None
    template_sets: tuple[str, ...] = ("aerial",)
    thresholds: tuple[float | None, ...] = (None,)
    ks: tuple[int, ...] = (5, 10, 20)
    top_k: int = 20
    min_overlap: float = 0.5
    random_runs: int = 20

    def __post_init__(self) -> None:
        values.path(self.index, "the index folder", "index")
        if not isinstance(self.labels, str) or not self.labels or not isinstance(self.output, str) or not self.output:
            raise InputError("Give the label polygons ('labels') and a folder for the reports ('output').")
        object.__setattr__(self, "class_field", values.optional_text(self.class_field, "class_field") or "class")
        object.__setattr__(self, "queries", values.optional_text(self.queries, "queries"))
        if not isinstance(self.thresholds, list | tuple):
            raise InputError("thresholds must be a list of numbers (or null for none).")
        object.__setattr__(self, "thresholds", tuple(values.number(t, "thresholds", float) for t in self.thresholds)
                           or (None,))
        ks = self.ks
        if not isinstance(ks, list | tuple) or not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                                               for k in ks):
            raise InputError(f"ks must be whole numbers of at least 1, e.g. [5, 10, 20]; got {ks!r}.")
        object.__setattr__(self, "ks", tuple(ks))
        object.__setattr__(self, "top_k", values.number(self.top_k, "top_k", int))
        if self.top_k is None or self.top_k < max(self.ks):
            raise InputError(f"top_k ({self.top_k}) must be at least the largest k ({max(self.ks)}).")
        object.__setattr__(self, "min_overlap", values.number(self.min_overlap, "min_overlap", float))
        if self.min_overlap is None or not 0 < self.min_overlap <= 1:
            raise InputError(f"min_overlap is a share of a result's area, above 0 and at most 1; got "
                             f"{self.min_overlap}.")
        object.__setattr__(self, "random_runs", values.number(self.random_runs, "random_runs", int))
        if self.random_runs is None or self.random_runs < 1:
            raise InputError(f"random_runs must be a whole number of at least 1; got {self.random_runs!r}.")
        object.__setattr__(self, "template_sets", values.template_sets(self.template_sets))


REQUESTS: dict[str, type[Request]] = {
    r.method: r for r in (IndexRequest, LocateRequest, SurveyRequest, CollectRequest, SearchRequest, SimilarRequest,
                          InfoRequest, EvaluateRequest)
}


def read_request(method: object, params: object) -> Request:
    """The typed request the engine received: the one place its parameters are checked."""
    kind = REQUESTS.get(method) if isinstance(method, str) else None
    if kind is None:
        raise InputError(f"Unknown request {method!r}; use one of {', '.join(REQUESTS)}.")
    try:
        return kind.from_params(params)
    except TypeError as exc:  # a required parameter left out
        raise InputError(f"The {kind.method} request lacks a parameter: {exc}.") from exc
