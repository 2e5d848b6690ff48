"""Words for the engine's answers that the command line and the plugin both say. Pure Python (no numpy,
no GDAL), so the plugin imports it in QGIS's own Python."""

from __future__ import annotations

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
