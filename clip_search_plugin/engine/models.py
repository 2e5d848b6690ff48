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
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .settings import ModelSpec

RANDOM = "none"
RANDOM_SEED = 0
CONFIG_DIR = Path(__file__).with_name("model_configs")
TINY_ARCH = "clip-search-tiny"


@dataclass(frozen=True)
class Preset:
    """A named model: open_clip architecture + weights, with where they come from."""

    name: str
    arch: str
    pretrained: str
    description: str
    quick_gelu: bool = False


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ViT-B-32-openai",
            "ViT-B-32",
            "openai",
            "OpenAI CLIP ViT-B/32 (MIT licence); fast, general-purpose.",
            quick_gelu=True,
        ),
        Preset(
            "ViT-B-32-laion2b",
            "ViT-B-32",
            "laion2b_s34b_b79k",
            "LAION-2B ViT-B/32 (MIT licence); general-purpose, trained on more data.",
        ),
        Preset(
            "ViT-L-14-openai",
            "ViT-L-14",
            "openai",
            "OpenAI CLIP ViT-L/14 (MIT licence); slower, more accurate.",
            quick_gelu=True,
        ),
        Preset(
            "tiny-random",
            TINY_ARCH,
            RANDOM,
            "A tiny architecture with random weights, for tests. Its results mean nothing.",
        ),
    )
}
DEFAULT_PRESET = "ViT-B-32-openai"


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
    """The identity a spec loads, and the local checkpoint path if it names one."""
    preset = PRESETS.get(spec.name)
    pretrained: str | None
    if preset is not None:
        arch, pretrained, quick_gelu = preset.arch, spec.pretrained or preset.pretrained, preset.quick_gelu
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


def load_checkpoint_into(model: Any, path: str) -> None:
    """Load a local checkpoint file into ``model`` safely (``weights_only=True``: no pickled code runs)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"Cannot load checkpoint {path}: {exc}. It must be a PyTorch state dict saved with "
            "torch.save (files that need arbitrary pickled code are refused for safety)."
        ) from exc
    state = _state_dict_from(checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"Checkpoint {path} does not fit architecture {type(model).__name__}: {str(exc)[:300]}. "
            "Choose the architecture the checkpoint was trained with."
        ) from exc


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


HUB_HOST = ("huggingface.co", 443)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all (one quick connection, no download).

    Behind a proxy a direct connection proves nothing, so the hub is then assumed reachable.
    """
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_when_unreachable() -> Iterator[None]:
    """Use only locally cached hub files when the hub cannot be reached.

    Without this, each download is retried with back-off for most of a minute before failing.
    """
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    if not before and not hub_reachable():
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


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


def create_model(spec: ModelSpec, device: str) -> tuple[Any, Any, ModelIdentity]:
    """(model in eval mode on ``device``, tokenizer, identity) for ``spec``."""
    import open_clip
    import torch

    register_configs()
    identity, checkpoint = resolve_identity(spec)
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
            pretrained = None if identity.arch.startswith("hf-hub:") else identity.weights
            with offline_when_unreachable():
                model = _open_clip_model(identity, pretrained, precision, require_pretrained=True)
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
