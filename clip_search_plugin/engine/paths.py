"""Where the engine keeps what it writes by default (pure Python)."""

from __future__ import annotations

import os
from pathlib import Path

APP_DIR = "clip_search"


def user_cache_base() -> Path:
    """The user's cache folder for this application: XDG_CACHE_HOME, LOCALAPPDATA on Windows, else ~/.cache."""
    base = (
        os.environ.get("XDG_CACHE_HOME")
        or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
        or os.path.join(os.path.expanduser("~"), ".cache")
    )
    return Path(base) / APP_DIR


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` with links and ``..`` resolved; ValueError when that leads out of ``folder`` (a file
    of an index or checkpoint that is a link to elsewhere, or a name that climbs out)."""
    base = Path(folder).resolve()
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise ValueError(f"{Path(folder) / name} leads outside {base}")
    return path
