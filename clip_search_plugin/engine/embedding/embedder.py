"""Embedders: uint8 tiles and text in, L2-normalised float32 vectors out.

:class:`ClipEmbedder` wraps an open_clip model: tiles travel to the device as uint8 and are resized and
normalised there (fp16 on CUDA). Anything with the same methods (the :class:`Embedder` protocol) can
stand in, e.g. a deterministic test embedder.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..errors import InputError, ModelError
from ..settings import ModelSpec
from .backends import TORCH
from .backends.choice import BackendChoice, choose_backend
from .backends.text import verified_text
from .backends.verify import VERIFY_QUERIES
from .models import ModelIdentity, causal_text, create_model, pick_device

log = logging.getLogger("clip_search.engine")
GPU_MEMORY_SHARE = 0.5  # of the free GPU memory a batch may fill
MIN_GPU_BATCH, MAX_GPU_BATCH = 16, 1024
TEXT_CACHE = 256  # prompt lists whose vectors are remembered


class Embedder(Protocol):
    identity: ModelIdentity
    dim: int
    input_size: int
    device: str

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, dim) float32, rows of unit length."""
        ...

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """N strings -> (N, dim) float32, rows of unit length."""
        ...

    def default_batch_size(self) -> int: ...


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class ClipEmbedder:
    """An open_clip model on a device."""

    def __init__(self, model: Any, tokenizer: Any, identity: ModelIdentity, device: str) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.max_batch: int | None = None  # set when the GPU ran out of memory
        self.backend = BackendChoice(TORCH)  # how images are embedded (see .backends): the model itself until chosen
        self.text_tower: Any = None  # how prompts are: a verified fast text tower (see .backends.text), or the model
        self._text_looked = False  # whether one verified on this computer was looked for (at the first query)
        self._text_cache: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self._mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self.encode_text_with(None, ["probe"]).shape[1])

    def default_batch_size(self) -> int:
        """32 on a CPU; on a GPU, a power of two that fills about half of the free memory (16 to 1024)."""
        if not self.device.startswith("cuda"):
            return 32
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        fits = free * GPU_MEMORY_SHARE / self._bytes_per_tile()
        return int(min(MAX_GPU_BATCH, max(MIN_GPU_BATCH, 2 ** int(np.floor(np.log2(max(fits, 1)))))))

    def _bytes_per_tile(self) -> float:
        """GPU memory one tile of a batch takes, measured on a probe batch."""
        import torch

        probe = 8
        tiles = np.zeros((probe, self.input_size, self.input_size, 3), dtype=np.uint8)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self._encode_images(tiles)
        torch.cuda.synchronize()
        return max(1.0, (torch.cuda.max_memory_allocated() - before) / probe)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """Unit image vectors of uint8 tiles (N, H, W, 3). When the GPU runs out of memory, the batch is
        split in halves (and later batches stay that size) until it fits."""
        import torch

        if batch.ndim != 4 or batch.shape[3] != 3 or batch.dtype != np.uint8:
            raise InputError(f"Tiles must be (N, H, W, 3) uint8; got {batch.shape} {batch.dtype}.")
        limit = min(len(batch), self.max_batch or len(batch))
        parts, start = [], 0
        while start < len(batch):
            part = batch[start : start + limit]
            try:
                parts.append(self._encode_images(part))
            except torch.cuda.OutOfMemoryError as exc:
                if limit == 1:
                    raise ModelError(
                        "The GPU ran out of memory for a single tile; close other programs using it, or choose "
                        "the device 'cpu' in the settings."
                    ) from exc
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                limit = self.max_batch = max(1, limit // 2)
                log.warning("GPU out of memory: batches of %d tiles from now on", limit)
                continue
            start += len(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def use_backend(self, requested: str, sample: Callable[[], np.ndarray], planned_tiles: int | None = None) -> None:
        """Embed images from now on with the backend ``requested`` (see :func:`.backends.choice.choose_backend`),
        verified on ``sample()`` tiles if it has not been on this computer."""
        if requested == self.backend.requested and self.backend.name != TORCH:
            return  # chosen already, verified, loaded
        queries = lambda: self.encode_text(list(VERIFY_QUERIES))  # noqa: E731
        self.backend = choose_backend(self, requested, sample, queries, planned_tiles)
        if self.backend.text_verified and self.text_tower is None:
            self._text_looked = False  # the next query loads the text tower just verified

    def encode_with(self, tower: Any, batch: np.ndarray) -> np.ndarray:
        """Unit image vectors of ``batch`` made by ``tower`` (None: the model itself), whatever backend is in use."""
        return self._encode_images(batch, tower)

    def _encode_images(self, batch: np.ndarray, tower: Any = False) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        size = self.input_size
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device.startswith("cuda"):
                x = x.pin_memory()  # page-locked: the copy to the GPU runs without a staging copy
            x = x.to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(
                    0.0, 1.0
                )
            x = ((x - self._mean) / self._std).to(self.dtype)
            tower = self.backend.tower if tower is False else tower
            features = self.model.encode_image(x) if tower is None else tower(x)
            return F.normalize(features.float(), dim=-1).cpu().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Unit text vectors (by the verified fast text tower where there is one); the last TEXT_CACHE prompt lists
        are remembered (a repeated query is instant)."""
        key = tuple(texts)
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key].copy()
        vectors = self.encode_text_with(self.fast_text(), texts)
        self._text_cache[key] = vectors
        if len(self._text_cache) > TEXT_CACHE:
            self._text_cache.popitem(last=False)
        return vectors.copy()

    def encode_text_with(self, tower: Any, texts: list[str]) -> np.ndarray:
        """Unit text vectors of ``texts`` made by ``tower`` (None: the model itself), not remembered."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            return F.normalize(self._text_features(tokens, tower).float(), dim=-1).cpu().numpy()

    def fast_text(self) -> Any:
        """The text tower verified for this model on this computer (looked for once), or None: the model."""
        if not self._text_looked:
            self._text_looked = True
            self.text_tower = verified_text(self)
        return self.text_tower

    def _text_features(self, tokens: Any, tower: Any = None) -> Any:
        """open_clip's encode_text, on the tokens up to the longest prompt's end-of-text token only.

        CLIP's text tower is causal and pools at the end-of-text token, so the padding after it (77 - n
        positions) cannot change the result; leaving it out makes short prompts several times faster
        (identical vectors, tested). Towers that are not causal or pool otherwise run unchanged; ``tower``, an
        exported text tower (:mod:`.backends.text`), takes the same cut tokens.
        """
        import torch

        m = self.model
        if not causal_text(m):
            return m.encode_text(tokens)
        end = tokens.argmax(dim=-1)  # the end-of-text token has the highest id
        n = int(end.max()) + 1
        if tower is not None:
            return tower(tokens[:, :n])
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens[:, :n]).to(cast) + m.positional_embedding[:n].to(cast)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        x = x[torch.arange(x.shape[0], device=x.device), end]
        projection = m.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def load_embedder(spec: ModelSpec, device: str = "auto") -> ClipEmbedder:
    """Load the model ``spec`` names onto ``device`` ('auto': CUDA > MPS > CPU)."""
    chosen = pick_device(device)
    model, tokenizer, identity = create_model(spec, chosen)
    return ClipEmbedder(model, tokenizer, identity, chosen)
