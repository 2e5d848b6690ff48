"""Opening an index that someone may be rebuilding: a team's index on a shared folder.

A rebuild publishes by renaming (see :func:`.store.write_index`): the old folder aside, the new one into place,
the old one removed. Two renames are not one step, and an open reads several files: a searcher that opens the
index while another analyst's rebuild publishes may find no manifest for a moment, or a manifest of one build and
the data files of the next. Searching never writes to the index (files are only read), so nobody can damage it;
an open that finds the index changed or being published under it tries again, and gets a whole index, old or new.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from ..errors import IndexFormatError
from .store import MANIFEST, OpenIndex, open_index

WAIT_S = 15.0  # how long an open waits out rebuilds published one after another before it gives up
PAUSES_S = (0.02, 0.05, 0.1, 0.2)  # between tries: short at first (a publish's renames take microseconds)

Stamp = tuple[int, int, int] | None


def manifest_stamp(folder: Path) -> Stamp:
    """Which manifest is in ``folder`` now (inode, size, modification time), None when there is none."""
    try:
        stat = (folder / MANIFEST).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def publishing(folder: Path) -> bool:
    """A rebuild's publish is under way beside ``folder``: its new copy or the old one moved aside is there."""
    prefix = f".{folder.name}."
    try:
        return any(p.name.startswith(prefix) and (".tmp-" in p.name or ".old-" in p.name)
                   for p in folder.parent.iterdir())
    except OSError:
        return False


def open_published(path: str | Path, verify: bool = True) -> OpenIndex:
    """:func:`.store.open_index`, tried again while the index changes under it (a rebuild published meanwhile,
    for up to :data:`WAIT_S`); an index that is damaged, not one being replaced, is refused at once as before."""
    folder = Path(path).absolute()
    deadline = time.monotonic() + WAIT_S
    for attempt in itertools.count():
        before = manifest_stamp(folder)
        last = time.monotonic() > deadline
        try:
            index = open_index(folder, verify)
        except (IndexFormatError, OSError):  # OSError: a file gone between the check of its size and its read
            if last or (manifest_stamp(folder) == before and not publishing(folder)):
                raise
        else:
            if last or manifest_stamp(folder) == before:
                return index
        time.sleep(PAUSES_S[min(attempt, len(PAUSES_S) - 1)])
    raise AssertionError("unreachable")  # the loop returns or raises
