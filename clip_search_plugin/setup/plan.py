"""Setting up the engine's own Python environment from inside QGIS (plain Python, no Qt).

What this computer has (NVIDIA GPUs and driver from ``nvidia-smi``; Pythons that can make virtual
environments), which torch build suits it, and the installation: a virtual environment made with a Python
the user has (never packages installed into QGIS's own Python), pip in two steps (torch and torchvision
from the PyTorch index of the chosen build, then the rest from PyPI with torch held where it is), then the
engine's self-test in the new environment. A failed or cancelled set-up removes what it made; the engine in
use until then is untouched. Linux first; the interpreter and folder rules for Windows and macOS are here
too (see README ▸ Engine set-up).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..session.environment import (  # noqa: F401 - where set-ups put environments, used as plan.X
    ENV_PREFIX,
    RECORD,
    default_env_root,
    engine_env,
    engine_selftest_command,
    env_python,
    made_environments,
    python_env,
)
from .log import (
    gigabytes,
    tail,
)
from .torch_builds import (  # noqa: F401 - part of what set-up means, used as plan.X
    BUILD_CHOICES,
    BUILD_WORDS,
    CU126_CAPABILITIES,
    CU130_MIN_CAPABILITY,
    MIN_DRIVER,
    NO_WINDOW,
    PYPI_TORCH,
    QUERY_FIELDS,
    REST_WEIGHT,
    SIZES_FOR,
    TORCH_INDEX,
    TORCH_WEIGHT,
    Build,
    Gpu,
    GpuReport,
    Weight,
    _run,
    choose_build,
    detect_gpus,
    find_nvidia_smi,
    parse_cuda_version,
    parse_gpu_query,
    torch_offer,
    version_tuple,
)

PLUGIN_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS = PLUGIN_DIR / "requirements"
TORCH_PACKAGES = ("torch", "torchvision")
MIN_PYTHON = (3, 10)
REQUIREMENTS_FILE, CONSTRAINTS_FILE = "clip-search-requirements.txt", "clip-search-constraints.txt"
NO_MATCH = re.compile(r"no matching distribution found for ([^\s]+)", re.IGNORECASE)


class SetupError(Exception):
    """The set-up failed; the message says what to do."""


class SetupCancelled(SetupError):
    pass


def requirements_file(system: str | None = None) -> Path:
    system = system or platform.system()
    return REQUIREMENTS / {"Windows": "windows.txt", "Darwin": "macos.txt"}.get(system, "linux.txt")


def split_requirements(path: Path) -> tuple[list[str], list[str]]:
    """(torch and torchvision pins, everything else) of a requirements file."""
    torch_lines: list[str] = []
    rest: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower()
            (torch_lines if name in TORCH_PACKAGES else rest).append(line)
    return torch_lines, rest


# --- Pythons to make the environment with -----------------------------------------------------------------
@dataclass(frozen=True)
class BasePython:
    path: str
    version: tuple[int, ...] = ()
    can_venv: bool = False
    problem: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        version = ".".join(map(str, self.version)) or "?"
        return f"Python {version} ({self.path})" + (f": {self.problem}" if self.problem else "")


def python_candidates(system: str | None = None, executable: str = sys.executable, prefix: str = sys.prefix,
                      exec_prefix: str = sys.exec_prefix) -> list[str]:
    """Interpreters to offer, QGIS's own first. Inside QGIS on Windows and macOS ``sys.executable`` is the
    QGIS program itself (starting it would open another QGIS), so its Python is looked for beside it."""
    system = system or platform.system()
    here = os.path.dirname(executable)
    if system == "Windows":
        own = [os.path.join(exec_prefix, "python.exe"), os.path.join(exec_prefix, "python3.exe"),
               os.path.join(here, "python3.exe"), os.path.join(here, "python.exe")]
    elif system == "Darwin":
        own = [os.path.join(prefix, "bin", "python3"), os.path.join(here, "bin", "python3")]
    else:
        own = [executable] if os.path.basename(executable).startswith("python") else []
        own.append(os.path.join(prefix, "bin", "python3"))
    on_path = [shutil.which(n) for n in ("python3", *(f"python3.{m}" for m in range(13, MIN_PYTHON[1] - 1, -1)))]
    conda = os.environ.get("CONDA_PREFIX")
    conda_python = [os.path.join(conda, "python.exe" if system == "Windows" else "bin/python")] if conda else []
    found: list[str] = []
    for path in [*own, *(p for p in on_path if p), *conda_python, "/usr/bin/python3"]:
        if os.path.isfile(path) and "qgis" not in os.path.basename(path).lower() and path not in found:
            found.append(path)
    return found


_INSPECT = ("import json, sys\n"
            "try:\n    import ensurepip, venv\n    venv_ok = True\nexcept ImportError:\n    venv_ok = False\n"
            "print(json.dumps({'version': list(sys.version_info[:3]), 'venv': venv_ok, "
            "'in_venv': sys.prefix != sys.base_prefix}))")


def inspect_python(path: str, timeout: float = 30.0) -> BasePython:
    """Whether ``path`` is a Python that can make the engine's environment, and if not, why."""
    try:
        done = _run([path, "-I", "-c", _INSPECT], timeout)
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return BasePython(path, problem="not a Python that runs")
    version = tuple(int(v) for v in facts["version"])
    if version[:2] < MIN_PYTHON:
        return BasePython(path, version, facts["venv"], f"too old: the engine needs Python "
                                                         f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    if not facts["venv"]:
        package = f"python{version[0]}.{version[1]}-venv"
        return BasePython(path, version, False, f"cannot make virtual environments (on Debian or Ubuntu: "
                                                f"sudo apt install {package})")
    return BasePython(path, version, True)


# --- the engine's self-test ----------------------------------------------------------------------------
def run_selftest(python: str, timeout: float = 600.0) -> dict[str, Any]:
    """The engine's self-test report in the environment of ``python``, run as an engine process runs (the one
    rule: :func:`engine_env`); ``ok`` false with the reason when it cannot even start."""
    try:
        done = _run(engine_selftest_command(python), timeout, engine_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return {"ok": False, "checks": {"start": {"ok": False, "error": f"the engine did not run: {exc}"}}}
    report = read_report(done.stdout)
    if report is None:
        tail = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit code {done.returncode}"
        return {"ok": False, "checks": {"start": {"ok": False, "error": f"the engine did not run: {tail}"}}}
    return report


def read_report(output: str) -> dict[str, Any] | None:
    """The self-test's JSON report in ``output``: it starts on a line of its own (warnings may come first)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line == "{"), None)
    if start is None:
        return None
    try:
        report = json.JSONDecoder().raw_decode("\n".join(lines[start:]))[0]
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


# --- the set-up -----------------------------------------------------------------------------------------
@dataclass
class Step:
    label: str
    argv: list[str]
    share: float  # of the whole progress
    engine: bool = False  # runs the engine (its self-test): in an engine's environment, else a child Python's
    fallback: Step | None = None  # run instead when pip finds no matching version where this step looked

    def env(self) -> dict[str, str]:
        """The environment the step runs in (read when it starts)."""
        return engine_env() if self.engine else python_env()


@dataclass
class SetupPlan:
    base: str  # the Python that makes the virtual environment
    build: Build
    root: Path = field(default_factory=default_env_root)
    requirements: Path = field(default_factory=requirements_file)
    wheelhouse: str = ""  # a folder of wheels: install from it alone, without the network
    pip_args: tuple[str, ...] = ()  # e.g. ("--proxy", "http://proxy:3128")
    system: str = field(default_factory=platform.system)

    @cached_property
    def packages(self) -> tuple[list[str], list[str]]:
        """(torch and torchvision pins, everything else) of the version set."""
        return split_requirements(self.requirements)

    @property
    def torch_words(self) -> str:
        """The version set's torch in words: "torch 2.15.0 and torchvision 0.29.2"."""
        return " and ".join(re.sub(r"\s*==\s*", " ", line) for line in self.packages[0]) or "torch"

    @property
    def can_fall_back(self) -> bool:
        return bool(self.packages[0] and self.build.index_url and not self.wheelhouse)

    def describe(self) -> str:
        """What Set up engine will install, from where, what it weighs, what a fallback would install, and why."""
        kind, weight = torch_offer(self.build.name, self.system)
        total = weight + REST_WEIGHT
        if self.wheelhouse:
            return (f"{self.torch_words}, {kind}, and the rest of the engine's packages from the package folder "
                    f"{self.wheelhouse}, nothing downloaded: about {gigabytes(total.disk_mb)} on disk.\n"
                    f"Why: {self.build.reason}.")
        source = f"from the PyTorch index {self.build.index_url}" if self.build.index_url else "from PyPI"
        lines = [f"{self.torch_words}, {kind}, {source}: {weight.describe()}.",
                 f"Then open_clip, Faiss, rasterio and the rest from PyPI: {REST_WEIGHT.describe()}; in all "
                 f"{total.describe()}."]
        if self.can_fall_back:
            fallback, heavier = torch_offer("pypi", self.system)
            lines.append(f"Should that index lack {self.torch_words} for this Python: {fallback} instead, "
                         f"{heavier.describe()} ({gigabytes((heavier + REST_WEIGHT).disk_mb)} in all).")
        return "\n".join([*lines, f"Why: {self.build.reason}."])

    def fallback_note(self, missing: str, python: str) -> str:
        """What a set-up that falls back to PyPI's torch installs instead, and what it weighs."""
        kind, weight = torch_offer(self.build.name, self.system)
        fallback, heavier = torch_offer("pypi", self.system)
        return (f"The PyTorch {self.build.name} index ({self.build.index_url}) has no {missing} for Python "
                f"{python} on {self.system}. Installing {fallback} instead: {heavier.describe()} "
                f"({gigabytes((heavier + REST_WEIGHT).disk_mb)} in all), where the {kind} was "
                f"{weight.describe()}.")

    def write_inputs(self, folder: Path) -> None:
        """The files the second pip step reads, into the new environment (a record of what it asked for)."""
        torch_lines, rest = self.packages
        (folder / REQUIREMENTS_FILE).write_text("\n".join(rest) + "\n", encoding="utf-8")
        (folder / CONSTRAINTS_FILE).write_text("\n".join(torch_lines) + "\n", encoding="utf-8")

    def steps(self, folder: Path) -> list[Step]:
        """The commands that make the environment in ``folder`` (the files they read: :meth:`write_inputs`)."""
        torch_lines = self.packages[0]
        python = str(env_python(folder))
        pip = [python, "-m", "pip", "install", "--progress-bar", "off", *self.pip_args]
        offline = ["--no-index", "--find-links", self.wheelhouse] if self.wheelhouse else []
        torch_source = offline or (["--index-url", self.build.index_url] if self.build.index_url else [])
        steps = [Step("Creating the virtual environment", [self.base, "-m", "venv", str(folder)], 0.05)]
        if torch_lines:
            kind = torch_offer(self.build.name, self.system)[0]
            source = (f"the package folder {self.wheelhouse}" if self.wheelhouse else self.build.index_url or "PyPI")
            fallback = Step(f"Installing {self.torch_words}, {torch_offer('pypi', self.system)[0]}, from PyPI "
                            "instead", [*pip, *torch_lines], 0.6) if self.can_fall_back else None
            steps.append(Step(f"Installing {self.torch_words}, {kind}, from {source}",
                              [*pip, *torch_source, *torch_lines], 0.6, fallback=fallback))
        steps.append(Step("Installing open_clip, Faiss, rasterio and the rest, with torch held",
                          [*pip, *offline, "-r", str(folder / REQUIREMENTS_FILE),
                           "-c", str(folder / CONSTRAINTS_FILE)], 0.3))
        steps.append(Step("Checking the engine (self-test)", engine_selftest_command(python), 0.05, engine=True))
        return steps


def diagnostics(host: dict[str, str], engine_python: str, gpus: GpuReport, report: dict[str, Any] | None,
                errors: Sequence[str], log: Path | None = None) -> str:
    """Plain text for a bug report: the host (QGIS, Python, system), the GPU and driver, the engine's
    environment and its self-test, the last errors, and the end of the set-up's log (``log``, else the log
    of the set-up that made the engine in use)."""
    lines = ["CLIP Search diagnostics", ""]
    lines += [f"{key}: {value}" for key, value in host.items()]
    lines += [f"OS: {platform.platform()}", f"GPU: {gpus.describe()}", f"Engine Python: {engine_python or '(none)'}"]
    record = Path(engine_python).parent.parent / RECORD if engine_python else None
    if record is not None and record.is_file():
        made = json.loads(record.read_text(encoding="utf-8"))
        lines.append(f"Set up: {made.get('created')} with {made.get('base')}, build {made.get('build')}"
                     + (f", installed {made['torch']}" if made.get("torch") else "")
                     + (" (PyPI's torch, taken instead)" if made.get("fallback") else ""))
        log = log or (Path(made["log"]) if made.get("log") else None)
    if report is not None:
        checks = report.get("checks", {})
        device = checks.get("device", {})
        lines.append(f"Engine Python version: {report.get('python', '?')}")
        if device:
            lines.append(f"Engine device: {device.get('device')} ({device.get('name')}); torch CUDA build "
                         f"{device.get('torch_cuda_build')}")
        versions = checks.get("packages", {}).get("versions", {})
        lines.append("Packages: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "(not importable)"))
        lines += [f"Self-test {name}: {'ok' if c.get('ok') else 'FAILED ' + str(c.get('error'))}"
                  for name, c in checks.items()]
    lines.append("Last errors:" if errors else "Last errors: none")
    lines += [f"  {e}" for e in errors]
    if log is not None:
        lines.append(f"Set-up log: {log}" + ("" if log.is_file() else " (no longer there)"))
        lines += [f"  {line}" for line in tail(log, 30)]
    return "\n".join(lines) + "\n"
