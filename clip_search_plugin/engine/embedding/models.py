"""Model presets (a registry of plain data) and the one loader that turns a ModelSpec into an Embedder.

Ways to name a model, all through :func:`load_embedder`:
- a preset name from :data:`PRESETS` (``ViT-B-32-openai``);
- an open_clip architecture with an open_clip weights tag (``ViT-B-32`` + ``laion2b_s34b_b79k``);
- an architecture with a local checkpoint file (loaded with ``torch.load(..., weights_only=True)``);
- a ``hf-hub:org/name`` model;
- an architecture with ``pretrained="none"``: random weights from a fixed seed, for tests only, and
  labelled as such in the manifest and everything printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..settings import ModelSpec
from .downloads import WeightsUnavailable, download_failure, fetch_weights, offline_when_unreachable
from .presets import (  # noqa: F401 - the registry, as this module has always exposed it
    DEFAULT_PRESET,
    PRESETS,
    RANDOM,
    TINY_ARCH,
    Download,
    Preset,
)

RANDOM_SEED = 0
CONFIG_DIR = Path(__file__).with_name("model_configs")


@dataclass(frozen=True)
class ModelIdentity:
    """What produced an index's vectors; stored in the manifest and compared on search."""

    arch: str
    weights: str
    random_weights: bool
    quick_gelu: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        return cls(
            arch=str(data["arch"]),
            weights=str(data["weights"]),
            random_weights=bool(data["random_weights"]),
            quick_gelu=bool(data.get("quick_gelu", False)),
        )

    def label(self) -> str:
        text = f"{self.arch} ({self.weights})"
        return text + " [RANDOM WEIGHTS: results are meaningless]" if self.random_weights else text

    def key(self) -> str:
        """Short stable identifier for cache folder names."""
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{self.arch}-{self.weights}")
        return slug[:60]


def register_configs() -> None:
    """Make the architectures shipped in ``model_configs/`` known to open_clip."""
    import open_clip

    if TINY_ARCH not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a whole file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_identity(spec: ModelSpec) -> tuple[ModelIdentity, str | None]:
    """The identity a spec loads, and the local checkpoint path if it names one (nothing is downloaded)."""
    preset = PRESETS.get(spec.name)
    pretrained: str | None
    if preset is not None:
        arch, pretrained, quick_gelu = preset.arch, spec.pretrained or preset.pretrained, preset.quick_gelu
        if not pretrained and preset.download is not None:
            return ModelIdentity(arch, f"{preset.family}:{preset.download.file_name}", False, quick_gelu), None
    else:
        arch, pretrained, quick_gelu = spec.name, spec.pretrained, False
    if arch.startswith("hf-hub:"):
        return ModelIdentity(arch, arch, False), None
    if pretrained is None:
        raise ModelError(
            f"Unknown model preset {spec.name!r}. Use one of {', '.join(PRESETS)}, or give an "
            "open_clip architecture with --pretrained TAG|CHECKPOINT_FILE|none."
        )
    if pretrained.lower() == RANDOM:
        return ModelIdentity(arch, f"random(seed={RANDOM_SEED})", True, quick_gelu), None
    if os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors")):
        if not os.path.isfile(pretrained):
            raise ModelError(f"Checkpoint file not found: {pretrained}. Check the path.")
        checksum = file_sha256(pretrained)
        return ModelIdentity(arch, f"sha256:{checksum[:16]}", False, quick_gelu), os.path.abspath(pretrained)
    return ModelIdentity(arch, pretrained, False, quick_gelu), None


