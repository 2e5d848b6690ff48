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
import shutil
import socket
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .paths import user_cache_base
from .settings import ModelSpec

RANDOM = "none"
RANDOM_SEED = 0
CONFIG_DIR = Path(__file__).with_name("model_configs")
TINY_ARCH = "clip-search-tiny"


@dataclass(frozen=True)
class Download:
    """Weights open_clip cannot fetch by tag.

    Either a file in a Hugging Face Hub repository (``hub_repo`` + ``hub_file``, fetched into the Hub's
    own cache, so mirrors and proxies set for the Hub apply), or a zip file at ``url`` from which
    ``zip_member`` is extracted into the weights folder (:func:`weights_root`). ``url`` is always the
    address a user can download by hand on another machine. ``revision`` pins a Hub file to a commit
    where the commit is known; every file, pinned or not, is loaded with ``weights_only=True``.
    """

    url: str
    hub_repo: str = ""
    hub_file: str = ""
    zip_member: str = ""
    revision: str = "main"  # a Hub commit: the file can then never change under the same name

    @property
    def file_name(self) -> str:
        return Path(self.hub_file or self.zip_member).name


@dataclass(frozen=True)
class Preset:
    """A named model: open_clip architecture + weights, with where they come from.

    ``pretrained`` is an open_clip weights tag, or empty when ``download`` says where the weights are.
    ``quick_gelu``: the weights were trained with the QuickGELU activation (models initialised from
    OpenAI's CLIP); open_clip 3 no longer turns it on by itself for weights it did not ship.
    ``figures`` are the publishers' own results, quoted so that presets can be compared; they were not
    measured by this project.
    """

    name: str
    arch: str
    pretrained: str
    description: str
    quick_gelu: bool = False
    family: str = ""
    licence: str = ""
    source: str = ""
    figures: str = ""
    download: Download | None = None

    def details(self) -> str:
        """Several lines for people: what it is, where the weights come from, licence, published figures."""
        lines = [f"{self.name}: {self.description}"]
        if self.source:
            lines.append(f"Weights: {self.source}")
        if self.licence:
            lines.append(f"Licence: {self.licence}")
        if self.figures:
            lines.append(f"Published figures: {self.figures}")
        return "\n".join(lines)


def _hub(repo: str, file: str, revision: str = "main") -> Download:
    return Download(f"https://huggingface.co/{repo}/resolve/{revision}/{file}", hub_repo=repo, hub_file=file,
                    revision=revision)


REMOTECLIP_COMMIT = "bf1d8a3ccf2ddbf7c875705e46373bfe542bce38"  # "Upload 3 files", the repository's one upload
GEORSCLIP_B32_COMMIT = "4920188e6eba4e711ef9848cfd7cb77e874ee33f"


SKYSCRIPT_BUCKET = "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ckpt"

OPENAI_LICENCE = "MIT (OpenAI CLIP)"
LAION_LICENCE = "MIT (OpenCLIP); trained on LAION-2B"
REMOTECLIP = "RemoteCLIP (Liu et al., IEEE TGRS 2024; github.com/ChenDelong1999/RemoteCLIP)"
REMOTECLIP_LICENCE = (
    "not stated on the weights page (Hugging Face); see the authors' GitHub repository before commercial use"
)
GEORSCLIP = "GeoRSCLIP (Zhang et al., RS5M, IEEE TGRS 2024; github.com/om-ai-lab/RS5M)"
GEORSCLIP_LICENCE = "weights: 'cc' on the model page (an earlier revision: CC-BY-4.0); code: MIT"
SKYCLIP = "SkyCLIP (Wang et al., SkyScript, AAAI 2024; github.com/wangzhecheng/SkyScript)"
SKYCLIP_LICENCE = "code: MIT; no separate licence stated for the weights"

