"""Running a set-up plan: a virtual environment in a new dated folder, pip in steps, the engine's self-test, and
the record that makes it the engine in use (plain Python, no Qt). What the plan is, and what this computer
has, is :mod:`.plan`."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .log import LOG_FOLDER, PipReader, RawLog, folder_megabytes, gigabytes, selftest_lines, torch_build_words
from .plan import (
    ENV_PREFIX,
    MIN_PYTHON,
    NO_MATCH,
    RECORD,
    SetupCancelled,
    SetupError,
    SetupPlan,
    Step,
    env_python,
    inspect_python,
    read_report,
)
from .torch_builds import NO_WINDOW, REST_WEIGHT, torch_offer


@dataclass
class SetupResult:
    python: str
    report: dict[str, Any]


class Installer:
    """Runs a :class:`SetupPlan` in a new dated folder of its root. The log reads as steps ("Step 2 of 4: …")
    with short lines of what pip is doing, through ``on_line``; the full output of every step goes to the file
    :attr:`log_path`; the overall fraction done to ``on_progress``; ``on_fallback`` hears what is installed
    instead when the PyTorch index lacks the pinned torch; ``is_cancelled`` is polled several times a second."""

    def __init__(self, plan: SetupPlan, on_line: Callable[[str], None] = lambda _line: None,
                 on_progress: Callable[[float], None] = lambda _done: None,
                 is_cancelled: Callable[[], bool] = lambda: False,
                 on_fallback: Callable[[str], None] = lambda _note: None) -> None:
        self.plan, self.on_line, self.on_progress, self.is_cancelled = plan, on_line, on_progress, is_cancelled
        self.on_fallback = on_fallback
        self.done = 0.0
        folder = plan.root / f"{ENV_PREFIX}{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        self.folder = folder if not folder.exists() else folder.with_name(folder.name + f"-{os.getpid()}")
        self.log = RawLog(plan.root / LOG_FOLDER / f"{self.folder.name}.log")
        self.fallback = ""  # what was installed instead of the planned torch, when it was

    @property
    def log_path(self) -> Path:
        return self.log.path

    def say(self, line: str) -> None:
        """A line of the set-up's own, for the dialog's log and the log file."""
        self.log.write(line)
        self.on_line(line)

    def run(self) -> SetupResult:
        base = inspect_python(self.plan.base)
        if not base.usable:
            raise SetupError(f"{base.describe()}. Choose another Python to make the engine's environment with.")
        if self.plan.wheelhouse and not Path(self.plan.wheelhouse).is_dir():
            raise SetupError(f"The package folder {self.plan.wheelhouse} does not exist; choose the folder of wheels.")
        self.plan.root.mkdir(parents=True, exist_ok=True)
        self.log.open()
        self.say(f"Making the engine's environment in {self.folder} with {base.describe()}")
        for line in self.plan.describe().splitlines():
            self.say(f"  {line}")
        self.say(f"  The full output of every step goes to {self.log.path}")
        try:
            return self._run_steps(".".join(map(str, base.version[:2])))
        except SetupCancelled as exc:
            self.log.write(str(exc))
            raise
        except SetupError as exc:
            self.log.write(str(exc))
            raise SetupError(f"{exc} The full output is in {self.log.path}.") from exc
        finally:
            if not (self.folder / RECORD).is_file():
                shutil.rmtree(self.folder, ignore_errors=True)  # nothing half-made is left, nothing else touched
            self.log.close()

    def _run_steps(self, python: str) -> SetupResult:
        steps = self.plan.steps(self.folder)
        output = ""
        for number, step in enumerate(steps, 1):
            if number == 2:  # the environment exists: the files the pip steps read go into it
                self.plan.write_inputs(self.folder)
            start = self.done
            code, output = self._step(step, f"Step {number} of {len(steps)}", start)
            missing = NO_MATCH.search(output) if code != 0 and step.fallback is not None else None
            if step.fallback is not None and missing:
                self.fallback = self.plan.fallback_note(missing.group(1), python)
                self.say(self.fallback)
                self.on_fallback(self.fallback)
                step = step.fallback
                code, output = self._step(step, f"Step {number} of {len(steps)}, again", start)
            if code != 0 and step is not steps[-1]:
                raise SetupError(explain_failure(step, code, output, self.plan))
            self.done = start + step.share
            self.on_progress(min(self.done, 1.0))
        return self._finish(output)

    def _step(self, step: Step, heading: str, start: float) -> tuple[int, str]:
        """Run one step: its heading, what pip does in short lines, and how it ended. (exit code, output)."""
        self.say(f"{heading}: {step.label}")
        self.log.write("$ " + " ".join(step.argv))
        pip = step.argv[1:3] == ["-m", "pip"]
        reader = PipReader(self.on_line)
        code, output = self._stream(step, start, reader.feed if pip else lambda _line: None)
        if code == 0 and not step.engine:  # the self-test's report is read on its own
            self.on_line(reader.done() if pip else "  done")
        return code, output

    def _finish(self, output: str) -> SetupResult:
        """Read the self-test's report, say it in words, and record the environment as finished."""
        report = read_report(output)
        if report is None:
            raise SetupError(f"The engine's self-test did not answer: {output.strip()[-400:]}")
        for line in selftest_lines(report):
            self.say(line)
        if not report.get("ok"):
            from ..engine.serve.selftest import failures

            from_report = "; ".join(failures(report))
            advice = " Choose the CPU build under Torch build and set up again." if self.plan.build.gpu else ""
            raise SetupError(f"The new environment does not run the engine ({from_report}).{advice}")
        device = report["checks"]["device"].get("device", "cpu")
        if self.plan.build.gpu and not str(device).startswith("cuda"):
            self.say(f"Note: the {self.plan.build.name} build of torch sees no usable GPU here, so the engine "
                     "runs on the CPU. Check the NVIDIA driver, or set up again with the CPU build (a smaller "
                     "download).")
        installed, megabytes = torch_build_words(report), folder_megabytes(self.folder)
        record = {"created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "base": self.plan.base,
                  "build": self.plan.build.name, "reason": self.plan.build.reason, "torch": installed,
                  "fallback": self.fallback, "disk_mb": round(megabytes), "log": str(self.log.path),
                  "wheelhouse": self.plan.wheelhouse, "selftest": report}
        (self.folder / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
        instead = f", from PyPI instead of the {torch_offer(self.plan.build.name, self.plan.system)[0]}" \
            if self.fallback else ""
        self.say(f"The engine's environment is ready: {installed}{instead}; {gigabytes(megabytes)} on disk in "
                 f"{self.folder}.")
        return SetupResult(str(env_python(self.folder)), report)

    def _stream(self, step: Step, start: float, show: Callable[[str], None]) -> tuple[int, str]:
        """Run one step, each line of its output to the log file and to ``show``; stopped when cancelled.
        (exit code, output)."""
        try:
            process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       encoding="utf-8", errors="replace", env=step.env(),
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
            self.log.write(line)
            show(line)
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
        build = "pypi" if step.label.endswith(" instead") else plan.build.name  # the fallback's step
        needed = gigabytes((torch_offer(build, plan.system)[1] + REST_WEIGHT).disk_mb)
        return f"Not enough disk space in {plan.root}: the engine needs about {needed}. Free some space and try again."
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
    last = " | ".join(output.strip().splitlines()[-3:])
    return f"{step.label} failed (exit code {code}): {last}"
