"""Errors the engine raises. Every message tells the user what to do next."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class ClipSearchError(Exception):
    """Root of every error the engine reports to a user. ``details``: facts beside the message that a GUI
    words for itself (sent with the error by the engine process), e.g. which weights are missing."""

    kind = "error"
    details: Mapping[str, Any] = MappingProxyType({})


class InputError(ClipSearchError):
    """The user's input (a raster, a query, a setting) cannot be used as given."""

    kind = "input"


class RasterError(InputError):
    """A raster cannot be read or has no usable georeference."""

    kind = "raster"


class DamagedRasterError(RasterError):
    """A raster file is damaged or incomplete: some of its pixels cannot be read, or its header declares
    more than the file holds. Bad input like any unreadable raster (``kind`` stays "raster")."""


class IndexFormatError(ClipSearchError):
    """An index folder is missing, incomplete, tampered with or of an unknown version."""

    kind = "index"


class ModelError(ClipSearchError):
    """A model or its weights cannot be loaded."""

    kind = "model"


class Cancelled(ClipSearchError):
    """The user cancelled the operation; no index was stored (a build's progress is kept to resume)."""

    kind = "cancelled"

    def __init__(self, message: str = "Cancelled; no index was stored.") -> None:
        super().__init__(message)


class StorageError(ClipSearchError):
    """The disk could not take what had to be written (full, over quota, file too large)."""

    kind = "storage"


NO_SPACE_ERRNOS = {28, 27, 122}  # ENOSPC, EFBIG, EDQUOT


def storage_error(exc: OSError, folder: object) -> ClipSearchError | None:
    """A clear error for a write that failed because the disk is full (None for other failures). numpy reports a
    short write without an errno ("116736 requested and 74968 written"): a full disk too."""
    short_write = exc.errno is None and " requested and " in str(exc) and str(exc).endswith(" written")
    if exc.errno in NO_SPACE_ERRNOS or short_write:
        return StorageError(
            f"Not enough disk space to write in {folder} ({exc.strerror}). Free some space, or choose another "
            "index folder in the settings; any earlier index there is unchanged."
        )
    return None
