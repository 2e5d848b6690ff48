"""Checkpoints of a running build, so that a killed or cancelled build resumes instead of starting over.

A build's progress lives in a hidden folder beside its target, ``.<target name>.partial/``: segments of
the vectors embedded so far (whole batches only, ``part-NNNNN.vectors.npy`` and the grid indices of their
tiles, ``part-NNNNN.ids.npy``) and ``progress.json``, which lists the segments, the chunk to resume reading
from and the plan the progress belongs to (raster fingerprint, tiling, model, batch size: resuming under
another plan would mix two builds, so a different plan discards it). Segments are written first and
``progress.json`` last, each under a temporary name renamed into place, so a kill at any moment leaves
either the previous checkpoint or the new one. The folder is never an index (it has no manifest), so a
partial build can never be taken for a whole one; a successful build removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.models import ModelIdentity
from ..errors import storage_error
from ..index.store import default_index_dir, locate_index
from ..paths import inside
from ..settings import TilingSettings
from ..tiling.raster_io import RasterInfo

PROGRESS = "progress.json"
SEGMENT = re.compile(r"^part-\d{5}$")
FORMAT = 1
ABANDONED_AFTER_DAYS = 14  # a stopped build's progress is kept this long after its last save
LEFTOVER_AFTER_HOURS = 24  # a write interrupted by a crash (.tmp-/.old- folders) is removed after this
_CHECKPOINT_FILE = re.compile(r"^(progress\.json|part-\d{5}\.(vectors|ids)\.npy)(\.tmp)?$")
_INDEX_FILE = re.compile(r"^(manifest\.json|vectors\.faiss|tiles\.npy|neighbours\.npy|vectors16\.npy)$")
_SHARDS = re.compile(r"^\..+\.shards-[0-9a-f]{16}$")  # a cluster build's parts (see .shards)
# the files of a part, whole or being written
SHARD_FILE = re.compile(r"^shard-(\d{8})-(\d{8})\.np[yz](\.tmp-[0-9]+-[0-9a-f]+)?$")
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]{8}$")


def plan_key(parts: dict[str, Any]) -> str:
    """A stable key of everything that decides a build's vectors and their order."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def partial_folder(target: Path) -> Path:
    return target.parent / f".{target.name}.partial"


