"""The plugin's settings, stored with QgsSettings under clip_search/."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from qgis.core import QgsSettings

from ..engine.embedding.presets import DEFAULT_PRESET
from ..engine.errors import InputError
from ..engine.query.templates import parse_templates
from ..engine.settings import ModelSpec, TilingSettings
from .environment import default_engine_python, engine_env

PREFIX = "clip_search/"
PROXY_KEYS = ("proxyEnabled", "proxyType", "proxyHost", "proxyPort", "proxyUser", "proxyPassword",
              "proxyExcludedUrls", "noProxyUrls")


def qgis_proxy() -> dict[str, Any]:
    """QGIS's proxy settings (Settings ▸ Options ▸ Network), as stored under proxy/."""
    stored = QgsSettings()
    return {key: stored.value(f"proxy/{key}") for key in PROXY_KEYS}


def parse_scales(text: str) -> list[float]:
    """"1 2 4" (or "1, 2, 4") as numbers; [] for empty text; ValueError for anything else."""
    return [float(v) for v in text.replace(",", " ").split()]


@dataclass
class PluginSettings:
    engine_python: str = ""
    model: str = DEFAULT_PRESET
    pretrained: str = ""
    device: str = "auto"
    backend: str = "auto"  # how tiles are embedded (see engine.embedding.backends)
    tile_size: float = 224.0
    tile_units: str = "px"
    overlap: float = 0.5
    scales: str = "1"
    cache_folder: str = ""
    cluster: str = ""  # where Index layer builds: "" this computer; local:N or tcp://HOST:PORT (Dask)
    replace_results: bool = True
    templates: str = ""  # the user's prompt templates, one per line; empty: the built-in aerial set

    @classmethod
    def load(cls) -> PluginSettings:
        stored = QgsSettings()
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = getattr(cls, f.name)
            value = stored.value(PREFIX + f.name, default)
            if isinstance(default, bool):
                value = value in (True, "true", "1", 1)
            elif isinstance(default, float):
                value = float(value)
            values[f.name] = value
        settings = cls(**values)
        if not settings.engine_python:
            settings.engine_python = default_engine_python()
        return settings

    def save(self) -> None:
        stored = QgsSettings()
        for f in fields(self):
            stored.setValue(PREFIX + f.name, getattr(self, f.name))

    def scale_list(self) -> list[float]:
        try:
            scales = parse_scales(self.scales)
        except ValueError:
            scales = []
        return scales or [1.0]

    def model_spec(self) -> ModelSpec:
        """The model of these settings (the registry's default when none is named)."""
        return ModelSpec(self.model or ModelSpec().name, self.pretrained or None)

    def tiling(self) -> TilingSettings:
        """The tiling of these settings; InputError (with what to give instead) for values it refuses."""
        return TilingSettings(tile_size=float(self.tile_size), tile_units=self.tile_units,
                              overlap=float(self.overlap), scales=tuple(self.scale_list()))

    def templates_param(self, use_templates: bool = True) -> str | list[str]:
        """The engine's ``templates`` value: "raw" (the query as typed), the user's set, or "default"."""
        if not use_templates:
            return "raw"
        if self.templates.strip():
            try:
                return list(parse_templates(self.templates))
            except InputError:
                return "default"  # the settings dialog refuses bad templates; an edited registry falls back
        return "default"

    def engine_env(self) -> dict[str, str]:
        """The environment of an engine process with these settings (the one rule: :func:`.environment.engine_env`)."""
        return engine_env(self.cache_folder, proxy=qgis_proxy())
