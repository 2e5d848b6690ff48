"""Search quality on published embeddings: the engine's query path after the encoders, on labelled scenes.

A file (``.npz``) holds a model's image vectors of labelled scenes and, for each of several prompt templates
(named by keys such as ``a_satellite_image_of_a`` = "a satellite image of a {}"), the text vector of each class
name: exactly what the query path receives from the encoders. Each scene becomes a tile of an in-memory
index (a Faiss index, with its look-alikes found as :func:`.pipeline.build_index` finds them), and the
searches go through :func:`.searching.ranked_tiles`, :func:`.search.ensemble`, :func:`.search.with_negative`
and :func:`.search.rocchio` as a search from the dock does. Two protocols, always both:

- *balanced*: each class name searched over all scenes (mAP, P@10);
- *rare*: per class, :data:`RARE_DRAWS` fixed-seed draws keeping :data:`RARE_KEEP` of its scenes and every scene
  of the other classes (about 0.6% positives, like pools among a town's tiles); the mean AP over all draws.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedding.embedder import normalise_rows
from ..embedding.models import ModelIdentity
from ..errors import InputError
from ..index.neighbours import mutual_neighbours
from ..index.store import OpenIndex
from ..settings import TilingSettings
from ..tiling.raster_io import RasterInfo

RARE_DRAWS = 20
RARE_KEEP = 3
SCENE_PX = 256  # each scene is a tile of its own, side by side, none overlapping another


@dataclass(frozen=True)
class EmbeddingSet:
    """One model's embeddings of labelled scenes (unit vectors)."""

    model: str
    images: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64, 0 .. len(classes) - 1
    classes: tuple[str, ...]
    keys: tuple[str, ...]  # template keys
    texts: np.ndarray  # (len(keys), len(classes), D) float32

    def query(self, keys: Sequence[str], class_index: int) -> np.ndarray:
        """The text vectors of one class name in the templates ``keys`` (rows to be ensembled)."""
        rows = [self.keys.index(k) for k in keys]
        return np.asarray(self.texts[rows, class_index], dtype=np.float32)


def load_embedding_set(path: str | os.PathLike[str]) -> EmbeddingSet:
    """Read and check a file of the schema above; a clear :class:`InputError` for anything else."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("images", "labels", "classes", "templates", "texts")}
    except KeyError as exc:
        raise InputError(f"{path} lacks the array {exc}; an embeddings file holds images, labels, classes, "
                         "templates and texts.") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path} as an embeddings file (.npz): {exc}.") from exc
    images, labels, texts = arrays["images"], arrays["labels"], arrays["texts"]
    classes = tuple(str(c) for c in arrays["classes"])
    keys = tuple(str(k) for k in arrays["templates"])
    shape_ok = (images.ndim == 2 and labels.shape == (len(images),) and texts.ndim == 3
                and texts.shape == (len(keys), len(classes), images.shape[1]))
    if not shape_ok or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}: the arrays do not fit together (images {images.shape}, labels {labels.shape}, "
                         f"texts {texts.shape} for {len(keys)} templates and {len(classes)} classes).")
    if len(images) < 2 or labels.min() < 0 or labels.max() >= len(classes):
        raise InputError(f"{path}: labels must index the {len(classes)} classes and there must be scenes to search.")
    if not (np.isfinite(images).all() and np.isfinite(texts).all()):
        raise InputError(f"{path}: the vectors hold NaN or infinite values.")
    return EmbeddingSet(Path(path).stem, _unit(images), labels.astype(np.int64), classes, keys, _unit(texts))


def _unit(vectors: np.ndarray) -> np.ndarray:
    flat = np.asarray(vectors, dtype=np.float32).reshape(-1, vectors.shape[-1])
    return normalise_rows(flat).reshape(vectors.shape)


def memory_index(vectors: np.ndarray, name: str = "scenes") -> OpenIndex:
    """An in-memory index of unit ``vectors``, one tile per vector (none overlapping), with its look-alikes."""
    import faiss

    n, dim = vectors.shape
    flat = faiss.IndexFlatIP(dim)
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    ids = np.arange(n)
    tiles = np.stack([ids * SCENE_PX, np.zeros(n, np.int64), np.full(n, SCENE_PX), np.full(n, SCENE_PX),
                      np.zeros(n, np.int64)], axis=1).astype(np.int32)
    raster = RasterInfo(path=name, width=n * SCENE_PX, height=SCENE_PX, count=3, dtype="uint8", crs_wkt="",
                        is_geographic=False, linear_units_factor=1.0, transform=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
                        georeferenced=False, bands=(1, 2, 3), stretch=None, fingerprint=name)
    index = OpenIndex(Path(name), {"dim": dim}, raster, ModelIdentity(name, name, False), TilingSettings(), tiles,
                      flat)
    index.neighbours = mutual_neighbours(flat, tiles)
    return index


@dataclass(frozen=True)
class Pool:
    """Scenes searched together for one class: an index over them, and which are of the class."""

    protocol: str
    class_index: int
    index: OpenIndex
    relevant: np.ndarray  # (len(scenes),) bool


def pools(es: EmbeddingSet, protocol: str, draws: int = RARE_DRAWS, keep: int = RARE_KEEP) -> Iterator[Pool]:
    """The pools of a protocol: ``balanced`` (every class over all scenes) or ``rare`` (see the module)."""
    if protocol == "balanced":
        index = memory_index(es.images, es.model)
        for c in range(len(es.classes)):
            yield Pool(protocol, c, index, es.labels == c)
        return
    for c in range(len(es.classes)):
        own, others = np.flatnonzero(es.labels == c), np.flatnonzero(es.labels != c)
        for draw in range(draws):
            rng = np.random.default_rng(1000 * c + draw)
            kept = rng.choice(own, size=min(keep, len(own)), replace=False)
            scenes = np.concatenate([np.sort(kept), others])
            yield Pool(protocol, c, memory_index(es.images[scenes], es.model), es.labels[scenes] == c)


def average_precision(ranked: Sequence[int], relevant: np.ndarray) -> float:
    """AP of a full ranking of tile ids against the boolean relevance of every tile (ranked or not)."""
    total = int(relevant.sum())
    if total == 0:
        return 0.0
    hits = relevant[np.asarray(ranked, dtype=np.int64)]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / total)


def precision_at(ranked: Sequence[int], relevant: np.ndarray, k: int = 10) -> float:
    return float(relevant[np.asarray(ranked[:k], dtype=np.int64)].sum() / k)
