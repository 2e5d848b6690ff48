"""What Set up engine says before, during and after a set-up: the plan (which torch build, from where, its
size, and what a fallback would install), the log as steps with short lines of what pip does, and the
dialog in real QGIS stating a fallback when the PyTorch index lacks the pinned torch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clip_search_plugin.setup import plan as setup
from clip_search_plugin.setup import torch_builds
from clip_search_plugin.setup.plan import Build

from ..conftest import wait_until
from .test_engine_setup import base_python, package_folder, served_index

PYTORCH = "https://download.pytorch.org/whl"
# pip's lines installing torch from PyPI: its downloads as pip printed them, and a retry, a cached file and a
# tiny file in pip's own formats
RECORDED_PIP = "\n".join([
    "Looking in indexes: https://pypi.org/simple",
    "Collecting torch==2.15.0",
    "  Downloading torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl (539.1 MB)",
    "Collecting torchvision==0.29.2",
    "  Downloading https://files.pythonhosted.org/packages/4e/torchvision-0.29.2-py3-none-manylinux_2_28_x86_64.whl "
    "(7.6 MB)",
    "Collecting nvidia-cudnn-cu13==9.26.0.51 (from torch==2.15.0)",
    "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken "
    "by 'ReadTimeoutError(\"HTTPSConnectionPool(host='files.pythonhosted.org', port=443): Read timed out. (read "
    "timeout=15)\")': /packages/nvidia_cudnn_cu13.whl",
    "  Downloading nvidia_cudnn_cu13-9.26.0.51-py3-none-manylinux_2_27_x86_64.whl (2.1 GB)",
    "Collecting filelock (from torch==2.15.0)",
    "  Using cached filelock-4.3.1-py3-none-any.whl (244 kB)",
    "Collecting mpmath<1.4,>=1.1.0 (from sympy>=1.13.3->torch==2.15.0)",
    "  Downloading mpmath-1.3.0-py3-none-any.whl (536 bytes)",
    "WARNING: Location 'file:///opt/simple/torch/' is ignored: it is neither a file nor a directory.",
    "Installing collected packages: mpmath, filelock, nvidia-cudnn-cu13, torch, torchvision",
    "Successfully installed filelock-4.3.1 mpmath-1.3.0 nvidia-cudnn-cu13-9.26.0.51 torch-2.15.0 torchvision-0.29.2",
])


def linux_plan(build: str, wheelhouse: str = "") -> setup.SetupPlan:
    return setup.SetupPlan(sys.executable, Build(build, "the reason"), system="Linux", wheelhouse=wheelhouse)


def test_the_plan_states_the_torch_build_its_source_its_size_and_the_fallback() -> None:
    cpu = linux_plan("cpu").describe().splitlines()
    assert cpu == [
        f"torch 2.15.0 and torchvision 0.29.2, CPU build, from the PyTorch index {PYTORCH}/cpu: about 0.2 GB to "
        "download, 0.9 GB on disk.",
        "Then open_clip, Faiss, rasterio and the rest from PyPI: about 0.1 GB to download, 0.4 GB on disk; in all "
        "about 0.3 GB to download, 1.3 GB on disk.",
        "Should that index lack torch 2.15.0 and torchvision 0.29.2 for this Python: PyPI's CUDA 13.2 build (it "
        "also runs on the CPU) instead, about 3.0 GB to download, 5.5 GB on disk (5.9 GB in all).",
        "Why: the reason."]
    cu130 = linux_plan("cu130").describe()
    assert cu130.startswith(f"torch 2.15.0 and torchvision 0.29.2, CUDA 13.0 build, from the PyTorch index "
                            f"{PYTORCH}/cu130: about 3.0 GB to download, 5.5 GB on disk.")
    assert "CUDA 12.6 build" in linux_plan("cu126").describe()
    offline = linux_plan("cpu", wheelhouse="/wheels").describe()
    assert offline.startswith("torch 2.15.0 and torchvision 0.29.2, CPU build, and the rest of the engine's "
                              "packages from the package folder /wheels, nothing downloaded: about 1.3 GB on disk.")
    assert "Should" not in offline and "download.pytorch.org" not in offline
    mac = setup.SetupPlan(sys.executable, Build("default", "macOS"), system="Darwin").describe()
    assert mac.startswith("torch 2.15.0 and torchvision 0.29.2, PyPI's build for the CPU and the Apple GPU (MPS), "
                          "from PyPI:") and "Should" not in mac  # nowhere else to fall back to
    windows = setup.SetupPlan(sys.executable, Build("cu126", ""), system="Windows").describe()
    assert "instead" in windows and "PyPI's CPU build instead, about 0.2 GB to download" in windows


def test_the_size_figures_are_for_the_version_set() -> None:
    # measured for these pins: a change of torch or torchvision means measuring again (see setup/torch_builds.py)
    for system in ("Linux", "Windows", "Darwin"):
        assert tuple(setup.split_requirements(setup.requirements_file(system))[0]) == setup.SIZES_FOR, system
    assert set(setup.BUILD_CHOICES) <= set(setup.TORCH_WEIGHT)


def test_pips_output_reads_as_short_lines_with_sizes() -> None:
    from clip_search_plugin.setup.log import PipReader

    said: list[str] = []
    reader = PipReader(said.append)
    for line in RECORDED_PIP.splitlines():
        reader.feed(line)
    said.append(reader.done())
    assert said == [
        "  package index: https://pypi.org/simple",
        "  collecting torch==2.15.0",
        "  downloading torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl (539.1 MB)",
        "  collecting torchvision==0.29.2",
        "  downloading torchvision-0.29.2-py3-none-manylinux_2_28_x86_64.whl (7.6 MB)",
        "  collecting nvidia-cudnn-cu13==9.26.0.51",
        "  pip, network trouble: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
        "connection broken by 'ReadTimeoutError(\"HTTPSConnect…",
        "  downloading nvidia_cudnn_cu13-9.26.0.51-py3-none-manylinux_2_27_x86_64.whl (2.1 GB)",
        "  collecting filelock",
        "  using the cached filelock-4.3.1-py3-none-any.whl (244 kB)",
        "  collecting mpmath<1.4,>=1.1.0",
        "  downloading mpmath-1.3.0-py3-none-any.whl (536 bytes)",
        "  installing 5 packages: mpmath, filelock, nvidia-cudnn-cu13, torch, torchvision",
        "  done: installed filelock 4.3.1, mpmath 1.3.0, nvidia-cudnn-cu13 9.26.0.51, torch 2.15.0, torchvision "
        "0.29.2; 2.6 GB downloaded"]


def test_the_dialog_states_the_plan_and_says_when_it_falls_back(qgis_iface: object, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from qgis.PyQt.QtWidgets import QApplication

    from clip_search_plugin.ui.setup_dialog import SetupDialog

    wheels, versions = package_folder(tmp_path)
    found = {w.name.split("-")[0].replace("_", "-"): w for w in wheels.glob("*.whl")}
    (tmp_path / "pytorch" / "cpu").mkdir(parents=True)  # the CPU index has no torch 2.15.0
    (tmp_path / "pytorch" / "cpu" / "index.html").write_text("")
    pytorch = (tmp_path / "pytorch").as_uri()
    monkeypatch.setattr(torch_builds, "TORCH_INDEX", pytorch + "/{build}")
    dialog = SetupDialog("")
    wait_until(lambda: dialog.setupButton.isEnabled(), 60, "the dialog to look at the computer")
    dialog.pythonCombo.setEditText(base_python())
    dialog.folderWidget.setFilePath(str(tmp_path / "engines"))
    dialog.requirements = versions
    dialog.buildCombo.setCurrentIndex(dialog.buildCombo.findData("cu130"))
    assert dialog.planLabel.text().startswith("torch 2.15.0 and torchvision 0.29.2, CUDA 13.0 build, from the "
                                              f"PyTorch index {pytorch}/cu130: about 3.0 GB to download")
    dialog.buildCombo.setCurrentIndex(dialog.buildCombo.findData("cpu"))
    plan = dialog.planLabel.text()
    assert plan.startswith(f"torch 2.15.0 and torchvision 0.29.2, CPU build, from the PyTorch index {pytorch}/cpu: "
                           "about 0.2 GB to download, 0.9 GB on disk.")
    assert "Should that index lack torch 2.15.0 and torchvision 0.29.2 for this Python: PyPI's CUDA 13.2 build" in plan
    with served_index(tmp_path / "pypi", found) as pypi:
        monkeypatch.setenv("PIP_INDEX_URL", pypi)
        dialog.setupButton.click()
        wait_until(lambda: dialog.task is None, 300, "the set-up task to finish")
    assert dialog.progressBar.value() == 100, dialog.logView.toPlainText()[-2000:]
    # the plan line now says what was installed instead, and its size
    assert dialog.planLabel.text().startswith(f"The PyTorch cpu index ({pytorch}/cpu) has no torch==2.15.0 for Python")
    assert "Installing PyPI's CUDA 13.2 build (it also runs on the CPU) instead: about 3.0 GB to download" in \
        dialog.planLabel.text()
    log = dialog.logView.toPlainText().splitlines()
    assert [line.split(":")[0] for line in log if line.startswith("Step ")] == [
        "Step 1 of 4", "Step 2 of 4", "Step 2 of 4, again", "Step 3 of 4", "Step 4 of 4"]
    assert dialog.planLabel.text() in log and "  encode: ok" in log
    assert not any(line.startswith(("Successfully", "Collecting", "Looking in", "{", "}", ' "')) for line in log)
    assert log[-1].startswith("The engine's environment is ready: torch 2.15.0")
    # the full output is kept, and named in the dialog and in the diagnostics
    full = Path(dialog.logFileLabel.text().removeprefix("Full output of every step: "))
    assert full.parent == tmp_path / "engines" / "logs"
    assert "ERROR: No matching distribution found for torch==2.15.0" in full.read_text()
    text = dialog.copy_diagnostics()
    assert QApplication.clipboard().text() == text
    assert f"Set-up log: {full}" in text and "(PyPI's torch, taken instead)" in text
    assert text.rstrip().endswith(log[-1].strip())  # the log's end, as it was when copied
    dialog.reject()
