"""Prompt templates: the default aerial set, and reading and checking a user's own (pure Python)."""

from __future__ import annotations

import os

from .errors import InputError

# Templates for aerial and satellite imagery; the query vector is the mean of their normalised text
# embeddings, renormalised (the prompt-ensemble method of the CLIP paper).
AERIAL_TEMPLATES: tuple[str, ...] = (
    "an aerial photo of {}.",
    "an aerial image of {}.",
    "a satellite image of {}.",
    "a satellite photo of {}.",
    "an overhead view of {}.",
    "a top-down view of {}.",
    "an orthophoto showing {}.",
    "a remote sensing image of {}.",
    "aerial imagery of {}.",
    "a high-resolution aerial photograph of {}.",
    "a drone photo of {}, seen from above.",
    "{} seen from above.",
    "{}, aerial view.",
    "a bird's-eye view of {}.",
)
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
