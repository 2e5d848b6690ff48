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

import datetime as dt
import json
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

PLUGIN_DIR = Path(__file__).resolve().parent
REQUIREMENTS = PLUGIN_DIR / "requirements"
TORCH_INDEX = "https://download.pytorch.org/whl/{build}"
TORCH_PACKAGES = ("torch", "torchvision")
MIN_PYTHON = (3, 10)
QUERY_FIELDS = ("name", "driver_version", "memory.total", "compute_cap")
ENV_PREFIX = "engine-"
REQUIREMENTS_FILE, CONSTRAINTS_FILE = "clip-search-requirements.txt", "clip-search-constraints.txt"
RECORD = "clip-search-engine.json"  # what a set-up installed, written into the environment it made
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
ENGINE_PATH = {"PYTHONPATH": str(PLUGIN_DIR.parent)}  # how an environment's Python finds the engine's code
NO_MATCH = re.compile(r"no matching distribution found for ([^\s]+)", re.IGNORECASE)
RECENT_ERRORS: deque[str] = deque(maxlen=10)  # the last errors the plugin showed, for Copy diagnostics
# the oldest driver each CUDA build runs on (CUDA minor-version compatibility), by system
MIN_DRIVER = {
    "cu126": {"Linux": (525, 60, 13), "Windows": (528, 33)},
    "cu130": {"Linux": (580, 65, 6), "Windows": (580, 88)},
}
CU126_CAPABILITIES = ((5, 0), (9, 0))  # cu126 wheels carry kernels for Maxwell … Hopper
CU130_MIN_CAPABILITY = (7, 5)  # cu130 wheels start at Turing; they add Blackwell


class SetupError(Exception):
    """The set-up failed; the message says what to do."""


class SetupCancelled(SetupError):
    pass


def version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text or ""))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python: none of QGIS's Python settings (they would make it load QGIS's
    standard library or packages), no user site-packages, UTF-8 output, and pip never prompting."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONEXECUTABLE",
                        "__PYVENV_LAUNCHER__")}
    env.update(PYTHONNOUSERSITE="1", PYTHONIOENCODING="utf-8", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra or {})
    return env


def _run(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, env=env or clean_env(), creationflags=NO_WINDOW, check=False)


# --- GPUs -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str
    memory_mib: int | None = None
    compute_capability: tuple[int, int] | None = None

    def describe(self) -> str:
        cap = f", compute capability {self.compute_capability[0]}.{self.compute_capability[1]}" \
            if self.compute_capability else ""
        memory = f", {self.memory_mib / 1024:.0f} GiB" if self.memory_mib else ""
        return f"{self.name}{memory}{cap}"


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[Gpu, ...] = ()
    cuda: str | None = None  # the newest CUDA the driver supports (nvidia-smi's header)
    problem: str = ""  # why no GPU is listed

    @property
    def driver(self) -> str | None:
        return self.gpus[0].driver if self.gpus else None

    def describe(self) -> str:
        if not self.gpus:
            return f"No NVIDIA GPU: {self.problem or 'none found'}."
        cuda = f", CUDA {self.cuda}" if self.cuda else ""
        return "; ".join(g.describe() for g in self.gpus) + f" (driver {self.driver}{cuda})"


def parse_gpu_query(text: str) -> list[Gpu]:
    """GPUs from ``nvidia-smi --query-gpu=name,driver_version,memory.total[,compute_cap]
    --format=csv,noheader,nounits`` (one line per GPU; units tolerated)."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not re.fullmatch(r"\d+(\.\d+)+", parts[1]):
            continue  # a message, not a GPU line
        memory = re.match(r"\d+", parts[2]) if len(parts) > 2 else None
        cap = re.fullmatch(r"(\d+)\.(\d+)", parts[3]) if len(parts) > 3 else None
        gpus.append(Gpu(parts[0], parts[1], int(memory.group()) if memory else None,
                        (int(cap.group(1)), int(cap.group(2))) if cap else None))
    return gpus


def parse_cuda_version(text: str) -> str | None:
    """The "CUDA Version: X.Y" of plain ``nvidia-smi``'s header (what the driver supports, not a toolkit)."""
    found = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
    return found.group(1) if found else None


