"""Embedders: uint8 tiles and text in, L2-normalised float32 vectors out.

:class:`ClipEmbedder` wraps an open_clip model: tiles travel to the device as uint8 and are resized and
normalised there (fp16 on CUDA). Anything with the same methods (the :class:`Embedder` protocol) can
stand in, e.g. a deterministic test embedder.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .errors import InputError
from .models import ModelIdentity, create_model, pick_device
from .settings import ModelSpec


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
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self._mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self.encode_text(["probe"]).shape[1])

    def default_batch_size(self) -> int:
        return 256 if self.device.startswith("cuda") else 32

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if batch.ndim != 4 or batch.shape[3] != 3 or batch.dtype != np.uint8:
            raise InputError(f"Tiles must be (N, H, W, 3) uint8; got {batch.shape} {batch.dtype}.")
        size = self.input_size
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(
                    0.0, 1.0
                )
            x = ((x - self._mean) / self._std).to(self.dtype)
            features = self.model.encode_image(x)
            return F.normalize(features.float(), dim=-1).cpu().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            features = self.model.encode_text(tokens)
            return F.normalize(features.float(), dim=-1).cpu().numpy()


def load_embedder(spec: ModelSpec, device: str = "auto") -> ClipEmbedder:
    """Load the model ``spec`` names onto ``device`` ('auto': CUDA > MPS > CPU)."""
    chosen = pick_device(device)
    model, tokenizer, identity = create_model(spec, chosen)
    return ClipEmbedder(model, tokenizer, identity, chosen)
