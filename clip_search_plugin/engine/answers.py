"""The engine's answers as the plugin and the command line read them, and the words both say about them. Pure
Python (no numpy, no GDAL), so the plugin imports it in QGIS's own Python.

Each answer is a frozen dataclass made by the engine in one place and sent as the JSON object of its ``to_dict``;
readers make it again with ``from_dict`` and read attributes, never keys. A field left out of the JSON when it has
no value (a search without a heatmap, a located index without a stopped build) is None here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar

Answer = dict[str, Any]
A = TypeVar("A", bound="_Typed")


class _Typed:
    """An answer's JSON round trip. Subclasses are frozen dataclasses; the fields named in ``optional`` are left
    out of the JSON when they are None, as the engine has always sent them."""

    optional: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> Answer:
        out: Answer = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self.optional:
                continue
            out[f.name] = value.to_dict() if isinstance(value, _Typed) else value
        return out

    @classmethod
    def from_dict(cls: type[A], data: Answer) -> A:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class IndexAnswer(_Typed):
    """A finished build."""

    path: str
    tiles: int
    skipped_empty: int
    grid_tiles: int
    seconds: float
    model: str
    random_weights: bool
    resumed_tiles: int = 0
    backend: str = "torch"  # what embedded the tiles
    backend_note: str = ""  # why not the backend asked for (a refused or failing one), in words

    def status(self) -> IndexStatus:
        """The index status the built index has: ready, at ``path``, built just now."""
        return IndexStatus("ready", self.path, manifest=IndexSummary(self.model, self.tiles, "just now",
                                                                     self.random_weights, self.backend))


@dataclass(frozen=True)
class SurveyAnswer(_Typed):
    """What a build of a source would read: the grid, its tiles, the server requests, the download and the time
    (estimates, before anything is downloaded). ``kind``: file, folder, remote, xyz, wms, wmts or gdal-web."""

    optional: ClassVar[frozenset[str]] = frozenset({"zoom", "native_resolution", "extent", "resolution", "files"})
    name: str
    kind: str
    title: str
    crs: str
    width: int
    height: int
    tiles: int
    requests: int
    download_mb: float
    seconds: float
    extent: list[float] | None = None
    resolution: float | None = None
    native_resolution: float | None = None
    zoom: int | None = None
    files: int | None = None

    @property
    def web(self) -> bool:
        return self.kind in ("xyz", "wms", "wmts", "gdal-web")

    def summary(self) -> str:
        """One line for people: tiles, requests, download, time."""
        minutes = self.seconds / 60
        time = f"about {minutes:.0f} min" if minutes >= 1.5 else f"about {max(1, round(self.seconds))} s"
        reads = f", {self.requests:,} requests to the server (about {self.download_mb:,.0f} MB)" if self.requests \
            else ""
        return f"{self.tiles:,} tiles{reads}; {time} on this computer"


@dataclass(frozen=True)
class SearchAnswer(_Typed):
    """A search's places (text, feedback or examples): ``regions`` are the records the results layers are made of
    (rank, score, relative, geometry, bounds, area, area_units, tile_count, members), best first."""

    optional: ClassVar[frozenset[str]] = frozenset({"heatmap"})
    query: str  # the search's label, which names its results
    model: str
    random_weights: bool
    crs_wkt: str
    seconds: float
    regions: list[dict[str, Any]]
    score_mean: float  # of the query's scores over a sample of the index's tiles
    score_std: float
    requested: int  # the number of places asked for
    fewer: bool  # fewer places exist than were asked for
    searched_tiles: int  # the tiles searched (in the area, not left out)
    below_threshold: bool  # tiles were left out for scoring below the minimum score
    reranked: bool  # tiles scored with their look-alikes
    heatmap: str | None = None  # the GeoTIFF written, when one was asked for

    def ranking_note(self) -> str:
        """How the engine ranked the tiles, for a log."""
        return ", re-ranked with look-alikes" if self.reranked else ", ranked by each tile's own score"


def fewer_text(result: SearchAnswer) -> str:
    """Why a search gave fewer results than were asked for (``result`` is a search answer with ``fewer``)."""
    found, wanted, searched = len(result.regions), int(result.requested), int(result.searched_tiles)
    if searched == 0:
        return ("No tile was left to search: the area searched holds no indexed tile, or every tile in it overlaps "
                "the example. Search the whole index, or choose another example.")
    if result.below_threshold:
        if not found:
            return "No tile scores above the minimum score; lower it to see the best matches."
        return f"{found} of the {wanted} results asked for: the other tiles score below the minimum score."
    return (f"{found} of the {wanted} results asked for: that is every separate place among the "
            f"{searched:,} tiles searched. Index with smaller tiles for more.")


@dataclass(frozen=True)
class IndexSummary(_Typed):
    """What a located index's manifest says of it, to be shown."""

    model: str
    tiles: int | None
    created: str | None  # ISO time (or "just now" for an index the dock has just built)
    random_weights: bool
    backend: str = "torch"  # what embedded its tiles


@dataclass(frozen=True)
class IndexStatus(_Typed):
    """A ``locate`` answer: where the index of a raster with these settings is, and whether it is ``ready``,
    ``stale`` (an index of the raster with other settings, or of its content before it changed: ``changed``),
    ``damaged`` (``message`` says how) or ``none`` (``path`` is where it would go)."""

    optional: ClassVar[frozenset[str]] = frozenset(
        {"expected", "manifest", "changed", "reason", "message", "partial_tiles"})
    status: str
    path: str
    expected: str | None = None  # a stale index's: where the index with these settings would go
    manifest: IndexSummary | None = None  # ready and stale
    changed: bool | None = None  # stale: the raster changed since it was indexed
    reason: str | None = None  # stale: why, in words
    message: str | None = None  # damaged: what is wrong
    partial_tiles: int | None = None  # unless ready: tiles a stopped build of it has saved

    @classmethod
    def from_dict(cls, data: Answer) -> IndexStatus:
        found = super().from_dict(data)
        manifest: Any = found.manifest
        return replace(found, manifest=IndexSummary.from_dict(manifest)) if isinstance(manifest, dict) else found

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def raster_changed(self) -> bool:
        """The raster changed since its index was built (the index is unusable)."""
        return self.status == "stale" and bool(self.changed)

    @property
    def searchable(self) -> bool:
        """The index can be searched: ready, or built with other model / tiling settings."""
        return self.status in ("ready", "stale") and not self.raster_changed

    @property
    def saved_tiles(self) -> int:
        """Tiles a stopped build of the index has saved (0 when none)."""
        return self.partial_tiles or 0


@dataclass(frozen=True)
class InfoAnswer(_Typed):
    """An ``info`` answer: an open index described, and the engine process that opened it."""

    path: str
    raster: str
    model: str
    random_weights: bool
    tiles: int
    dim: int
    tiling: dict[str, Any]  # the tiling settings, as the manifest holds them
    base_tile_px: int
    created: str
    crs_wkt: str
    georeferenced: bool
    pid: int
