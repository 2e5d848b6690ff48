"""Engine set-up: GPU detection from recorded nvidia-smi outputs (run as real processes), the torch build
chosen for each, and the installation itself with QGIS's own Python: a real virtual environment, real pip
installing from a local package folder with no network, and the real engine's self-test in the result."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clip_search_plugin.setup import install as install
from clip_search_plugin.setup import plan as setup
from clip_search_plugin.setup import torch_builds
from clip_search_plugin.setup.plan import Build, Gpu, GpuReport

from ..conftest import ENGINE_PYTHON

HEADER = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}             Driver Version: {driver}     CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
             "latest NVIDIA driver is installed and running.")

# name: (query answer, its exit code, header's CUDA version, the build expected, words the reason must hold)
RECORDED = {
    "H100 on R580": ("NVIDIA H100 80GB HBM3, 580.95.05, 81559, 9.0", 0, "13.0", "cu130", "H100"),
    "H100 on R570": ("NVIDIA H100 80GB HBM3, 570.133.20, 81559, 9.0", 0, "12.8", "cu126", "570.133.20"),
    "RTX 3060 on R535": ("NVIDIA GeForce RTX 3060, 535.183.01, 12288, 8.6", 0, "12.2", "cu126", "RTX 3060"),
    "Quadro P4000 (Pascal) on R580": ("Quadro P4000, 580.95.05, 8192, 6.1", 0, "13.0", "cu126", "P4000"),
    "RTX 5090 (Blackwell) on R570": ("NVIDIA GeForce RTX 5090, 570.133.07, 32607, 12.0", 0, "12.8", "cpu",
                                     "driver 580.65.6 or newer"),
    "RTX 5090 (Blackwell) on R580": ("NVIDIA GeForce RTX 5090, 580.95.05, 32607, 12.0", 0, "13.0", "cu130", "5090"),
    "GTX 1080 on R470 (no compute_cap field)": ("NVIDIA GeForce GTX 1080, 470.256.02, 8192", 0, "11.4", "cpu",
                                                "driver 525.60.13 or newer"),
    "GTX 750 Ti (Maxwell) on R580": ("NVIDIA GeForce GTX 750 Ti, 580.95.05, 2048, 5.0", 0, "13.0", "cu126", "750 Ti"),
    "two GPUs: the first is used": ("NVIDIA A100-SXM4-40GB, 550.90.07, 40960, 8.0\nNVIDIA GeForce GT 710, "
                                    "550.90.07, 2048, 3.5", 0, "12.4", "cu126", "A100"),
    "driver not loaded": (NO_DRIVER, 9, "", "cpu", "couldn't communicate with the NVIDIA driver"),
}


def fake_smi(folder: Path, answer: str, code: int, cuda: str, driver: str) -> str:
    """An executable that answers as the recorded nvidia-smi did: R470 refuses the compute_cap field."""
    old = driver.startswith("470")
    script = folder / "nvidia-smi"
    lines = ["#!/bin/sh",
             'case "$1" in --query-gpu=*)',
             f'  case "$1" in *compute_cap*) if [ {int(old)} = 1 ]; then '
             "echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2; fi;; esac",
             f"  cat <<'EOF'\n{answer}\nEOF",
             f"  exit {code};;",
             "esac",
             f"cat <<'EOF'\n{HEADER.format(driver=driver, cuda=cuda) if code == 0 else answer}\nEOF",
             f"exit {code}"]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_recorded_nvidia_smi_outputs_choose_the_right_torch_build(tmp_path: Path, case: str) -> None:
    answer, code, cuda, expected, words = RECORDED[case]
    driver = answer.split(", ")[1] if code == 0 else ""
    report = setup.detect_gpus(fake_smi(tmp_path, answer, code, cuda, driver))
    build = setup.choose_build(report, "Linux")
    assert build.name == expected, (case, report, build)
    assert words in build.reason or words in report.describe(), build.reason
    if code == 0:
        assert report.gpus and report.driver == driver and report.cuda == cuda
        assert (report.gpus[0].compute_capability is None) == driver.startswith("470")
    else:
        assert not report.gpus and "couldn't communicate" in report.problem
    assert build.index_url == f"https://download.pytorch.org/whl/{expected}"


def test_no_nvidia_smi_macos_and_windows_drivers() -> None:
    assert setup.detect_gpus("/nonexistent/nvidia-smi").problem.startswith("nvidia-smi could not run")
    none = GpuReport(problem="no NVIDIA driver found (nvidia-smi is not installed)")
    assert setup.choose_build(none, "Linux").name == "cpu"
    assert setup.choose_build(none, "Darwin") == Build("default", setup.choose_build(none, "Darwin").reason)
    assert setup.choose_build(none, "Darwin").index_url is None
    laptop = GpuReport((Gpu("NVIDIA GeForce RTX 4060 Laptop GPU", "566.26", 8188, (8, 9)),), "12.7")
    assert setup.choose_build(laptop, "Windows").name == "cu126"  # Windows numbers its drivers differently
    assert setup.choose_build(laptop, "Linux").name == "cu126"
    kepler = GpuReport((Gpu("Tesla K40m", "525.147.05", 11441, (3, 5)),), "12.0")
    assert "older than any current torch" in setup.choose_build(kepler, "Linux").reason


def test_candidate_pythons_never_include_the_qgis_program(tmp_path: Path) -> None:
    apps = tmp_path / "QGIS" / "apps" / "Python312"
    bin_ = tmp_path / "QGIS" / "bin"
    for path in (apps / "python.exe", bin_ / "qgis-bin.exe", bin_ / "python3.exe"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    found = setup.python_candidates("Windows", executable=str(bin_ / "qgis-bin.exe"), prefix=str(apps),
                                    exec_prefix=str(apps))
    assert found[:2] == [str(apps / "python.exe"), str(bin_ / "python3.exe")]
    assert not any("qgis-bin" in p for p in found)
    # on Linux QGIS's interpreter is a real Python: it comes first
    assert setup.python_candidates("Linux")[0] == sys.executable


def test_qgis_python_is_inspected_and_a_non_python_is_refused(tmp_path: Path) -> None:
    ours = setup.inspect_python(sys.executable)
    assert ours.version[:2] == sys.version_info[:2] and ours.usable == ours.can_venv
    not_python = tmp_path / "python3"
    not_python.write_text("#!/bin/sh\necho hello\n")
    not_python.chmod(0o755)
    assert setup.inspect_python(str(not_python)).problem == "not a Python that runs"


def test_failures_are_explained_with_what_to_do(tmp_path: Path) -> None:
    plan = setup.SetupPlan(sys.executable, Build("cpu", ""), root=tmp_path, wheelhouse=str(tmp_path / "wheels"))
    venv = setup.Step("Creating the virtual environment", [sys.executable, "-m", "venv", "x"], 0.1)
    pip = setup.Step("Installing torch", [sys.executable, "-m", "pip"], 0.5)
    debian = ("The virtual environment was not created successfully because ensurepip is not\navailable.  On "
              "Debian/Ubuntu systems, you need to install the python3-venv\npackage")
    assert "sudo apt install python3-venv" in install.explain_failure(venv, 1, debian, plan)
    missing = "ERROR: No matching distribution found for torch==2.15.0"
    assert "has no torch==2.15.0" in install.explain_failure(pip, 1, missing, plan)
    online = setup.SetupPlan(sys.executable, Build("cu126", ""), root=tmp_path)
    assert "proxy" in install.explain_failure(pip, 1, "ProxyError('Cannot connect to proxy.')", online)
    assert "certificate" in install.explain_failure(pip, 1, "SSLError(CERTIFICATE_VERIFY_FAILED)", online)
    full = "OSError: [Errno 28] No space left on device"
    assert "disk space in" in install.explain_failure(pip, 1, full, online) and "about 5.9 GB" in \
        install.explain_failure(pip, 1, full, online)
    cpu = setup.SetupPlan(sys.executable, Build("cpu", ""), root=tmp_path, system="Linux")
    assert "the engine needs about 1.3 GB" in install.explain_failure(pip, 1, full, cpu)
    [_, torch_step, *_] = cpu.steps(tmp_path / "new")
    assert torch_step.fallback is not None  # PyPI's build, should the CPU index lack the pin: its size is said
    assert "the engine needs about 5.9 GB" in install.explain_failure(torch_step.fallback, 1, full, cpu)


# --- installing, for real --------------------------------------------------------------------------------
def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A real wheel file (what `pip wheel` writes for a pure-Python project)."""
    dist = f"{name.replace('-', '_')}-{version}"
    contents = dict(files)
    contents[f"{dist}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist}.dist-info/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    contents[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
    return wheel


def engine_site_packages() -> str:
    done = subprocess.run([str(ENGINE_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def package_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A local package folder and a version set for it. Copying torch and CUDA into a test is out of
    reach (about 6 GB), so its torch and torchvision wheels carry a path file that makes the already
    installed engine packages importable; everything else about the set-up is the real thing."""
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "torch", "2.15.0", {"clip_search_engine_packages.pth": engine_site_packages() + "\n"})
    make_wheel(wheels, "torchvision", "0.29.2", {})
    make_wheel(wheels, "clip-search-probe", "1.0", {"clip_search_probe.py": "WORKS = True\n"})
    versions = tmp_path / "linux.txt"
    versions.write_text("# a test version set\ntorch==2.15.0\ntorchvision==0.29.2\nclip-search-probe==1.0\n")
    return wheels, versions


def base_python() -> str:
    """QGIS's own interpreter (the tests run in a virtual environment made from it)."""
    python = getattr(sys, "_base_executable", sys.executable)
    base = setup.inspect_python(python)
    if not base.usable:
        pytest.skip(f"QGIS's Python cannot make virtual environments here: {base.problem}")
    return python


def test_set_up_from_a_package_folder_makes_a_working_engine(tmp_path: Path) -> None:
    wheels, versions = package_folder(tmp_path)
    root = tmp_path / "engines"
    plan = setup.SetupPlan(base_python(), Build("cu126", "test"), root=root, requirements=versions,
                           wheelhouse=str(wheels))
    lines: list[str] = []
    progress: list[float] = []
    env = dict(os.environ)
    os.environ["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"  # any use of the network fails at once
    installer = install.Installer(plan, lines.append, progress.append)
    try:
        result = installer.run()
    finally:
        os.environ.clear()
        os.environ.update(env)
    python = Path(result.python)
    assert python.is_file() and python.parent.parent.parent == root
    assert result.report["ok"] and result.report["checks"]["encode"]["ok"], result.report
    assert result.report["executable"] == str(python)
    # the environment is a real venv made from QGIS's Python, and holds what the version set named
    config = (python.parent.parent / "pyvenv.cfg").read_text()
    assert f"home = {Path(plan.base).parent}" in config and "include-system-site-packages = false" in config
    probe = subprocess.run([str(python), "-c", "import clip_search_probe; print(clip_search_probe.WORKS)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True"
    # the log reads as steps, with short lines of what pip did; pip's own output is in the log file
    assert [line for line in lines if line.startswith("Step ")] == [
        "Step 1 of 4: Creating the virtual environment",
        f"Step 2 of 4: Installing torch 2.15.0 and torchvision 0.29.2, CUDA 12.6 build, from the package folder "
        f"{wheels}",
        "Step 3 of 4: Installing open_clip, Faiss, rasterio and the rest, with torch held",
        "Step 4 of 4: Checking the engine (self-test)"], lines
    assert "  using torch-2.15.0-py3-none-any.whl" in lines and "  done: installed torch 2.15.0, torchvision 0.29.2" \
        in lines and "  done: installed clip-search-probe 1.0" in lines, lines
    assert "  encode: ok" in lines and any(line.startswith("  device: cpu (") for line in lines)
    assert not any(line.startswith(("Successfully", "Processing", "Looking in", "{", "}", ' "')) for line in lines)
    raw = installer.log_path.read_text()
    assert installer.log_path.parent == root / "logs"
    assert f"  The full output of every step goes to {installer.log_path}" in lines
    assert "Successfully installed torch-2.15.0 torchvision-0.29.2" in raw and '"encode": {' in raw
    record = json.loads((python.parent.parent / setup.RECORD).read_text())
    assert record["log"] == str(installer.log_path) and record["torch"].startswith("torch 2.15.0") and not record[
        "fallback"]
    assert lines[-1].startswith("The engine's environment is ready: torch 2.15.0") and str(python.parent.parent) in \
        lines[-1]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    assert any("cu126 build of torch sees no usable GPU" in line for line in lines)  # this computer has none
    assert setup.made_environments(root) == [python.parent.parent]
    assert not (Path(sysconfig.get_paths()["purelib"]) / "clip_search_probe.py").exists()  # not into QGIS's own


def test_a_failed_or_cancelled_set_up_leaves_nothing_and_keeps_the_engine_in_use(tmp_path: Path) -> None:
    wheels, versions = package_folder(tmp_path)
    root = tmp_path / "engines"
    earlier = root / "engine-20260101-000000"
    earlier.mkdir(parents=True)
    (earlier / setup.RECORD).write_text("{}")
    versions.write_text(versions.read_text() + "not-in-the-folder==1.0\n")
    plan = setup.SetupPlan(base_python(), Build("cpu", "test"), root=root, requirements=versions,
                           wheelhouse=str(wheels))
    failed = install.Installer(plan)
    with pytest.raises(setup.SetupError, match=f"The package folder {wheels} has no not-in-the-folder==1.0") as error:
        failed.run()
    assert sorted(p.name for p in root.iterdir()) == [earlier.name, "logs"]
    # the failed set-up's full output outlives its environment, for a bug report
    assert str(error.value).endswith(f"The full output is in {failed.log_path}.")
    assert "No matching distribution found for not-in-the-folder==1.0" in failed.log_path.read_text()

    lines: list[str] = []
    with pytest.raises(setup.SetupCancelled):
        install.Installer(plan, lines.append, is_cancelled=lambda: any(line.startswith("Step 2 of") for line in lines)
                        ).run()
    assert sorted(p.name for p in root.iterdir()) == [earlier.name, "logs"]
    assert setup.made_environments(root) == [earlier]


def test_diagnostics_tell_what_a_bug_report_needs(tmp_path: Path) -> None:
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    report = setup.run_selftest(str(ENGINE_PYTHON))
    assert report["ok"], report
    gpus = GpuReport((Gpu("NVIDIA GeForce RTX 3060", "535.183.01", 12288, (8, 6)),), "12.2")
    text = setup.diagnostics({"QGIS": "3.22.16", "QGIS Python": sys.version.split()[0]}, str(ENGINE_PYTHON), gpus,
                             report, ["The engine process ended unexpectedly (exit code -9)"])
    for expected in ("QGIS: 3.22.16", "OS: Linux", "RTX 3060", "driver 535.183.01, CUDA 12.2",
                     f"Engine Python: {ENGINE_PYTHON}", "Engine device: cpu", "torch 2.15.0", "open_clip 3.3.0",
                     "faiss 1.15.1", "rasterio 1.4.4", "Self-test encode: ok", "exit code -9"):
        assert expected in text, expected
    broken = setup.run_selftest(sys.executable)  # QGIS's own Python has no engine packages
    assert not broken["ok"] and "cannot import torch" in broken["checks"]["packages"]["error"]


def test_qgis_proxy_reaches_pip(qgis_iface: object) -> None:
    from qgis.core import QgsNetworkAccessManager
    from qgis.PyQt.QtNetwork import QNetworkProxy

    from clip_search_plugin.ui.setup_dialog import SetupDialog, qgis_proxy_url

    manager = QgsNetworkAccessManager.instance()
    before = manager.fallbackProxy()
    try:
        assert qgis_proxy_url() == ""
        manager.setFallbackProxyAndExcludes(QNetworkProxy(QNetworkProxy.HttpProxy, "proxy.example", 3128, "me",
                                                          "p@ss"), [], [])
        assert qgis_proxy_url() == "http://me:p%40ss@proxy.example:3128"
        dialog = SetupDialog("")
        dialog.pythonCombo.setEditText(sys.executable)
        assert dialog.plan().pip_args == ("--proxy", "http://me:p%40ss@proxy.example:3128")
        assert dialog.plan().base == sys.executable
        dialog.buildCombo.setCurrentIndex(dialog.buildCombo.findData("cu126"))  # the user's own choice wins
        assert dialog.plan().build.name == "cu126"
        assert dialog.plan().build.index_url == "https://download.pytorch.org/whl/cu126"
        dialog.reject()
    finally:
        manager.setFallbackProxyAndExcludes(before, [], [])


def test_an_environment_set_up_earlier_is_found_and_online_installs_never_mix_indexes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clip_search_plugin.session.environment import default_engine_python

    monkeypatch.delenv("CLIP_SEARCH_ENGINE_PYTHON", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    root = setup.default_env_root("Linux")
    assert root == tmp_path / "clip_search"
    for name, finished in (("engine-20260101-000000", True), ("engine-20260301-000000", True),
                           ("engine-20260401-000000", False)):  # the newest never finished: no record
        python = setup.env_python(root / name)
        python.parent.mkdir(parents=True)
        python.symlink_to(sys.executable)
        if finished:
            (root / name / setup.RECORD).write_text("{}")
    assert default_engine_python() == str(setup.env_python(root / "engine-20260301-000000"))

    plan = setup.SetupPlan(sys.executable, Build("cu126", "test"), root=root)
    venv, torch_step, rest, check = plan.steps(root / "new")
    assert torch_step.argv[-4:] == ["--index-url", "https://download.pytorch.org/whl/cu126", "torch==2.15.0",
                                    "torchvision==0.29.2"]
    assert "-c" in rest.argv and "--index-url" not in rest.argv
    assert not any("--extra-index-url" in a for step in (torch_step, rest) for a in step.argv)
    assert check.argv[-2:] == ["selftest", "--json"] and venv.argv[1:3] == ["-m", "venv"]


@contextlib.contextmanager
def served_index(folder: Path, wheels: dict[str, Path]) -> Iterator[str]:
    """A package index (PEP 503 pages and the wheels) served over HTTP on this computer, as PyPI serves one:
    pip downloads from it, saying each file's size."""
    (folder / "files").mkdir(parents=True)
    for project, wheel in wheels.items():
        shutil.copy(wheel, folder / "files" / wheel.name)
        (folder / "simple" / project).mkdir(parents=True)
        (folder / "simple" / project / "index.html").write_text(f'<a href="../../files/{wheel.name}">{wheel.name}</a>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        handler.log_message = lambda *_args: None  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/simple"
        finally:
            server.shutdown()


def test_a_pytorch_index_without_the_pinned_version_falls_back_to_pypis_build_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels, versions = package_folder(tmp_path)
    found = {w.name.split("-")[0].replace("_", "-"): w for w in wheels.glob("*.whl")}
    (tmp_path / "pytorch" / "cpu").mkdir(parents=True)  # this build's index has no torch 2.15.0
    (tmp_path / "pytorch" / "cpu" / "index.html").write_text("")
    monkeypatch.setattr(torch_builds, "TORCH_INDEX", (tmp_path / "pytorch").as_uri() + "/{build}")
    plan = setup.SetupPlan(base_python(), Build("cpu", "test"), root=tmp_path / "engines", requirements=versions,
                           system="Linux")
    # the plan says what the fallback would install and its size, beside the planned build's
    assert plan.describe().splitlines()[2] == (
        "Should that index lack torch 2.15.0 and torchvision 0.29.2 for this Python: PyPI's CUDA 13.2 build (it "
        "also runs on the CPU) instead, about 3.0 GB to download, 5.5 GB on disk (5.9 GB in all).")
    lines: list[str] = []
    notes: list[str] = []
    with served_index(tmp_path / "pypi", found) as pypi:
        monkeypatch.setenv("PIP_INDEX_URL", pypi)  # "PyPI", here
        result = install.Installer(plan, lines.append, on_fallback=notes.append).run()
    assert result.report["ok"]
    note = (f"The PyTorch cpu index ({(tmp_path / 'pytorch').as_uri()}/cpu) has no torch==2.15.0 for Python "
            f"{sys.version_info[0]}.{sys.version_info[1]} on Linux. Installing PyPI's CUDA 13.2 build (it also runs "
            "on the CPU) instead: about 3.0 GB to download, 5.5 GB on disk (5.9 GB in all), where the CPU build "
            "was about 0.2 GB to download, 0.9 GB on disk.")
    assert notes == [note] and note in lines
    assert "  pip: ERROR: No matching distribution found for torch==2.15.0" in lines
    assert ("Step 2 of 4, again: Installing torch 2.15.0 and torchvision 0.29.2, PyPI's CUDA 13.2 build (it also "
            "runs on the CPU), from PyPI instead") in lines
    assert any(re.fullmatch(r"  downloading torch-2\.15\.0-py3-none-any\.whl \(\d[\d.]* kB\)", line) for line in lines)
    assert any(re.fullmatch(r"  done: installed torch 2\.15\.0, torchvision 0\.29\.2; \d+ kB downloaded", line)
               for line in lines), lines
    assert lines[-1].startswith("The engine's environment is ready: torch 2.15.0") and \
        "from PyPI instead of the CPU build" in lines[-1]
    record = json.loads((Path(result.python).parent.parent / setup.RECORD).read_text())
    assert record["fallback"] == note
