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


def engine_env(cache_folder: str = "", base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an engine process: a child Python's (:func:`python_env`) whose only ``PYTHONPATH`` is
    the plugin's parent folder (where the engine's code is), unbuffered output (events arrive as written), and
    the settings' cache folder, when one is set, as the engine's index folder."""
    env = python_env({"PYTHONPATH": str(PLUGIN_DIR.parent), "PYTHONUNBUFFERED": "1"}, base)
    if cache_folder:
        env[CACHE_VARIABLE] = cache_folder
    return env


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
