"""Queries through the fast path a build chose: the text tower of the same backend, verified, used by later searches.

A build that embeds with ``onnx`` or ``onnx-int8`` exports that backend's text tower too (cached beside the image
tower) and verifies it with the analyst's weights: the verification queries, with and without their template, each
within ``MIN_COSINE`` of the model's vector and ranking the same top tiles of the build's sample. The verdict is
recorded with the image towers' (as ``text:<backend>``); an embedder on the CPU then encodes prompts with the
fastest verified text tower (:func:`verified_text`), in that process and in every later one, until the model or a
version changes. A text tower other than CLIP's causal one, or one that does not verify, leaves the model itself.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ...errors import ModelError
from ..models import causal_text
from .export import TEXT_FILES, export_folder, exported, file_entry
from .runtime import ImageTower, OnnxTower
from .verdicts import cached_verdict, read_verdicts, save_verdicts
from .verify import MIN_COSINE, VERIFY_QUERIES, same_order

log = logging.getLogger("clip_search.engine")
PROMPTS = VERIFY_QUERIES + tuple(q.removeprefix("a satellite photo of ") for q in VERIFY_QUERIES)


def key(backend: str) -> str:
    """The verdicts' entry of ``backend``'s text tower."""
    return f"text:{backend}"


def prepare_text(trial: Any, backend: str) -> bool:
    """Whether ``backend``'s text tower for the trial's model (a :class:`.choice.Trial`) is verified here, exported
    and verified now unless it was before (a refusal is said in the log). It is not kept loaded: a build needs no
    text, and a later query loads it (:func:`verified_text`)."""
    embedder = trial.embedder
    if backend not in TEXT_FILES or embedder.device != "cpu" or not causal_text(embedder.model):
        return False
    verdict = cached_verdict(trial.folder, trial.verdicts, key(backend))
    if verdict is None:
        try:
            tower = OnnxTower(exported(embedder.model, embedder.input_size, trial.folder, TEXT_FILES[backend]))
            verdict = _verdict(trial, tower, backend)
        except ModelError as exc:
            verdict = {"passed": False, "reason": f"it could not be used ({exc})", "export_failed": True}
        except (ImportError, OSError) as exc:
            log.warning("queries stay with the model: the %s text tower could not be made (%s)", backend, exc)
            return False
        trial.verdicts[key(backend)] = verdict
        save_verdicts(trial.folder, trial.verdicts)
    if not verdict.get("passed"):
        log.warning("queries stay with the model: the %s text tower was refused: %s", backend, verdict.get("reason"))
    return bool(verdict.get("passed"))


def _verdict(trial: Any, tower: ImageTower, backend: str) -> dict[str, Any]:
    """The text tower's vectors of :data:`PROMPTS` against the model's, and the sample's top tiles under each."""
    _, tile_vectors, _ = trial.reference()
    prompts = list(PROMPTS)
    own = trial.embedder.encode_text_with(None, prompts)
    fast = trial.embedder.encode_text_with(tower, prompts)
    lowest = float(np.min(np.sum(own * fast, axis=1)))
    same = all(same_order(tile_vectors @ a, tile_vectors @ b) for a, b in zip(own, fast, strict=True))
    passed = lowest >= MIN_COSINE and same
    reason = "" if passed else (f"its prompt vectors differ from the model's (lowest cosine {lowest:.4f})"
                                if lowest < MIN_COSINE else "its prompts rank other top tiles than the model's")
    agreement = {"prompts": len(prompts), "min_cosine": round(lowest, 6), "same_top": same}
    return {"passed": passed, "reason": reason, "agreement": agreement,
            "sha256": file_entry(trial.folder, TEXT_FILES[backend]).get("sha256")}


def verified_text(embedder: Any) -> ImageTower | None:
    """The fastest text tower verified for ``embedder``'s model on this computer (None: none, or not on a CPU)."""
    if embedder.device != "cpu" or not causal_text(embedder.model):
        return None
    folder = export_folder(embedder.identity, embedder.input_size)
    verdicts = read_verdicts(folder)
    for backend, name in TEXT_FILES.items():
        verdict = cached_verdict(folder, verdicts, key(backend))
        if verdict is not None and verdict.get("passed"):
            try:
                return OnnxTower(folder / name)
            except ModelError as exc:
                log.warning("queries stay with the model: %s", exc)
    return None
