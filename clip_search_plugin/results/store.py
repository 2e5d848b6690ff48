"""The dock's memory of its results: one record per results layer, and which one each raster shows.

Records are keyed by layer ids, never by layer objects, so a layer removed from the project (or a closed
project) leaves nothing that could touch a deleted object; ``forget`` drops what belonged to removed layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.answers import SearchAnswer

Event = dict[str, Any]


@dataclass(frozen=True)
class TextSearch:
    """What Search again needs of a text search: its words and the tiles marked in earlier rounds."""

    query: str
    negative: str | None = None  # the "but not" part
    relevant_ids: tuple[int, ...] = ()
    irrelevant_ids: tuple[int, ...] = ()


@dataclass
class ResultRecord:
    """One results layer: the engine's answer (its regions), what was searched, and the user's marks."""

    layer_id: str
    raster_id: str
    answer: SearchAnswer
    title: str  # what was searched, as the layer is named ("solar panels", "like result 3 of solar panels")
    search: TextSearch | None = None  # the text search behind it, for Search again
    marks: dict[int, int] = field(default_factory=dict)  # rank -> +1 relevant / -1 not relevant

    @property
    def regions(self) -> list[Event]:
        """The results, best first, as the engine gave them."""
        return self.answer.regions

    def region(self, rank: int) -> Event | None:
        return next((r for r in self.regions if int(r["rank"]) == rank), None)


class ResultStore:
    """Records by results layer id, and the results layer each raster shows in the dock."""

    def __init__(self) -> None:
        self.records: dict[str, ResultRecord] = {}
        self.shown: dict[str, str] = {}  # raster layer id -> results layer id

    def add(self, record: ResultRecord) -> None:
        self.records[record.layer_id] = record
        self.shown[record.raster_id] = record.layer_id

    def get(self, layer_id: str | None) -> ResultRecord | None:
        return self.records.get(layer_id) if layer_id is not None else None

    def shown_for(self, raster_id: str | None) -> ResultRecord | None:
        """The record whose layer the dock shows for this raster, if it still has one."""
        return self.get(self.shown.get(raster_id)) if raster_id is not None else None

    def show(self, record: ResultRecord) -> None:
        self.shown[record.raster_id] = record.layer_id

    def forget(self, layer_ids: set[str]) -> None:
        """Drop results layers that were removed, and everything shown for rasters that were removed."""
        self.records = {lid: r for lid, r in self.records.items()
                        if lid not in layer_ids and r.raster_id not in layer_ids}
        self.shown = {rid: lid for rid, lid in self.shown.items() if rid not in layer_ids and lid in self.records}
