"""The engine's answers as the plugin and the command line read them, and the words both say about them. Pure
Python (no numpy, no GDAL), so the plugin imports it in QGIS's own Python."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


def fewer_text(result: dict[str, Any]) -> str:
    """Why a search gave fewer results than were asked for (``result`` is a search answer with ``fewer``)."""
    found, wanted, searched = len(result["regions"]), int(result["requested"]), int(result["searched_tiles"])
    if searched == 0:
        return ("No tile was left to search: the area searched holds no indexed tile, or every tile in it overlaps "
                "the example. Search the whole index, or choose another example.")
    if result.get("below_threshold"):
        if not found:
            return "No tile scores above the minimum score; lower it to see the best matches."
        return f"{found} of the {wanted} results asked for: the other tiles score below the minimum score."
    return (f"{found} of the {wanted} results asked for: that is every separate place among the "
            f"{searched:,} tiles searched. Index with smaller tiles for more.")


@dataclass(frozen=True)
class IndexAnswer:
    """A finished build."""

    path: str
    tiles: int
    skipped_empty: int
    grid_tiles: int
    seconds: float
    model: str
    random_weights: bool
    resumed_tiles: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexAnswer:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
