"""`make run`'s script starts the real QGIS desktop with the plugin enabled in its own profile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import ARTIFACTS, ENGINE_PYTHON, REPO, shared_raster


def test_desktop_starts_with_the_plugin_and_searches(tmp_path: Path) -> None:
    if shutil.which("qgis") is None or shutil.which("xvfb-run") is None:
        pytest.skip("the QGIS desktop or xvfb-run is not installed (make qgis-env installs them)")
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    raster = shared_raster("colorado_rgb_015m.tif")
    report = tmp_path / "report.json"
    screenshot = ARTIFACTS / "qgis_desktop.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM")}
    env.update(
        CLIP_SEARCH_PROFILES=str(tmp_path / "profiles"),
        CLIP_SEARCH_CACHE=str(tmp_path / "indexes"),
        CLIP_SEARCH_MODEL="tiny-random",
        CLIP_SEARCH_DEMO_QUERY="a parking lot",
        CLIP_SEARCH_REPORT=str(report),
        CLIP_SEARCH_SCREENSHOT=str(screenshot),
        CLIP_SEARCH_SCREENSHOT_AFTER="150",
        CLIP_SEARCH_QUIT="1",
    )
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "run_qgis.sh"), str(ENGINE_PYTHON), str(raster)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # QGIS, Xvfb and the engine with it
        stdout, stderr = proc.communicate()
    assert report.exists(), f"QGIS wrote no report (exit {proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    state = json.loads(report.read_text())
    assert "clip_search_plugin" in state["active_plugins"]
    assert state["dock_visible"]
    assert "colorado_rgb_015m" in state["raster_layers"]
    assert state["status"].startswith("Index ready"), state["status"]
    assert state["results_rows"] > 0
    assert any(name.startswith("CLIP: a parking lot") for name in state["raster_layers"])
    assert screenshot.stat().st_size > 10_000
    assert proc.returncode == 0, f"QGIS did not quit cleanly (exit {proc.returncode}):\n{stderr[-3000:]}"
