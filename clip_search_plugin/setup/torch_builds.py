"""Which torch build a computer can run, and what each build weighs (plain Python, no Qt).

NVIDIA GPUs and their driver from ``nvidia-smi``; the torch build for them by CUDA minor-version compatibility
and compute capability; the download and disk size of each build, as data with its sources; and the helper
that runs a child process (in a child Python's environment: :func:`..session.environment.python_env`).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..session.environment import python_env
from .log import gigabytes

TORCH_INDEX = "https://download.pytorch.org/whl/{build}"
QUERY_FIELDS = ("name", "driver_version", "memory.total", "compute_cap")
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
# the oldest driver each CUDA build runs on (CUDA minor-version compatibility), by system
MIN_DRIVER = {
    "cu126": {"Linux": (525, 60, 13), "Windows": (528, 33)},
    "cu130": {"Linux": (580, 65, 6), "Windows": (580, 88)},
}
CU126_CAPABILITIES = ((5, 0), (9, 0))  # cu126 wheels carry kernels for Maxwell … Hopper
CU130_MIN_CAPABILITY = (7, 5)  # cu130 wheels start at Turing; they add Blackwell



def version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text or ""))


def _run(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, env=env or python_env(), creationflags=NO_WINDOW, check=False)


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


BUILD_CHOICES = {"cpu": "CPU", "cu126": "CUDA 12.6 (NVIDIA driver 525.60 or newer)",
                 "cu130": "CUDA 13.0 (NVIDIA driver 580.65 or newer)"}


# --- what each build weighs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Weight:
    """Megabytes to download and on disk."""
    download_mb: int
    disk_mb: int

    def __add__(self, other: Weight) -> Weight:
        return Weight(self.download_mb + other.download_mb, self.disk_mb + other.disk_mb)

    def describe(self) -> str:
        return f"about {gigabytes(self.download_mb)} to download, {gigabytes(self.disk_mb)} on disk"


# The figures below are for this version set (a test fails when the pins change: measure again), Python 3.11
# on Linux x86-64 (other Pythons differ by a few per cent): torch and torchvision with all they pull in
# (NVIDIA libraries, triton, numpy, pillow …), then the rest. Where they come from:
# - "pypi-cuda" (PyPI's torch 2.15.0 on Linux, the CUDA 13.2 build) and the rest: measured, the wheel sizes
#   of `pip download -r requirements/linux.txt` from PyPI, and the installed files of an environment made
#   from them (the sizes in each package's RECORD);
# - "cpu": measured on torch 2.13.0+cpu from download.pytorch.org (192 MB wheel, 754 MB installed), the
#   newest CPU wheel at hand, plus torchvision and torch's dependencies measured as above;
# - "cu126", "cu130": estimates, not measured (download.pytorch.org was out of reach): the CUDA 13.2 set,
#   whose NVIDIA libraries they share in kind and size;
# - Windows (PyPI's build is the CPU one) and macOS: estimates, the Linux CPU figures.
SIZES_FOR = ("torch==2.15.0", "torchvision==0.29.2")
TORCH_WEIGHT = {"cpu": Weight(235, 895), "cu126": Weight(3030, 5550), "cu130": Weight(3030, 5550),
                "pypi-cuda": Weight(3030, 5550)}
REST_WEIGHT = Weight(115, 365)  # open_clip, Faiss, rasterio, shapely, pyproj, pyogrio and theirs, from PyPI
BUILD_WORDS = {"cpu": "CPU build", "cu126": "CUDA 12.6 build", "cu130": "CUDA 13.0 build"}
PYPI_TORCH = {"Linux": ("CUDA 13.2 build (it also runs on the CPU)", "pypi-cuda"), "Windows": ("CPU build", "cpu"),
              "Darwin": ("build for the CPU and the Apple GPU (MPS)", "cpu")}


def torch_offer(build: str, system: str) -> tuple[str, Weight]:
    """(the torch build in words, what torch and torchvision of it weigh); "pypi" and "default" are PyPI's own
    build for ``system``."""
    if build in ("pypi", "default"):
        words, key = PYPI_TORCH.get(system, PYPI_TORCH["Linux"])
        return f"PyPI's {words}", TORCH_WEIGHT[key]
    return BUILD_WORDS.get(build, f"{build} build"), TORCH_WEIGHT.get(build, TORCH_WEIGHT["pypi-cuda"])


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
