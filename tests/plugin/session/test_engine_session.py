"""The one engine session and the one rule for the engine's environment, with real engine processes: QGIS's own
Python settings never reach an engine (nor the set-up's self-test), a killed engine is started again and the
request it lost sent once more, and an index task builds in a session of its own that it ends."""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clip_search_plugin.engine.requests import IndexRequest, LocateRequest
from clip_search_plugin.engine.settings import ModelSpec, TilingSettings
from clip_search_plugin.session.environment import engine_command, engine_env, python_env
from clip_search_plugin.session.session import EngineSession
from clip_search_plugin.session.settings import PluginSettings

from ..conftest import ENGINE_PYTHON, REPO, alive, shared_raster, wait_until

TINY = ModelSpec("tiny-random")


@pytest.fixture
def settings(tmp_path: Path) -> PluginSettings:
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    return PluginSettings(engine_python=str(ENGINE_PYTHON), model="tiny-random", device="cpu", tile_size=96.0,
                          cache_folder=str(tmp_path / "indexes"))


@pytest.fixture
def qgis_python_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QGIS's environment as QGIS sets it for its own Python: a PYTHONHOME and a PYTHONPATH, here ones that break
    any other Python they reach (a home without a standard library; a torch and a numpy that refuse to import)."""
    shadow = tmp_path / "qgis-python"
    shadow.mkdir()
    for module in ("torch", "numpy"):
        (shadow / f"{module}.py").write_text("raise ImportError('QGIS's Python path reached the engine')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "qgis-home"))
    return shadow


def process_environment(pid: int) -> dict[str, str]:
    """The environment a running process was started with, as the system keeps it."""
    path = Path(f"/proc/{pid}/environ")
    if not path.exists():
        pytest.skip("reading another process's environment needs /proc (Linux)")
    pairs = (item.split(b"=", 1) for item in path.read_bytes().split(b"\0") if b"=" in item)
    return {key.decode(): value.decode() for key, value in pairs}


def locate(tiling: float = 96.0) -> LocateRequest:
    return LocateRequest(str(shared_raster("drone_rgba_alpha.tif")), TINY, TilingSettings(tile_size=tiling))


@pytest.fixture
def session(settings: PluginSettings) -> Iterator[EngineSession]:
    started = EngineSession(settings)
    yield started
    started.stop()


def test_the_rule_for_the_engines_environment() -> None:
    qgis = {"PATH": "/usr/bin", "PYTHONPATH": "/qgis/python", "PYTHONHOME": "/qgis", "VIRTUAL_ENV": "/qgis/venv",
            "PYTHONSTARTUP": "/qgis/startup.py", "CLIP_SEARCH_WEIGHTS": "/weights"}
    assert engine_env("/indexes", qgis) == {
        "PATH": "/usr/bin", "CLIP_SEARCH_WEIGHTS": "/weights", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
        "CLIP_SEARCH_CACHE": "/indexes", "PYTHONNOUSERSITE": "1", "PYTHONIOENCODING": "utf-8", "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    assert "CLIP_SEARCH_CACHE" not in engine_env("", qgis)
    assert python_env(base=qgis) == {k: v for k, v in engine_env("", qgis).items()
                                     if k not in ("PYTHONPATH", "PYTHONUNBUFFERED")}
    assert engine_command("/engine/bin/python", "cuda") == ["/engine/bin/python", "-m", "clip_search_plugin.engine",
                                                            "serve", "--device", "cuda"]


def test_qgis_python_settings_never_reach_an_engine(session: EngineSession, settings: PluginSettings,
                                                    qgis_python_settings: Path) -> None:
    session.client()
    assert session.pid is not None
    started = process_environment(session.pid)
    assert started["PYTHONPATH"] == str(REPO)  # the plugin's parent folder, alone
    assert "PYTHONHOME" not in started and started["PYTHONUNBUFFERED"] == "1"
    assert started["CLIP_SEARCH_CACHE"] == settings.cache_folder
    found = session.run(locate())  # the engine works, and keeps its indexes in the settings' folder
    assert found["event"] == "result", found
    assert found["result"]["status"] == "none" and Path(found["result"]["path"]).parent == Path(
        settings.cache_folder)


def test_the_set_up_checks_an_engine_in_the_engines_environment(qgis_python_settings: Path) -> None:
    from clip_search_plugin.setup import plan as setup

    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    report = setup.run_selftest(str(ENGINE_PYTHON))
    assert report["ok"], report
    assert report["executable"] == str(ENGINE_PYTHON)


def lose_a_request(session: EngineSession, answers: queue.Queue[dict[str, Any]], retry: bool) -> int:
    """Send a request to an engine that cannot answer it (stopped), then kill that engine by its process id.
    The killed process's id."""
    pid = session.client().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    session.send(locate(), answers.put, retry=retry)
    deadline = time.monotonic() + 30
    while session.client().waiting == 0:  # the request is written to the engine and waits for its answer
        assert time.monotonic() < deadline, "the request was never sent"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_killed_engine_is_started_again_and_the_lost_request_sent_once_more(settings: PluginSettings) -> None:
    restarts: list[dict[str, Any]] = []
    session = EngineSession(settings, on_restart=restarts.append)
    answers: queue.Queue[dict[str, Any]] = queue.Queue()
    try:
        killed = lose_a_request(session, answers, retry=True)
        answer = answers.get(timeout=120)
        assert answer["event"] == "result" and answer["result"]["status"] == "none", answer
        assert len(restarts) == 1 and restarts[0]["error"]["crashed"], restarts
        assert session.pid is not None and session.pid != killed and not alive(killed)
        # sent once more, not again and again: a request lost a second time is answered with the error
        again = lose_a_request(session, answers, retry=False)
        answer = answers.get(timeout=60)
        assert answer["event"] == "error" and answer["error"]["crashed"], answer
        assert "ended unexpectedly" in answer["error"]["message"] and len(restarts) == 1
        assert not alive(again)
        # and the next request starts an engine again
        assert session.run(locate())["event"] == "result" and session.pid not in (None, killed, again)
    finally:
        pid = session.pid
        session.stop()
    assert not alive(pid)


def index_task(settings: PluginSettings, request: IndexRequest) -> Any:
    """An index task run in QGIS's task manager to its end."""
    from qgis.core import QgsApplication

    from clip_search_plugin.session.tasks import IndexTask

    done: list[Any] = []
    task = IndexTask("CLIP Search: indexing a test raster", settings, request, done.append)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: done, 180, "the index task to end")
    assert done == [task]
    return task


def test_an_index_task_builds_in_an_engine_of_its_own(qgis_app: Any, settings: PluginSettings,
                                                      tmp_path: Path) -> None:
    raster = str(shared_raster("colorado_rgb_015m.tif"))
    request = IndexRequest(raster, TINY, TilingSettings(tile_size=96.0), device="cpu", output=str(tmp_path / "ix"))
    task = index_task(settings, request)
    assert task.error is None and task.result is not None, task.error
    assert task.result["path"] == str(tmp_path / "ix") and task.result["tiles"] > 0
    assert (tmp_path / "ix" / "manifest.json").is_file()
    assert task.engine_pid is not None and not alive(task.engine_pid)  # its engine ended with it

    missing = PluginSettings(engine_python=str(tmp_path / "no-engine" / "bin" / "python"))
    failed = index_task(missing, request)
    assert failed.result is None and failed.error_kind == "engine" and "does not exist" in (failed.error or "")