PRESET_LIST: tuple[Preset, ...] = (
    Preset(
        "RemoteCLIP-ViT-B-32", "ViT-B-32", "",
        "CLIP ViT-B/32 fine-tuned on remote-sensing image-text pairs; fast, the default.",
        quick_gelu=True, family="RemoteCLIP", licence=REMOTECLIP_LICENCE,
        source=f"{REMOTECLIP}; Hugging Face chendelong/RemoteCLIP, RemoteCLIP-ViT-B-32.pt",
        figures=(
            "WHU-RS19 text-to-image mAP over class names 0.82 with one prompt, 0.88 with an aerial prompt "
            "ensemble (OpenAI ViT-B/32: 0.58 / 0.72), from published embeddings of its 1,005 scenes; "
            "AID zero-shot top-1 77.96 (OpenAI ViT-B/32: 68.62)"
        ),
        download=_hub("chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt", REMOTECLIP_COMMIT),
    ),
    Preset(
        "RemoteCLIP-ViT-L-14", "ViT-L-14", "",
        "CLIP ViT-L/14 fine-tuned on remote-sensing image-text pairs; about 18 times the computation of ViT-B/32.",
        quick_gelu=True, family="RemoteCLIP", licence=REMOTECLIP_LICENCE,
        source=f"{REMOTECLIP}; Hugging Face chendelong/RemoteCLIP, RemoteCLIP-ViT-L-14.pt",
        figures=(
            "retrieval mean recall 9.14 points above the previous best on RSITMD and 8.92 on RSICD (paper, "
            "best backbone); RSITMD / RSICD mean recall 49.38 / 35.26 as listed by the RS5M authors"
        ),
        download=_hub("chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt", REMOTECLIP_COMMIT),
    ),
    Preset(
        "RemoteCLIP-RN50", "RN50", "",
        "CLIP ResNet-50 fine-tuned on remote-sensing image-text pairs.",
        quick_gelu=True, family="RemoteCLIP", licence=REMOTECLIP_LICENCE,
        source=f"{REMOTECLIP}; Hugging Face chendelong/RemoteCLIP, RemoteCLIP-RN50.pt",
        figures="up to 6.39 points more average zero-shot accuracy than CLIP over 12 datasets (paper, best backbone)",
        download=_hub("chendelong/RemoteCLIP", "RemoteCLIP-RN50.pt", REMOTECLIP_COMMIT),
    ),
    Preset(
        "GeoRSCLIP-ViT-B-32", "ViT-B-32", "",
        "CLIP ViT-B/32 fine-tuned on RS5M (5 million remote-sensing image-text pairs).",
        quick_gelu=True, family="GeoRSCLIP", licence=GEORSCLIP_LICENCE,
        source=f"{GEORSCLIP}; Hugging Face Zilun/GeoRSCLIP, ckpt/RS5M_ViT-B-32.pt",
        figures=(
            "zero-shot top-1 EuroSAT 61.40, RESISC45 72.74, AID 74.42; retrieval mean recall RSITMD 35.33, "
            "RSICD 26.06"
        ),
        download=_hub("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", GEORSCLIP_B32_COMMIT),
    ),
    Preset(
        "GeoRSCLIP-ViT-L-14", "ViT-L-14", "",
        "CLIP ViT-L/14 fine-tuned on RS5M.",
        quick_gelu=True, family="GeoRSCLIP", licence=GEORSCLIP_LICENCE,
        source=f"{GEORSCLIP}; Hugging Face Zilun/GeoRSCLIP, ckpt/RS5M_ViT-L-14.pt",
        figures="none published for this backbone; activation as for the OpenAI-initialised ViT-B/32 (unconfirmed)",
        download=_hub("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-L-14.pt"),
    ),
    Preset(
        "GeoRSCLIP-ViT-H-14", "ViT-H-14", "",
        "OpenCLIP ViT-H/14 (LAION-2B) fine-tuned on RS5M; the largest and slowest preset.",
        family="GeoRSCLIP", licence=GEORSCLIP_LICENCE,
        source=f"{GEORSCLIP}; Hugging Face Zilun/GeoRSCLIP, ckpt/RS5M_ViT-H-14.pt",
        figures=(
            "zero-shot top-1 EuroSAT 67.47, RESISC45 73.83, AID 76.33; retrieval mean recall RSITMD 40.38, "
            "RSICD 28.48"
        ),
        download=_hub("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-H-14.pt"),
    ),
    Preset(
        "SkyCLIP-ViT-B-32", "ViT-B-32", "",
        "CLIP ViT-B/32 trained on SkyScript (OpenStreetMap-tagged aerial and satellite images), top 50% subset.",
        family="SkyCLIP", licence=SKYCLIP_LICENCE,
        source=f"{SKYCLIP}; {SKYSCRIPT_BUCKET}/SkyCLIP_ViT_B32_top50pct.zip, epoch_20.pt",
        figures="average zero-shot top-1 over 7 scene datasets 53.02 (the LAION-2B ViT-B/32 it started from: 49.66)",
        download=Download(f"{SKYSCRIPT_BUCKET}/SkyCLIP_ViT_B32_top50pct.zip", zip_member="epoch_20.pt"),
    ),
    Preset(
        "SkyCLIP-ViT-L-14", "ViT-L-14", "",
        "CLIP ViT-L/14 trained on SkyScript, top 30% subset.",
        quick_gelu=True, family="SkyCLIP", licence=SKYCLIP_LICENCE,
        source=f"{SKYCLIP}; {SKYSCRIPT_BUCKET}/SkyCLIP_ViT_L14_top30pct.zip, epoch_20.pt",
        figures="average zero-shot top-1 over 7 scene datasets 59.91 (OpenAI ViT-L/14: 53.76)",
        download=Download(f"{SKYSCRIPT_BUCKET}/SkyCLIP_ViT_L14_top30pct.zip", zip_member="epoch_20.pt"),
    ),
    Preset(
        "ViT-B-32-openai", "ViT-B-32", "openai",
        "OpenAI CLIP ViT-B/32; fast, general-purpose (not trained for aerial imagery).",
        quick_gelu=True, family="OpenAI CLIP", licence=OPENAI_LICENCE,
        source="open_clip tag 'openai' (downloaded by open_clip from the Hugging Face Hub)",
        figures=(
            "WHU-RS19 text-to-image mAP 0.58 with one prompt, 0.72 with an aerial prompt ensemble; "
            "AID zero-shot top-1 68.62"
        ),
    ),
    Preset(
        "ViT-B-32-laion2b", "ViT-B-32", "laion2b_s34b_b79k",
        "OpenCLIP ViT-B/32 trained on LAION-2B; general-purpose.",
        family="OpenCLIP", licence=LAION_LICENCE,
        source="open_clip tag 'laion2b_s34b_b79k' (Hugging Face laion/CLIP-ViT-B-32-laion2B-s34B-b79K)",
    ),
    Preset(
        "ViT-L-14-openai", "ViT-L-14", "openai",
        "OpenAI CLIP ViT-L/14; slower, more accurate than ViT-B/32 (not trained for aerial imagery).",
        quick_gelu=True, family="OpenAI CLIP", licence=OPENAI_LICENCE,
        source="open_clip tag 'openai' (downloaded by open_clip from the Hugging Face Hub)",
        figures="average zero-shot top-1 over SkyScript's 7 scene datasets 53.76",
    ),
    Preset(
        "ViT-L-14-laion2b", "ViT-L-14", "laion2b_s32b_b82k",
        "OpenCLIP ViT-L/14 trained on LAION-2B; general-purpose.",
        family="OpenCLIP", licence=LAION_LICENCE,
        source="open_clip tag 'laion2b_s32b_b82k' (Hugging Face laion/CLIP-ViT-L-14-laion2B-s32B-b82K)",
    ),
    Preset(
        "tiny-random", TINY_ARCH, RANDOM,
        "A tiny architecture with random weights, for tests. Its results mean nothing.",
        family="test", licence="-", source="none: random weights from a fixed seed",
    ),
)
PRESETS: dict[str, Preset] = {p.name: p for p in PRESET_LIST}
DEFAULT_PRESET = "RemoteCLIP-ViT-B-32"


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


