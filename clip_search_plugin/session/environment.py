"""The one rule for the engine's environment: which Python runs the engine, with which environment variables,
and with which command line (plain Python, no Qt).

Every engine process (the dock's, an index task's, a Processing run's) and the set-up's self-test start through
:func:`engine_env` and :func:`engine_command`; every other child Python the set-up starts (venv, pip) gets
:func:`python_env`. None of them sees QGIS's own Python settings: QGIS's ``PYTHONPATH`` and ``PYTHONHOME`` would
make the engine's virtual environment load QGIS's standard library or packages.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

PLUGIN_DIR = Path(__file__).resolve().parent.parent
PACKAGE = __name__.split(".")[0]  # the plugin's package, importable from PLUGIN_DIR's parent folder
ENGINE_MODULE = f"{PACKAGE}.engine"
# QGIS's (or a virtual environment's) settings of its own Python, never handed to another Python
QGIS_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONEXECUTABLE",
                         "__PYVENV_LAUNCHER__")
CACHE_VARIABLE = "CLIP_SEARCH_CACHE"  # the engine's index folder (the settings' cache folder)
EXPLICIT_PYTHON = "CLIP_SEARCH_ENGINE_PYTHON"  # an engine Python chosen outside QGIS (tests, scripts)
ENV_PREFIX = "engine-"  # the folders Set up engine makes, named by date
RECORD = "clip-search-engine.json"  # what a set-up installed, written into the environment it made
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # never through a proxy
PROXY_TYPES = {"HttpProxy": "http", "HttpCachingProxy": "http", "Socks5Proxy": "socks5h"}  # QGIS's proxy types


class EngineUnavailable(Exception):
    """The engine environment is missing or broken; the message says how to fix it."""


# --- environment variables -----------------------------------------------------------------------------------
def python_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python: ``base`` (QGIS's environment unless given) without QGIS's Python
    settings, no user site-packages, UTF-8 output, pip never prompting; then ``extra``."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in QGIS_PYTHON_VARIABLES}
    env.update(PYTHONNOUSERSITE="1", PYTHONIOENCODING="utf-8", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra or {})
    return env


def engine_env(cache_folder: str = "", base: Mapping[str, str] | None = None,
               proxy: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment of an engine process: a child Python's (:func:`python_env`) whose only ``PYTHONPATH`` is
    the plugin's parent folder (where the engine's code is), unbuffered output (events arrive as written), the
    settings' cache folder, when one is set, as the engine's index folder, and QGIS's proxy settings, when given
    (:func:`proxy_env`)."""
    env = python_env({"PYTHONPATH": str(PLUGIN_DIR.parent), "PYTHONUNBUFFERED": "1"}, base)
    if cache_folder:
        env[CACHE_VARIABLE] = cache_folder
    if proxy is not None:
        env.update(proxy_env(proxy, env))
    return env


def proxy_env(proxy: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The proxy variables of an engine process from QGIS's network settings (``proxy``: the values under
    ``proxy/`` of QGIS's settings: proxyEnabled, proxyType, proxyHost, proxyPort, proxyUser, proxyPassword,
    proxyExcludedUrls, noProxyUrls). GDAL reads GDAL_HTTP_PROXY and GDAL_HTTP_PROXYUSERPWD; the model hub and
    other HTTP clients read http(s)_proxy. Hosts QGIS excludes, and always this computer, go direct (no_proxy).
    QGIS's "default proxy" is the system's, which the environment (``base``) already holds."""
    excluded = [h for h in (base.get("no_proxy") or base.get("NO_PROXY") or "").split(",") if h.strip()]
    for url in _texts(proxy.get("proxyExcludedUrls")) + _texts(proxy.get("noProxyUrls")):
        host = urlsplit(url).hostname if "://" in url else url.strip().strip("/")
        if host:
            excluded.append(host)
    env = {"no_proxy": ",".join(dict.fromkeys([*LOCAL_HOSTS, *(h.strip() for h in excluded)]))}
    env["NO_PROXY"] = env["no_proxy"]
    scheme = PROXY_TYPES.get(str(proxy.get("proxyType") or ""))
    host = str(proxy.get("proxyHost") or "").strip()
    if str(proxy.get("proxyEnabled")).lower() not in ("true", "1") or scheme is None or not host:
        return env
    address = f"{host}:{int(proxy.get('proxyPort') or 0) or (1080 if scheme == 'socks5h' else 8080)}"
    user, password = str(proxy.get("proxyUser") or ""), str(proxy.get("proxyPassword") or "")
    env["GDAL_HTTP_PROXY"] = address if scheme == "http" else f"{scheme}://{address}"
    login = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = f"{scheme}://{login}{address}"
    if user:
        env["GDAL_HTTP_PROXYUSERPWD"] = f"{user}:{password}"
    return env


def _texts(value: Any) -> list[str]:
    """A setting holding URLs: a list, or text separated by "|" (as older QGIS stored them)."""
    if isinstance(value, list | tuple):
        return [str(v) for v in value if str(v).strip()]
    return [v for v in str(value or "").split("|") if v.strip()]


# --- command lines ---------------------------------------------------------------------------------------------
def engine_command(python: str, device: str = "auto") -> list[str]:
    """An engine process answering requests on its standard input."""
    return [python, "-m", ENGINE_MODULE, "serve", "--device", device]


def engine_selftest_command(python: str) -> list[str]:
    """The engine's self-test in the environment of ``python``, as one JSON report."""
    return [python, "-m", ENGINE_MODULE, "selftest", "--json"]


# --- the engine's Python ---------------------------------------------------------------------------------------
def env_python(folder: Path) -> Path:
    """The interpreter of the virtual environment in ``folder``."""
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def default_env_root(system: str | None = None) -> Path:
    """Where set-ups make environments: the user's data folder (never the plugin's folder, which a plugin
    update replaces)."""
    system = system or platform.system()
    home = Path.home()
    if system == "Windows":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif system == "Darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "clip_search"


def made_environments(root: Path) -> list[Path]:
    """Environments a set-up made in ``root`` (finished ones: they hold the set-up's record), newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob(f"{ENV_PREFIX}*") if (p / RECORD).is_file()), reverse=True)


def default_engine_python() -> str:
    """The engine's interpreter: $CLIP_SEARCH_ENGINE_PYTHON, else the newest environment Set up engine made
    (in the user's data folder, so every QGIS profile finds it), else a .venv-engine beside the plugin's
    source (a developer's checkout); "" when there is none."""
    explicit = os.environ.get(EXPLICIT_PYTHON)
    if explicit:
        return explicit
    for made in made_environments(default_env_root()):
        if env_python(made).exists():
            return str(env_python(made))
    for base in (PLUGIN_DIR.parent, PLUGIN_DIR):
        candidate = env_python(base / ".venv-engine")
        if candidate.exists():
            return str(candidate)
    return ""


def check_engine_python(python: str) -> None:
    """Refuse clearly (EngineUnavailable) when the configured interpreter does not exist."""
    if not python:
        raise EngineUnavailable(
            "CLIP Search needs its engine (torch and CLIP in a Python environment of their own): "
            "click Set up engine."
        )
    if not (Path(python).is_file() or shutil.which(python)):
        raise EngineUnavailable(
            f"The engine Python {python} does not exist: click Set up engine, or set the engine Python in "
            "CLIP Search settings."
        )
