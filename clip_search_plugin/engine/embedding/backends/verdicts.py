"""What was found about each backend of a model on this computer: ``verdicts.json`` beside its exports.

One entry per backend (``onnx-int8``), per backend's text tower (``text:onnx-int8``) and for the model itself
(``torch``: its speed on the sample): passed or not and why, the agreement, the speed, and the checksum of the file
the verdict was found on. A verdict counts only while that file is there unchanged (see :func:`cached_verdict`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .export import FP32, INT8, TEXT_FILES, file_entry, read_json, recorded, write_json

log = logging.getLogger("clip_search.engine")
VERDICTS = "verdicts.json"


def read_verdicts(folder: Path) -> dict[str, Any]:
    """The verdicts recorded in ``folder`` (empty when none)."""
    return read_json(folder / VERDICTS)


def save_verdicts(folder: Path, verdicts: dict[str, Any]) -> None:
    """``verdicts`` recorded in ``folder`` (a cache that cannot be written is said in the log: verified again)."""
    try:
        write_json(folder / VERDICTS, verdicts)
    except OSError as exc:
        log.warning("could not record the backends' verdicts in %s: %s", folder, exc)


def file_of(name: str) -> str:
    """The export file a backend (or a backend's text tower: ``text:<backend>``) runs."""
    if name.startswith("text:"):
        return TEXT_FILES[name.removeprefix("text:")]
    return INT8 if name == "onnx-int8" else FP32


def cached_verdict(folder: Path, verdicts: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The recorded verdict of ``name``: one on its export as it is now, or one saying it could not be exported."""
    verdict = verdicts.get(name)
    if not isinstance(verdict, dict):
        return None
    if verdict.get("export_failed"):
        return verdict
    if recorded(folder, file_of(name)) is None:
        return None
    return verdict if verdict.get("sha256") == file_entry(folder, file_of(name)).get("sha256") else None