def weights_root() -> Path:
    """Where downloaded weights that are not on the Hub are kept: $CLIP_SEARCH_WEIGHTS, else the user cache."""
    explicit = os.environ.get("CLIP_SEARCH_WEIGHTS")
    return Path(explicit) if explicit else user_cache_base() / "weights"


def _by_hand(preset: Preset, download: Download) -> str:
    return (
        f"Download {download.url} on a machine with internet access"
        + (f", take {download.zip_member} out of the zip" if download.zip_member else "")
        + f", and choose that file as the weights of {preset.name} (--model {preset.name} --pretrained FILE)."
    )


def _fetch_zip_member(download: Download, folder: Path) -> Path:
    """``download.zip_member`` extracted into ``folder`` (once; a finished file is never half-written)."""
    target = folder / download.file_name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        archive = Path(scratch) / "weights.zip"
        # the address is one of the presets' (https, or file:// in tests); fetch_weights checks the scheme
        with contextlib.closing(urllib.request.urlopen(download.url, timeout=60)) as response:  # nosec B310
            with open(archive, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 22)
        with zipfile.ZipFile(archive) as zipped:
            names = [n for n in zipped.namelist() if n == download.zip_member or n.endswith("/" + download.zip_member)]
            if not names:
                raise ModelError(f"{download.url} holds no {download.zip_member}.")
            partial = Path(scratch) / download.file_name
            with zipped.open(names[0]) as member, open(partial, "wb") as out:
                shutil.copyfileobj(member, out, 1 << 22)
        os.replace(partial, target)
    return target


def fetch_weights(preset: Preset) -> str:
    """Local path of a preset's downloadable weights, downloading them the first time."""
    download = preset.download
    if download is None:
        raise ModelError(f"{preset.name} has no downloadable weights file.")
    if not download.url.startswith(("https://", "http://", "file://")):
        raise ModelError(f"{preset.name}: unsupported weights address {download.url}.")
    try:
        if download.hub_repo:
            from huggingface_hub import hf_hub_download

            with offline_when_unreachable():
                return str(hf_hub_download(download.hub_repo, download.hub_file, revision=download.revision))
        return str(_fetch_zip_member(download, weights_root() / preset.name))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"Cannot get the weights of {preset.name}: {exc}. {_by_hand(preset, download)}") from exc


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
