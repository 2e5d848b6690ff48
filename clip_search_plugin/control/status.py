"""What the dock and the message bar say about a raster's index: one wording for every place it is told.

Plain Python (no Qt), so the texts can be read and tested on their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..engine.answers import IndexAnswer, IndexStatus, IndexSummary


def when(created: Any, now: dt.datetime | None = None) -> str:
    """An index's ISO creation time as a person reads it, in local time: "today at 10:45",
    "yesterday at 18:02", "3 Nov 2026 at 09:15" ("just now" and unknown values pass through)."""
    if not isinstance(created, str) or not created:
        return "at an unknown time"
    try:
        stamp = dt.datetime.fromisoformat(created)
    except ValueError:
        return created
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)  # noqa: UP017 - QGIS may bring Python < 3.11
    local = stamp.astimezone()
    today = (now or dt.datetime.now().astimezone()).date()
    clock = f"{local:%H:%M}"
    if local.date() == today:
        return f"today at {clock}"
    if local.date() == today - dt.timedelta(days=1):
        return f"yesterday at {clock}"
    return f"{local.day} {local:%b %Y} at {clock}"


def stopped_text(saved: int) -> str:
    """The one account of a build that was stopped (cancelled, interrupted) part-way."""
    if saved <= 0:
        return "Indexing was stopped before any tile was saved; Index layer starts it again."
    return f"Indexing was stopped; {saved:,} tiles are saved and Index layer resumes from there."


def indexed_text(name: str, result: IndexAnswer) -> str:
    """The one account of a finished build: totals for the whole index, and what was resumed."""
    tiles, seconds = int(result.tiles), float(result.seconds)
    resumed = int(result.resumed_tiles or 0)
    if resumed:
        text = (f"Indexed {name}: {tiles:,} tiles ({resumed:,} saved by the build that was stopped, "
                f"{tiles - resumed:,} embedded now in {seconds:,.0f} s with {result.backend}).")
    else:
        text = f"Indexed {name}: {tiles:,} tiles in {seconds:,.0f} s with {result.backend}."
    return text + (f" Note: {result.backend_note}." if result.backend_note else "")


def status_text(status: IndexStatus, web: bool = False) -> str:
    """The dock's status line for a ``locate`` answer (of a web layer's newest index, when ``web``)."""
    if web and status.status == "none":
        return "Not indexed yet. Choose the area to index (and the resolution), then click Index layer."
    text = _status_text(status)
    if status.saved_tiles and not status.ready:
        text += " " + stopped_text(status.saved_tiles)
    return text


def _status_text(status: IndexStatus) -> str:
    manifest = status.manifest or IndexSummary(model="", tiles=None, created=None, random_weights=False)
    model, tiles = manifest.model, manifest.tiles
    count = f"{tiles:,} tiles" if isinstance(tiles, int) else "tiles"
    if status.ready:
        return f"Index ready: {count}, {model}, built {when(manifest.created)} with {manifest.backend}."
    if status.raster_changed:
        return (
            f"Index out of date: the raster changed since it was indexed ({count}, {model}). "
            "Click Index layer to rebuild it."
        )
    if status.status == "stale":
        return (
            f"Index built with other settings: {count}, {model}. Searching it; "
            "click Index layer to index with the current settings."
        )
    if status.status == "damaged":
        return f"The index is damaged: {status.message} Click Index layer to rebuild it."
    return "Not indexed yet. Click Index layer."
