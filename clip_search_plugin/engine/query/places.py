"""Ranked hit tiles gathered into places: the number of results a user asks for is the number they get.

Tiles overlap (50% by default), so the best tiles of a search come in clusters: the same house seen by the
tile on it and by its neighbours. Merging every chain of overlapping hits (what the engine once did) let one
result grow over a whole image. Here each place is local and bounded instead, like non-maximum suppression
in object detection:

- hits are taken best first; a hit that shares no pixels with any place's *first* (best) tile starts a new
  place, until ``k`` places exist;
- a hit that shares pixels with a place's first tile belongs to that place (the best such place): it joins it
  when it is no larger than that first tile and the place has fewer than ``max_members`` tiles, and is
  otherwise left out as another view of the same place;
- the first hit that would start place ``k + 1`` ends the gathering, so every member scores at least as well
  as the best tile of any place not shown.

A place therefore spans at most its first tile and the tiles overlapping it: at 50% overlap and one scale,
three tiles by three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..tiling.grid import Window

MAX_MEMBERS = 9  # a tile and the eight tiles around it that overlap it (one scale, 50% overlap)


@dataclass
class Gathering:
    """Places as lists of positions in the ranked hits (best first, the first one the place's seed), and
    whether the gathering stopped because place ``k + 1`` came up (more hits would not change it)."""

    places: list[list[int]] = field(default_factory=list)
    complete: bool = False


def gather_places(windows: Sequence[Window], k: int | None, max_members: int = MAX_MEMBERS) -> Gathering:
    """Group the windows of ranked hits (best first) into at most ``k`` places (all places when None)."""
    gathering = Gathering()
    if not windows:
        return gathering
    cell = max(max(w.width, w.height) for w in windows)  # seeds are bucketed by their corner on this grid
    buckets: dict[tuple[int, int], list[int]] = {}  # bucket -> place numbers whose seed corner lies in it
    seeds: list[Window] = []
    for position, window in enumerate(windows):
        place = _best_overlapping_seed(window, seeds, buckets, cell)
        if place is not None:
            members = gathering.places[place]
            seed = seeds[place]
            if len(members) < max_members and window.width * window.height <= seed.width * seed.height:
                members.append(position)
            continue
        if k is not None and len(seeds) == k:
            gathering.complete = True
            break
        buckets.setdefault((window.col_off // cell, window.row_off // cell), []).append(len(seeds))
        seeds.append(window)
        gathering.places.append([position])
    return gathering


def _best_overlapping_seed(window: Window, seeds: list[Window], buckets: dict[tuple[int, int], list[int]],
                           cell: int) -> int | None:
    """The first (best) place whose seed shares pixels with ``window``. A seed no larger than ``cell`` that
    overlaps the window has its corner within one cell before the window's start and its end."""
    found: int | None = None
    for column in range((window.col_off - cell) // cell, (window.col_end - 1) // cell + 1):
        for row in range((window.row_off - cell) // cell, (window.row_end - 1) // cell + 1):
            for place in buckets.get((column, row), ()):
                if (found is None or place < found) and seeds[place].overlaps(window):
                    found = place
    return found
