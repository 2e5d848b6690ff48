"""Choosing the backend a build embeds with: the fastest one whose vectors agree with the model's, here.

A candidate is exported (cached, :mod:`.export`), run on a sample of the build's own tiles beside the model itself,
and kept only if :func:`.verify.agreement` passes; ``auto`` then takes the fastest by the time each took on that
sample (the model itself unless a candidate is at least ``MARGIN`` faster). The verdict and speeds are recorded
beside the export, so the next build of the same model on this computer needs no sample. A refused or failing
backend is reported (:attr:`BackendChoice.note`) and the build goes on with the model itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, ModelError
from . import AUTO, BACKENDS, TORCH
from .export import FP32, export_folder, exported, file_entry
from .runtime import ImageTower, OnnxTower, OpenVinoTower, openvino_device
from .text import prepare_text
from .verdicts import cached_verdict, file_of, read_verdicts, save_verdicts
from .verify import Agreement, agreement

log = logging.getLogger("clip_search.engine")
FAST_FROM_TILES = 1000  # auto exports a model for builds from this size on (an export takes tens of seconds once)
MARGIN = 1.1
Encode = Callable[[np.ndarray], np.ndarray]


@dataclass
class BackendChoice:
    """The backend a build uses, and why."""

    requested: str
    name: str = TORCH
    tower: ImageTower | None = None
    agreement: Agreement | None = None
    speeds: dict[str, float] = field(default_factory=dict)  # tiles per second on the sample, by backend
    note: str = ""
    text_verified: bool = False  # whether the same backend's text tower is verified here (see .text)

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "requested": self.requested}
        if self.agreement is not None:
            found["agreement"] = self.agreement.to_dict()
        if self.speeds:
            found["tiles_per_second"] = {k: round(v, 2) for k, v in self.speeds.items()}
        if self.note:
            found["note"] = self.note
        return found


def candidates(requested: str, device: str) -> list[str]:
    """The backends to try for ``requested`` on ``device``, fastest expected first."""
    if requested == TORCH:
        return []
    if requested != AUTO:
        if device != "cpu" and BACKENDS[requested].runtime == "onnxruntime":
            raise InputError(f"The backend {requested} runs on the CPU; choose the device cpu, or the backend auto.")
        return [requested]
    if device != "cpu":
        return []  # an NVIDIA GPU or Apple silicon: the model itself on it is the fastest
    return ["openvino", "onnx-int8", "onnx"] if openvino_device() == "GPU" else ["onnx-int8", "onnx"]


def make_tower(name: str, model: Any, input_size: int, folder: Path) -> ImageTower:
    """The exported tower of ``name`` (exported first if this model has none yet)."""
    if BACKENDS[name].runtime == "onnxruntime":
        return OnnxTower(exported(model, input_size, folder, file_of(name)))
    device = openvino_device()
    if device is None:
        raise ModelError("OpenVINO is not installed in the engine's environment.")
    return OpenVinoTower(exported(model, input_size, folder, FP32), device)


def _timed(encode: Encode, tiles: np.ndarray) -> tuple[np.ndarray, float]:
    encode(tiles[:2])  # a first run allocates: not timed
    started = time.perf_counter()
    vectors = encode(tiles)
    return vectors, len(tiles) / max(time.perf_counter() - started, 1e-9)


_LOADED: dict[tuple[str, str], ImageTower] = {}  # the tower chosen last, kept loaded for the next build


def _loaded(name: str, trial: Trial) -> ImageTower:
    """The tower of ``name`` for the trial's model, loaded once while it stays the one chosen (the one just
    verified, when the trial verified it)."""
    key = (str(trial.folder), name)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = trial.towers.get(name) or trial.tower(name)
    return _LOADED[key]


class Trial:
    """The candidates tried for one choice: the model's own vectors of the sample made once, when first needed."""

    def __init__(self, embedder: Any, sample: Callable[[], np.ndarray], queries: Callable[[], np.ndarray],
                 folder: Path) -> None:
        self.embedder, self.sample, self.queries, self.folder = embedder, sample, queries, folder
        self.verdicts = read_verdicts(folder)
        self.towers: dict[str, ImageTower] = {}  # those made (and verified) by this trial
        self._reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def tower(self, name: str) -> ImageTower:
        """The tower of ``name`` for this model, made now."""
        return make_tower(name, self.embedder.model, self.embedder.input_size, self.folder)

    def reference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample tiles, the model's vectors of them, query vectors); the model's speed is recorded."""
        if self._reference is None:
            tiles = self.sample()
            if len(tiles) < 2:
                raise ModelError("too few non-empty tiles to compare the backends on")
            vectors, speed = _timed(lambda t: self.embedder.encode_with(None, t), tiles)
            self.verdicts[TORCH] = {"tiles_per_second": speed}
            self._reference = (tiles, vectors, self.queries())
        return self._reference

    def verdict(self, name: str) -> dict[str, Any]:
        """The verdict of ``name`` (recorded, or found now on the sample)."""
        cached = cached_verdict(self.folder, self.verdicts, name)
        if cached is not None:
            return cached
        try:
            tiles, reference, queries = self.reference()
            tower = self.towers[name] = self.tower(name)
            vectors, speed = _timed(lambda t: self.embedder.encode_with(tower, t), tiles)
        except ModelError as exc:  # this model cannot be exported or run so: recorded, not tried again
            verdict = {"passed": False, "reason": f"it could not be used ({exc})", "export_failed": True}
        except (ImportError, OSError) as exc:  # missing here, or a full disk: tried again next time
            return {"passed": False, "reason": f"it could not be used ({exc})"}
        else:
            found = agreement(reference, vectors, queries)
            verdict = {"passed": found.passed, "reason": found.reason(), "agreement": found.to_dict(),
                       "tiles_per_second": speed, "sha256": file_entry(self.folder, file_of(name)).get("sha256")}
        self.verdicts[name] = verdict
        save_verdicts(self.folder, self.verdicts)
        return verdict


def choose_backend(embedder: Any, requested: str, sample: Callable[[], np.ndarray],
                   queries: Callable[[], np.ndarray], planned_tiles: int | None = None,
                   root: Path | None = None) -> BackendChoice:
    """The backend for ``embedder`` (a ClipEmbedder) as ``requested``: see the module's description."""
    names = candidates(requested, embedder.device)
    choice = BackendChoice(requested)
    if not names:
        return choice
    trial = Trial(embedder, sample, queries, export_folder(embedder.identity, embedder.input_size, root))
    small = requested == AUTO and planned_tiles is not None and planned_tiles < FAST_FROM_TILES
    if small and not any(cached_verdict(trial.folder, trial.verdicts, n) for n in names):
        return choice  # a small build: not worth an export's wait; the model itself
    refused: list[str] = []
    passed: dict[str, dict[str, Any]] = {}
    for name in names:
        verdict = trial.verdict(name)
        if verdict.get("passed"):
            passed[name] = verdict
        else:
            refused.append(f"{name} refused: {verdict.get('reason', 'not verified')}")
    choice = _decide(choice, trial, passed, refused)
    if choice.name != TORCH:
        choice.text_verified = prepare_text(trial, choice.name)  # queries through the same backend, if it verifies
    return choice


def _decide(choice: BackendChoice, trial: Trial, passed: dict[str, dict[str, Any]],
            refused: list[str]) -> BackendChoice:
    """The fastest verified backend (explicitly requested: that one if it verified), else the model itself."""
    choice.speeds = {n: float(v["tiles_per_second"]) for n, v in trial.verdicts.items()
                     if isinstance(v, dict) and "tiles_per_second" in v and (n == TORCH or n in passed)}
    own = choice.speeds.get(TORCH, 0.0)
    best = max(passed, key=lambda n: choice.speeds.get(n, 0.0), default=None)
    if best is not None and (choice.requested != AUTO or choice.speeds.get(best, 0.0) >= own * MARGIN):
        choice.name = best
        choice.agreement = Agreement(**passed[best]["agreement"])
        choice.tower = _loaded(best, trial)
    if refused:
        choice.note = "; ".join(refused) + f"; embedding with {choice.name}"
        log.warning("backend: %s", choice.note)
    log.info("backend %s (asked: %s; tiles/s on the sample: %s)", choice.name, choice.requested, choice.speeds)
    return choice