def find_nvidia_smi(system: str | None = None) -> str | None:
    found = shutil.which("nvidia-smi")
    if found or (system or platform.system()) != "Windows":
        return found
    root = os.environ.get("SystemRoot", r"C:\Windows")
    for candidate in (os.path.join(root, "System32", "nvidia-smi.exe"),
                      r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe"):
        if os.path.isfile(candidate):
            return candidate
    return None


def detect_gpus(smi: str | None = None, timeout: float = 15.0) -> GpuReport:
    """The NVIDIA GPUs and driver, asked of ``nvidia-smi``. Drivers before R510 do not know the
    ``compute_cap`` field (exit code 2): asked again without it. Any other failure means no usable GPU."""
    smi = smi or find_nvidia_smi()
    if not smi:
        return GpuReport(problem="no NVIDIA driver found (nvidia-smi is not installed)")
    fields = list(QUERY_FIELDS)
    try:
        while True:
            done = _run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"], timeout)
            said = (done.stdout + done.stderr).strip()
            if done.returncode != 0 and "compute_cap" in fields and "compute_cap" in said:
                fields.remove("compute_cap")
                continue
            break
        if done.returncode != 0:
            first = said.splitlines()[0] if said else f"exit code {done.returncode}"
            return GpuReport(problem=f"nvidia-smi failed: {first}")
        gpus = parse_gpu_query(done.stdout)
        header = _run([smi], timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return GpuReport(problem=f"nvidia-smi could not run ({exc})")
    return GpuReport(tuple(gpus), parse_cuda_version(header.stdout), "" if gpus else "nvidia-smi lists no GPU")


# --- the torch build ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Build:
    name: str  # "cpu", "cu126", "cu130", or "default": the package index's own build (macOS)
    reason: str

    @property
    def index_url(self) -> str | None:
        return None if self.name == "default" else TORCH_INDEX.format(build=self.name)

    @property
    def gpu(self) -> bool:
        return self.name.startswith("cu")

    def describe(self) -> str:
        kind = {"cpu": "CPU build", "default": "PyPI build"}.get(self.name, f"CUDA {self.name[2:4]}.{self.name[4:]}"
                                                                 " build")
        return f"torch {kind}: {self.reason}"


BUILD_CHOICES = {"cpu": "CPU", "cu126": "CUDA 12.6 (NVIDIA driver 525.60 or newer)",
                 "cu130": "CUDA 13.0 (NVIDIA driver 580.65 or newer)"}


def choose_build(report: GpuReport, system: str | None = None) -> Build:
    """The torch build for this computer: the newest CUDA build its driver and first GPU (the one the engine
    uses) can run, else the CPU build, with the reason in words."""
    system = system or platform.system()
    if system == "Darwin":
        return Build("default", "macOS: PyPI's torch runs on the CPU and on the Apple GPU (MPS)")
    if not report.gpus:
        return Build("cpu", "no usable NVIDIA GPU; the engine runs on the CPU")
    gpu, key = report.gpus[0], ("Windows" if system == "Windows" else "Linux")
    driver, cap = version_tuple(gpu.driver), gpu.compute_capability
    if cap is not None and cap < CU126_CAPABILITIES[0]:
        return Build("cpu", f"{gpu.name} (compute capability {cap[0]}.{cap[1]}) is older than any current torch "
                            "supports; the engine runs on the CPU")
    if driver >= MIN_DRIVER["cu130"][key] and (cap is None or cap >= CU130_MIN_CAPABILITY):
        return Build("cu130", f"{gpu.describe()} with driver {gpu.driver}")
    if driver >= MIN_DRIVER["cu126"][key] and (cap is None or cap <= CU126_CAPABILITIES[1]):
        return Build("cu126", f"{gpu.describe()} with driver {gpu.driver}")
    needed = ".".join(map(str, MIN_DRIVER["cu130" if cap and cap > CU126_CAPABILITIES[1] else "cu126"][key]))
    return Build("cpu", f"{gpu.name} needs NVIDIA driver {needed} or newer (this one is {gpu.driver}); with a "
                        "newer driver, run Set up engine again to use the GPU. Meanwhile the engine runs on the CPU")


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


# --- environments ---------------------------------------------------------------------------------------
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


def env_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def made_environments(root: Path) -> list[Path]:
    """Environments a set-up made in ``root`` (finished ones: they hold the set-up's record), newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob(f"{ENV_PREFIX}*") if (p / RECORD).is_file()), reverse=True)


def run_selftest(python: str, timeout: float = 600.0) -> dict[str, Any]:
    """The engine's self-test report in the environment of ``python`` (``ok`` false with the reason when
    it cannot even start)."""
    try:
        done = _run(engine_selftest_command(python), timeout, clean_env(ENGINE_PATH))
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


def engine_selftest_command(python: str) -> list[str]:
    return [python, "-m", "clip_search_plugin.engine", "selftest", "--json"]


# --- the set-up -----------------------------------------------------------------------------------------
@dataclass
class Step:
    label: str
    argv: list[str]
    share: float  # of the whole progress
    env: dict[str, str] = field(default_factory=dict)
    fallback: Step | None = None  # run instead when pip finds no matching version where this step looked


@dataclass
class SetupPlan:
    base: str  # the Python that makes the virtual environment
    build: Build
    root: Path = field(default_factory=default_env_root)
    requirements: Path = field(default_factory=requirements_file)
    wheelhouse: str = ""  # a folder of wheels: install from it alone, without the network
    pip_args: tuple[str, ...] = ()  # e.g. ("--proxy", "http://proxy:3128")

    @cached_property
    def packages(self) -> tuple[list[str], list[str]]:
        """(torch and torchvision pins, everything else) of the version set."""
        return split_requirements(self.requirements)

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
            label = f"Installing {' and '.join(TORCH_PACKAGES)} ({self.build.name})"
            from_pypi = Step(f"{label}: PyPI's build", [*pip, *torch_lines], 0.6) if torch_source != offline else None
            steps.append(Step(label, [*pip, *torch_source, *torch_lines], 0.6, fallback=from_pypi))
        steps.append(Step("Installing open_clip, Faiss, rasterio and numpy",
                          [*pip, *offline, "-r", str(folder / REQUIREMENTS_FILE),
                           "-c", str(folder / CONSTRAINTS_FILE)], 0.3))
        steps.append(Step("Checking the engine (self-test)", engine_selftest_command(python), 0.05, ENGINE_PATH))
        return steps


@dataclass
class SetupResult:
    python: str
    report: dict[str, Any]


class Installer:
    """Runs a :class:`SetupPlan`: each pip line goes to ``on_line``, the overall fraction done to
    ``on_progress``; ``is_cancelled`` is polled several times a second."""

    def __init__(self, plan: SetupPlan, on_line: Callable[[str], None] = lambda _line: None,
                 on_progress: Callable[[float], None] = lambda _done: None,
                 is_cancelled: Callable[[], bool] = lambda: False) -> None:
        self.plan, self.on_line, self.on_progress, self.is_cancelled = plan, on_line, on_progress, is_cancelled
        self.done = 0.0

    def run(self) -> SetupResult:
        base = inspect_python(self.plan.base)
        if not base.usable:
            raise SetupError(f"{base.describe()}. Choose another Python to make the engine's environment with.")
        if self.plan.wheelhouse and not Path(self.plan.wheelhouse).is_dir():
            raise SetupError(f"The package folder {self.plan.wheelhouse} does not exist; choose the folder of wheels.")
        self.plan.root.mkdir(parents=True, exist_ok=True)
        folder = self.plan.root / f"{ENV_PREFIX}{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        folder = folder if not folder.exists() else folder.with_name(folder.name + f"-{os.getpid()}")
        self.on_line(f"Making the engine's environment in {folder} with {base.describe()}")
        self.on_line(self.plan.build.describe())
        try:
            return self._run_steps(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # nothing half-made is left, and nothing else is touched
            raise

    def _run_steps(self, folder: Path) -> SetupResult:
        steps = self.plan.steps(folder)
        output = ""
        for number, step in enumerate(steps):
            if number == 1:  # the environment exists: the files the pip steps read go into it
                self.plan.write_inputs(folder)
            self.on_line(f"== {step.label}")
            start = self.done
            code, output = self._stream(step, start)
            if code != 0 and step.fallback is not None and NO_MATCH.search(output):
                self.on_line(f"The {self.plan.build.name} index has no such version for this Python and system; "
                             "taking PyPI's build of torch instead (the self-test shows whether it uses the GPU).")
                step = step.fallback
                self.on_line(f"== {step.label}")
                code, output = self._stream(step, start)
            if code != 0 and step is not steps[-1]:
                raise SetupError(explain_failure(step, code, output, self.plan))
            self.done = start + step.share
            self.on_progress(min(self.done, 1.0))
        report = read_report(output)
        if report is None:
            raise SetupError(f"The engine's self-test did not answer: {output.strip()[-400:]}")
        if not report.get("ok"):
            from .engine.selftest import failures

            from_report = "; ".join(failures(report))
            advice = " Choose the CPU build under Torch build and set up again." if self.plan.build.gpu else ""
            raise SetupError(f"The new environment does not run the engine ({from_report}).{advice}")
        device = report["checks"]["device"].get("device", "cpu")
        if self.plan.build.gpu and not str(device).startswith("cuda"):
            self.on_line(f"Note: the {self.plan.build.name} build of torch sees no usable GPU here, so the engine "
                         "runs on the CPU. Check the NVIDIA driver, or set up again with the CPU build (a smaller "
                         "download).")
        record = {"created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "base": self.plan.base,
                  "build": self.plan.build.name, "reason": self.plan.build.reason,
                  "wheelhouse": self.plan.wheelhouse, "selftest": report}
        (folder / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
        self.on_line("The engine's environment is ready.")
        return SetupResult(str(env_python(folder)), report)

    def _stream(self, step: Step, start: float) -> tuple[int, str]:
        """Run one step, passing its output on line by line; stopped when cancelled. (exit code, output)."""
        try:
            process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       encoding="utf-8", errors="replace", env=clean_env(step.env),
                                       creationflags=NO_WINDOW)
        except OSError as exc:
            raise SetupError(f"{step.label} could not start: {exc}.") from exc
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True, name="clip-search-setup-output").start()
        kept: list[str] = []
        while True:
            if self.is_cancelled():
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                if process.stdout is not None:
                    process.stdout.close()
                raise SetupCancelled("Set-up cancelled; the unfinished environment was removed.")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            kept.append(line)
            self.on_line(line)
            if re.match(r"\s*(Collecting|Downloading|Using cached|Processing|Installing collected)", line):
                self.done += (start + step.share - self.done) * 0.08  # pip does not say how much is left
                self.on_progress(self.done)
        code = process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return code, "\n".join(kept)


def explain_failure(step: Step, code: int, output: str, plan: SetupPlan) -> str:
    """What went wrong in words, with what to do (pip's own lines are in the log)."""
    text = output.lower()
    missing = NO_MATCH.search(output)
    if "ensurepip is not available" in text or ("ensurepip" in text and step.argv[1:3] == ["-m", "venv"]):
        return ("This Python cannot make virtual environments: install its venv package (on Debian or Ubuntu: "
                "sudo apt install python3-venv), or choose another Python.")
    if "no space left on device" in text:
        return f"Not enough disk space in {plan.root}: the engine needs about 6 GB. Free some space and try again."
    if missing and plan.wheelhouse:
        return (f"The package folder {plan.wheelhouse} has no {missing.group(1)} for this Python and system; "
                "add its wheel (pip download) and try again.")
    if any(s in text for s in ("certificate_verify_failed", "ssl:", "sslerror")):
        return ("pip could not verify the package index's certificate (often a company proxy): set the proxy in "
                "QGIS ▸ Settings ▸ Options ▸ Network, or install from a folder of wheels.")
    if any(s in text for s in ("proxyerror", "failed to establish a new connection", "temporary failure in name",
                               "network is unreachable", "connection refused", "read timed out")):
        return ("pip could not reach the package index: check the internet connection or the proxy (QGIS ▸ "
                "Settings ▸ Options ▸ Network), or install from a folder of wheels.")
    if missing:
        return (f"pip found no {missing.group(1)} for this Python and system: choose another Python "
                f"({MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer, 64-bit), or the CPU build.")
    tail = " | ".join(output.strip().splitlines()[-3:])
    return f"{step.label} failed (exit code {code}): {tail}"


def diagnostics(host: dict[str, str], engine_python: str, gpus: GpuReport, report: dict[str, Any] | None,
                errors: Sequence[str]) -> str:
    """Plain text for a bug report: the host (QGIS, Python, system), the GPU and driver, the engine's
    environment and its self-test, and the last errors."""
    lines = ["CLIP Search diagnostics", ""]
    lines += [f"{key}: {value}" for key, value in host.items()]
    lines += [f"OS: {platform.platform()}", f"GPU: {gpus.describe()}", f"Engine Python: {engine_python or '(none)'}"]
    record = Path(engine_python).parent.parent / RECORD if engine_python else None
    if record is not None and record.is_file():
        made = json.loads(record.read_text(encoding="utf-8"))
        lines.append(f"Set up: {made.get('created')} with {made.get('base')}, build {made.get('build')}")
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
    return "\n".join(lines) + "\n"

