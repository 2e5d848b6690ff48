"""`make run`'s script starts the real QGIS desktop with the plugin enabled in its own profile."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import ARTIFACTS, ENGINE_PYTHON, REPO, shared_raster


def needs_desktop() -> None:
    if shutil.which("qgis") is None or shutil.which("xvfb-run") is None:
        pytest.skip("the QGIS desktop or xvfb-run is not installed (make qgis-env installs them)")
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")


def test_desktop_starts_with_the_plugin_and_searches(tmp_path: Path) -> None:
    needs_desktop()
    raster = shared_raster("colorado_rgb_015m.tif")
    report = tmp_path / "report.json"
    screenshot = ARTIFACTS / "qgis_desktop.png"
    run_desktop(tmp_path, raster, report, CLIP_SEARCH_SCREENSHOT=str(screenshot))
    state = json.loads(report.read_text())
    assert "clip_search_plugin" in state["active_plugins"]
    assert state["dock_visible"]
    assert "colorado_rgb_015m" in state["raster_layers"]
    assert state["status"].startswith("Index ready"), state["status"]
    assert state["results_rows"] > 0
    assert any(name.startswith("CLIP: a parking lot") for name in state["raster_layers"])
    assert screenshot.stat().st_size > 10_000


def run_desktop(tmp_path: Path, raster: Path, report: Path, **extra: str) -> str:
    """Run `make run`'s script with the demo search; returns QGIS's stderr once it has quit by itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM")}
    env.update(CLIP_SEARCH_PROFILES=str(tmp_path / "profiles"), CLIP_SEARCH_CACHE=str(tmp_path / "indexes"),
               CLIP_SEARCH_MODEL="tiny-random", CLIP_SEARCH_DEMO_QUERY="a parking lot", CLIP_SEARCH_REPORT=str(report),
               CLIP_SEARCH_SCREENSHOT_AFTER="200", CLIP_SEARCH_QUIT="1", **extra)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(REPO / "scripts" / "run_qgis.sh"), str(ENGINE_PYTHON), str(raster)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # QGIS, Xvfb and the engine with it
        stdout, stderr = proc.communicate()
    assert report.exists(), f"QGIS wrote no report (exit {proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert proc.returncode == 0, f"QGIS did not quit cleanly (exit {proc.returncode}):\n{stderr[-3000:]}"
    return stderr


def test_a_first_hour_in_the_desktop_tells_one_story(tmp_path: Path) -> None:
    """The real QGIS desktop: a build stopped part-way and resumed, then a search with a heatmap. The message bar
    shows one account of each step (not QGIS's "Task failed" for a build the user stopped, no old message coming
    back), QGIS reports no Python error, and its output holds no flood of Qt warnings."""
    needs_desktop()
    raster = shared_raster("drone_rgba_alpha.tif")
    report = tmp_path / "report.json"
    stderr = run_desktop(tmp_path, raster, report, CLIP_SEARCH_DEMO_STOP="1", CLIP_SEARCH_DEMO_HEATMAP="1",
                         CLIP_SEARCH_SCREENSHOT=str(ARTIFACTS / "qgis_desktop_heatmap.png"))
    state = json.loads(report.read_text())
    assert state["python_errors"] == []
    seen = state["messages_seen"]  # message -> [when shown, when gone] in seconds (gone: -1, still shown)
    ours = [m for m in seen if m.startswith("CLIP Search: ")]
    assert [m for m in ours if "Indexing was stopped" in m] and [m for m in ours if "Indexed drone_rgba_alpha" in m]
    assert len(ours) == 2, ours  # one account of the stop, one of the resumed build; nothing else to tell
    assert re.search(r"([\d,]+) tiles \(([\d,]+) saved by the build that was stopped", ours[-1]), ours[-1]
    # QGIS tells of a long task's end itself ("Task failed" for a cancel): taken off the bar at once
    notices = {m: t for m, t in seen.items() if m.endswith(": CLIP Search: indexing drone_rgba_alpha")}
    assert all(0 <= gone - shown < 1.0 for shown, gone in notices.values()), notices
    assert not [m for m in state["messages_now"] if "stopped" in m or "indexing" in m], state["messages_now"]
    assert state["results_rows"] > 0 and "heatmap: a parking lot" in state["raster_layers"]
    warnings = [line for line in stderr.splitlines() if "QImage" in line or "QPainter" in line]
    assert len(warnings) < 10, warnings[:10]
