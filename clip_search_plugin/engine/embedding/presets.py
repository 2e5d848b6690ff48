"""Model presets: named open_clip architectures with their weights, where those come from, their licence and
the publishers' own figures. Plain data, apart from the loading code (:mod:`.models`); pure Python, so the
plugin reads it in QGIS's own Python (the settings dialog lists and describes the presets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RANDOM = "none"  # the weights setting that means random weights (tests and trials only)
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
            "WHU-RS19 text-to-image mAP over class names 0.82 with one prompt, 0.88 with a 106-prompt "
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