def _replace_with(path: Path, write: Any) -> None:
    """Write ``path`` under a temporary name with ``write(file)``, flush it to disk, rename it into place."""
    scratch = path.with_name(path.name + ".tmp")
    with open(scratch, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(scratch, path)


def read_progress(folder: Path) -> tuple[str, list[str], int]:
    """(plan, segment names, resume chunk) of the ``progress.json`` in ``folder``, checked; OSError when
    there is none, ValueError when it is not a valid one."""
    saved = json.loads((folder / PROGRESS).read_text(encoding="utf-8"))
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError("not a checkpoint of this format")
    plan, segments, resume = saved.get("plan"), saved.get("segments"), saved.get("resume_chunk")
    if not (isinstance(plan, str) and isinstance(segments, list)
            and all(isinstance(s, str) and SEGMENT.match(s) for s in segments)
            and isinstance(resume, int) and resume >= 0):
        raise ValueError("bad progress")
    return plan, segments, resume


class Checkpoint:
    """The saved progress of one build (empty when there is none for this plan)."""

    def __init__(self, target: Path, plan: str) -> None:
        self.folder = partial_folder(Path(target).resolve())
        self.plan = plan
        self.segments: list[str] = []
        self.resume_chunk = 0
        self.vectors: np.ndarray | None = None
        self.ids: np.ndarray = np.zeros(0, dtype=np.int64)
        self.replaces_other = False  # the folder holds another plan's progress: removed at this plan's first save

    @classmethod
    def load(cls, target: Path, plan: str, dim: int) -> Checkpoint:
        """The saved progress for ``plan`` at ``target``. Damaged progress is discarded; another plan's is not
        used, and is removed when this build first saves, so a build that fails before (a damaged raster)
        leaves it as it was."""
        checkpoint = cls(target, plan)
        try:
            saved_plan, segments, resume = read_progress(checkpoint.folder)
            if saved_plan != plan:
                checkpoint.replaces_other = True
                return checkpoint
            vectors = [np.load(inside(checkpoint.folder, f"{s}.vectors.npy"), allow_pickle=False) for s in segments]
            ids = [np.load(inside(checkpoint.folder, f"{s}.ids.npy"), allow_pickle=False) for s in segments]
            if any(v.ndim != 2 or v.shape[1] != dim or v.dtype != np.float32 or len(v) != len(i)
                   for v, i in zip(vectors, ids, strict=True)):
                raise ValueError("segments do not match")
        except (OSError, ValueError, KeyError, TypeError):
            checkpoint.discard()  # none, another plan's, or damaged: start afresh
            return checkpoint
        checkpoint.segments = list(segments)
        checkpoint.resume_chunk = resume
        if vectors:
            checkpoint.vectors = np.concatenate(vectors)
            checkpoint.ids = np.concatenate(ids).astype(np.int64)
        return checkpoint

    @property
    def tile_count(self) -> int:
        return int(self.ids.size)

    def save(self, vectors: np.ndarray, ids: np.ndarray, resume_chunk: int) -> None:
        """Add the batches embedded since the last save (``vectors`` of grid tiles ``ids``); resume reading
        at chunk ``resume_chunk``. A full disk is reported clearly; the previous checkpoint stays usable."""
        try:
            self._save(vectors, ids, resume_chunk)
        except OSError as exc:
            full = storage_error(exc, self.folder.parent)
            if full is not None:
                raise full from exc
            raise

    def _save(self, vectors: np.ndarray, ids: np.ndarray, resume_chunk: int) -> None:
        if self.replaces_other:
            self.discard()
            self.replaces_other = False
        self.folder.mkdir(parents=True, exist_ok=True)
        names = list(self.segments)
        if len(ids):
            name = f"part-{len(self.segments):05d}"
            _replace_with(self.folder / f"{name}.vectors.npy",
                          lambda f: np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False))
            _replace_with(self.folder / f"{name}.ids.npy",
                          lambda f: np.save(f, np.asarray(ids, dtype=np.int64), allow_pickle=False))
            names.append(name)
        progress = {"format": FORMAT, "plan": self.plan, "segments": names, "resume_chunk": int(resume_chunk)}
        _replace_with(self.folder / PROGRESS, lambda f: f.write(json.dumps(progress).encode()))
        self.segments = names
        self.resume_chunk = int(resume_chunk)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def locate_build(raster: RasterInfo, identity: ModelIdentity, tiling: TilingSettings) -> dict[str, Any]:
    """The index status of :func:`..index.store.locate_index`, and, unless the index is ready, how many tiles a
    stopped build of it has saved (``partial_tiles``: Index layer resumes from there): the ``locate`` answer."""
    found = locate_index(raster, identity, tiling)
    if not found.ready:
        found = replace(found, partial_tiles=saved_tile_count(default_index_dir(raster, identity, tiling)))
    return found.to_dict()


def saved_tile_count(target: Path) -> int:
    """Tiles saved by an unfinished build of ``target`` (0 when there is none or it cannot be read)."""
    folder = partial_folder(Path(target).resolve())
    try:
        _, segments, _ = read_progress(folder)
        return sum(len(np.load(folder / f"{s}.ids.npy", mmap_mode="r", allow_pickle=False)) for s in segments)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _last_change(folder: Path) -> float:
    return max([folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()])


def sweep_abandoned(root: Path, keep: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove from ``root`` what no build will come back for: the progress of builds (one process's, or the
    parts of a cluster build) stopped more than :data:`ABANDONED_AFTER_DAYS` ago (their settings or their raster
    changed since, most often) and the
    scratch folders of index writes that a crash interrupted more than :data:`LEFTOVER_AFTER_HOURS` ago.
    Only folders of our own names holding only our own files are touched; ``keep`` never is. Returns the
    folders removed."""
    now = time.time() if now is None else now
    kept = Path(keep).resolve() if keep is not None else None
    removed: list[Path] = []
    try:
        candidates = [p for p in Path(root).iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for folder in candidates:
        name = folder.name
        if name.startswith(".") and name.endswith(".partial"):
            max_age, own = ABANDONED_AFTER_DAYS * 86400, _CHECKPOINT_FILE
        elif _SHARDS.match(name):
            max_age, own = ABANDONED_AFTER_DAYS * 86400, SHARD_FILE
        elif _LEFTOVER.match(name):
            max_age, own = LEFTOVER_AFTER_HOURS * 3600, _INDEX_FILE
        else:
            continue
        if folder.resolve() == kept:
            continue
        try:
            files = list(folder.iterdir())
            if any(not (f.is_file() and own.match(f.name)) for f in files) or now - _last_change(folder) < max_age:
                continue
            shutil.rmtree(folder)
        except OSError:
            continue  # in use, or not ours to remove: left alone
        removed.append(folder)
    return removed
