"""Values of a request checked one by one, each refusal saying what to give instead (standard library only)."""

from __future__ import annotations

import re
from typing import Any

from .errors import InputError
from .query.templates import TEMPLATE_SETS, parse_templates
from .query.text import check_search_limits as check_search_limits
from .settings import ModelSpec, TilingSettings

Templates = str | tuple[str, ...]  # "default" (the aerial set), "raw" (the query alone) or the user's templates


def path(value: object, what: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"Give {what} ('{key}' parameter).")
    return value


def optional_text(value: object, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{key} must be text; got {value!r}.")
    return value


def number(value: object, key: str, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{key} must be a {kind.__name__}; got {value!r}.")
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{key} must be a {kind.__name__}; got {value!r}.") from exc


def backend(value: object) -> str:
    """An inference backend's name: auto (the default), torch, or one of the backends' registry."""
    from .embedding.backends import CHOICES

    if value is None:
        return "auto"
    if not isinstance(value, str) or value not in CHOICES:
        raise InputError(f"Unknown backend {value!r}; use one of {', '.join(CHOICES)}.")
    return value


LOCAL_CLUSTER = re.compile(r"local(:[1-9][0-9]{0,3})?")
SCHEDULER = re.compile(r"tcp://([A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})")


def cluster(value: object) -> str | None:
    """Where a build runs: None (this process), ``local`` / ``local:N`` (a Dask cluster of N worker processes
    started on this computer) or ``tcp://HOST:PORT`` (a running Dask scheduler)."""
    if value is None or value == "":
        return None
    text = value.strip() if isinstance(value, str) else ""
    found = SCHEDULER.fullmatch(text)
    if LOCAL_CLUSTER.fullmatch(text) or (found and 0 < int(found.group(2)) < 65536):
        return text
    raise InputError(f"Unknown cluster {value!r}: give local (worker processes for this computer's cores), local:N "
                     "(N worker processes, N at least 1) or tcp://HOST:PORT (the address of a running "
                     "`dask scheduler`).")


def flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false; got {value!r}.")
    return value


def ids(value: object, key: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise InputError(f"{key} must be a list of tile ids (whole numbers); got {value!r}.")
    return tuple(int(v) for v in value)


def templates(value: object) -> Templates:
    if value in (None, "default"):
        return "default"
    if value == "raw":
        return "raw"
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return parse_templates("\n".join(value))
    raise InputError("templates must be 'default', 'raw' or a list of strings each containing '{}'.")


def model(value: object) -> ModelSpec:
    if value is None:
        return ModelSpec()
    if isinstance(value, ModelSpec):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("name", ""), str):
        raise InputError("model must be an object with 'name' and optionally 'pretrained'.")
    return ModelSpec(value.get("name") or ModelSpec().name, optional_text(value.get("pretrained"), "pretrained"))


def tiling(value: object) -> TilingSettings:
    if value is None:
        return TilingSettings()
    if isinstance(value, TilingSettings):
        return value
    if not isinstance(value, dict):
        raise InputError("tiling must be an object (tile_size, tile_units, overlap, scales, ...).")
    try:
        return TilingSettings.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tiling has a value of the wrong kind: {exc}.") from exc


AUTH_KEYS = ("user", "password", "header")


def auth(value: object) -> dict[str, str] | None:
    """A web layer's credentials (user, password, one "Name: value" header), kept in the engine's memory only."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or any(k not in AUTH_KEYS or not isinstance(v, str) for k, v in value.items()):
        raise InputError(f"auth must be an object of text with the keys {', '.join(AUTH_KEYS)}.")
    return dict(value)


def template_sets(value: object) -> tuple[str, ...]:
    """The named template sets an evaluation compares (see ``TEMPLATE_SETS``)."""
    if value is None:
        return ("aerial",)
    if not isinstance(value, list | tuple) or not value or any(s not in TEMPLATE_SETS for s in value):
        raise InputError(f"template_sets must be a list of {', '.join(TEMPLATE_SETS)}; got {value!r}.")
    return tuple(value)
