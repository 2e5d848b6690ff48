"""The Set up engine log (plain Python, no Qt): pip's output read into short lines of what it is doing
(collecting, downloading with sizes, installing, done), the engine's self-test report in words, and the
full output of every step kept in a file beside the environments, for bug reports."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

LOG_FOLDER = "logs"  # under the environments' folder: a failed set-up's log outlives its removed environment
WIDTH = 160  # the longest line the dialog's log shows; the file has every line whole
UNITS = {"bytes": 1e-6, "B": 1e-6, "kB": 1e-3, "KB": 1e-3, "MB": 1.0, "GB": 1e3}  # as pip writes sizes
SIZE = r"\(([\d.]+) ?(bytes|[kKMG]?B)\)"
# pip's lines worth showing, and how they read (group 1 is what the line is about)
PIP_LINES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Collecting (\S+)"), "collecting {}"),
    (re.compile(rf"^\s*Downloading (\S+) {SIZE}"), "downloading {} ({} {})"),
    (re.compile(rf"^\s*Using cached (\S+) {SIZE}"), "using the cached {} ({} {})"),
    (re.compile(r"^\s*Processing (\S+)"), "using {}"),
    (re.compile(r"^\s*Building wheel for (\S+)"), "building {} from its source (this can take minutes)"),
    (re.compile(r"^Looking in indexes: (.+)"), "package index: {}"),
    (re.compile(r"^Looking in links: (.+)"), "package folder: {}"),
    (re.compile(r"^(ERROR: .+)"), "pip: {}"),
    (re.compile(r"^WARNING: (Retrying .+)"), "pip, network trouble: {}"),
)
INSTALLING = re.compile(r"^Installing collected packages: (.+)")
INSTALLED = re.compile(r"^Successfully installed (.+)")


def short(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def gigabytes(megabytes: float) -> str:
    """A size in words: "3.0 GB", "35 MB", "12 kB"."""
    if megabytes >= 95:
        return f"{megabytes / 1000:.1f} GB"
    return f"{megabytes:.0f} MB" if megabytes >= 1 else f"{max(megabytes * 1000, 1):.0f} kB"


def name_list(names: Sequence[str], shown: int = 6) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class PipReader:
    """Reads one pip run's output line by line and says, through ``say``, what pip is doing in short lines
    (the basename of a downloaded file, not its address); :meth:`done` sums the run up."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.downloaded_mb = 0.0
        self.installed: list[str] = []

    def feed(self, line: str) -> None:
        for pattern, words in PIP_LINES:
            found = pattern.match(line)
            if found:
                parts = list(found.groups())
                if words.startswith(("downloading", "using")):  # a file's name, not its address
                    parts[0] = parts[0].rstrip("/").rsplit("/", 1)[-1]
                if words.startswith("downloading"):
                    self.downloaded_mb += float(parts[1]) * UNITS[parts[2]]
                self.say("  " + short(words.format(*parts)))
                return
        installing = INSTALLING.match(line)
        if installing:
            names = [n.strip() for n in installing.group(1).split(",") if n.strip()]
            self.say(f"  installing {len(names)} package{'s' * (len(names) != 1)}: {name_list(names)}")
        installed = INSTALLED.match(line)
        if installed:
            self.installed = [" ".join(p.rsplit("-", 1)) for p in installed.group(1).split()]

    def done(self) -> str:
        if not self.installed:
            return "  done: nothing new to install"
        downloaded = f"; {gigabytes(self.downloaded_mb)} downloaded" if self.downloaded_mb else ""
        return f"  done: installed {name_list(self.installed)}{downloaded}"


def selftest_lines(report: dict[str, Any]) -> list[str]:
    """The engine's self-test report in words: one line a check, then its summary."""
    from ..engine.serve.selftest import summary  # plain Python; imports nothing heavy

    lines = []
    for name, check in report.get("checks", {}).items():
        if not check.get("ok"):
            lines.append(f"  {name}: FAILED: {short(str(check.get('error')), 400)}")
        elif name == "packages":
            versions = check.get("versions", {})
            lines.append("  packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        elif name == "device":
            build = f"; torch's CUDA build {check['torch_cuda_build']}" if check.get("torch_cuda_build") else ""
            lines.append(f"  device: {check.get('device')} ({check.get('name')}){build}")
        else:
            lines.append(f"  {name}: ok")
    return [*lines, f"  {summary(report)}"]


def torch_build_words(report: dict[str, Any]) -> str:
    """What torch the self-test found: "torch 2.15.0+cu132 (CUDA 13.2 build)"."""
    checks = report.get("checks", {})
    version = checks.get("packages", {}).get("versions", {}).get("torch", "?")
    cuda = checks.get("device", {}).get("torch_cuda_build")
    return f"torch {version} ({f'CUDA {cuda} build' if cuda else 'CPU build'})"


def folder_megabytes(folder: Path) -> float:
    """What a folder takes on disk, in MB (its files' sizes; links not followed)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total / 1e6


def tail(path: Path | None, lines: int = 40) -> list[str]:
    """The last lines of a log file ([] when there is none)."""
    if path is None or not path.is_file():
        return []
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]


class RawLog:
    """The full output of every step, as it came, in one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("w", encoding="utf-8")

    def write(self, line: str) -> None:
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
