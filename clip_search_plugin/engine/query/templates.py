"""Prompt templates: the default aerial set, and reading and checking a user's own (pure Python)."""

from __future__ import annotations

import os

from ..errors import InputError

# The default prompt ensemble: the query vector is the mean of the prompts' normalised text embeddings,
# renormalised (the prompt-ensemble method of the CLIP paper). The five templates were chosen from the 106
# published remote-sensing template keys by greedy forward selection on the mean of both protocols of
# scripts/evaluate.py --embeddings over the five models of the shared embeddings; selection on one half of
# the scenes held up on the other half (see BENCHMARKS.md). Few prompts keep the text side quick.
DEFAULT_TEMPLATE_KEYS: tuple[str, ...] = (
    "an_aerial_image_of_a_nice",
    "a_good_remote_sensing_image_of_the",
    "a_black_and_white_aerial_image_of_a",
    "an_aerial_image_of_the_cool",
    "a_good_remote_sensing_image_of_a",
)


def key_template(key: str) -> str:
    """"a_satellite_image_of_a" -> "a satellite image of a {}" (published keys name the text before the class)."""
    return " ".join(key.split("_")) + " {}"


def template_key(template: str) -> str:
    """"a satellite image of a {}" -> "a_satellite_image_of_a"; only templates that end with ``{}`` have keys."""
    text = template.strip().rstrip(".").strip()
    if not text.endswith("{}") or text.count("{}") != 1 or not text[:-2].strip():
        raise InputError(f"The template {template!r} has no key: keyed templates are text followed by {{}}.")
    return "_".join(text[:-2].split())


AERIAL_TEMPLATES: tuple[str, ...] = tuple(key_template(k) for k in DEFAULT_TEMPLATE_KEYS)
# the template sets an evaluation compares by name: the aerial set, and the query alone
TEMPLATE_SETS: dict[str, tuple[str, ...] | None] = {"aerial": AERIAL_TEMPLATES, "raw": None}
MAX_TEMPLATES = 200


def parse_templates(text: str) -> tuple[str, ...]:
    """Templates from text, one per line; blank lines and lines starting with # are skipped.

    Each template must hold ``{}`` exactly once (where the query goes) and no other braces.
    """
    templates = []
    for number, line in enumerate(text.splitlines(), start=1):
        template = line.strip()
        if not template or template.startswith("#"):
            continue
        if template.count("{}") != 1 or "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
            raise InputError(
                f"Prompt template line {number} ({template[:60]!r}) must contain {{}} exactly once, where the "
                "query goes, and no other braces, e.g. 'an aerial photo of {}.'"
            )
        templates.append(template)
    if not templates:
        raise InputError("No prompt templates given; write one per line, each with {} where the query goes.")
    if len(templates) > MAX_TEMPLATES:
        raise InputError(f"{len(templates)} prompt templates given; use at most {MAX_TEMPLATES}.")
    return tuple(templates)


def read_templates(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Templates from a UTF-8 text file, one per line (see :func:`parse_templates`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the prompt templates file {path}: {exc}.") from exc
    return parse_templates(text)


def prompt_templates(choice: str | tuple[str, ...]) -> tuple[str, ...] | None:
    """The templates a search request names, as its query is embedded with: "default" the aerial set, "raw"
    none (the query alone), else the request's own."""
    if choice == "default":
        return AERIAL_TEMPLATES
    if choice == "raw":
        return None
    return tuple(choice)