def _state_dict_from(checkpoint: Any) -> dict[str, Any]:
    """The model weights inside a checkpoint: bare, under 'state_dict' / 'model', DDP 'module.' prefix."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ModelError("The checkpoint holds no state dict; save it with torch.save(model.state_dict()).")
    if all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def load_checkpoint_into(model: Any, path: str) -> list[str]:
    """Load a local checkpoint file into ``model`` safely (``weights_only=True``: no pickled code runs).

    Every weight of the model must be in the file. Entries the model does not have (buffers some
    training code saves, such as position ids) are ignored and returned, so they can be reported.
    """
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"Cannot load checkpoint {path}: {exc}. It must be a PyTorch state dict saved with "
            "torch.save (files that need arbitrary pickled code are refused for safety)."
        ) from exc
    state = _state_dict_from(checkpoint)
    misfit = "Choose the architecture the checkpoint was trained with."
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"Checkpoint {path} does not fit this architecture: {str(exc)[:300]}. {misfit}") from exc
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise ModelError(f"Checkpoint {path} lacks {len(missing)} weight(s) of this architecture ({shown}). {misfit}")
    if len(unexpected) > len(state) // 2:
        raise ModelError(f"Checkpoint {path} is mostly weights of another architecture. {misfit}")
    return list(unexpected)


def pick_device(requested: str = "auto") -> str:
    """'cuda' > 'mps' > 'cpu' for 'auto'; a requested device is checked to exist."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is usable here; choose device 'cpu' or 'auto'.")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise ModelError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.")
    return requested


def _open_clip_model(
    identity: ModelIdentity, pretrained: str | None, precision: str, require_pretrained: bool = False
) -> Any:
    """open_clip's model for ``identity`` on the CPU, with the given weights (None: random)."""
    import open_clip

    return open_clip.create_model(
        identity.arch,
        pretrained=pretrained,
        precision=precision,
        device="cpu",
        force_quick_gelu=identity.quick_gelu,
        require_pretrained=require_pretrained,
    )


def _tagged_model(identity: ModelIdentity, precision: str) -> Any:
    """open_clip's model with weights open_clip downloads itself (a tag such as ``openai``, or ``hf-hub:``)."""
    import open_clip

    pretrained = None if identity.arch.startswith("hf-hub:") else identity.weights
    try:
        with offline_when_unreachable():
            return _open_clip_model(identity, pretrained, precision, require_pretrained=True)
    except Exception as exc:
        config = {} if pretrained is None else open_clip.get_pretrained_cfg(identity.arch, pretrained)
        if pretrained is not None and not config:
            raise  # not a download: an unknown tag (open_clip's message names the known ones)
        hub = config.get("hf_hub") or identity.arch.removeprefix("hf-hub:")
        url = config.get("url") or f"https://huggingface.co/{hub.rstrip('/')}"
        raise WeightsUnavailable(
            f"Cannot load model {identity.label()}: {exc} If this machine cannot download weights, download "
            f"{url} elsewhere and pass it as a file (--pretrained PATH).",
            identity.label(), url, Path(url).name, download_failure(exc)) from exc


def create_model(spec: ModelSpec, device: str) -> tuple[Any, Any, ModelIdentity]:
    """(model in eval mode on ``device``, tokenizer, identity) for ``spec``."""
    import open_clip
    import torch

    register_configs()
    identity, checkpoint = resolve_identity(spec)
    preset = PRESETS.get(spec.name)
    if checkpoint is None and preset is not None and preset.download is not None and not spec.pretrained:
        checkpoint = fetch_weights(preset)
    precision = "fp16" if device.startswith("cuda") else "fp32"
    try:
        if identity.random_weights:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = _open_clip_model(identity, None, precision)
        elif checkpoint is not None:
            model = _open_clip_model(identity, None, "fp32")
            load_checkpoint_into(model, checkpoint)
            if precision == "fp16":
                model = model.half()
        else:
            model = _tagged_model(identity, precision)
        hub_tokenizer = identity.arch.startswith("hf-hub:")
        with offline_when_unreachable() if hub_tokenizer else contextlib.nullcontext():
            tokenizer = open_clip.get_tokenizer(identity.arch)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"Cannot load model {identity.label()}: {exc} If this machine cannot download weights, "
            "download the checkpoint elsewhere and pass it as a file (--pretrained PATH)."
        ) from exc
    return model.to(device).eval(), tokenizer, identity


def causal_text(model: Any) -> bool:
    """Whether ``model``'s text tower is CLIP's own: causal, pooled at the end-of-text token (the highest token id),
    so that the positions after the longest prompt's end can be left out without changing any vector."""
    causal = getattr(model, "attn_mask", None) is not None and getattr(model, "text_pool_type", None) == "argmax"
    return causal and hasattr(model, "token_embedding") and hasattr(model, "positional_embedding")
