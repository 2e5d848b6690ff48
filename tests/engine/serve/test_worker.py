"""The engine process over JSON lines: real subprocess, real model, progress, results, errors, cancel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO, shared_raster


class Engine:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clip_search_plugin.engine", "serve", "--device", "cpu"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.seen: list[dict[str, Any]] = []
        self.ready = self.read()

    def send(self, rid: Any, method: str, **params: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": rid, "method": method, "params": params}) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the engine closed its output"
        message = json.loads(line)  # every stdout line is one JSON message
        self.seen.append(message)
        return message

    def until(self, rid: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Events for ``rid`` up to its result or error."""
        seen = []
        while True:
            message = self.read()
            if message.get("id") == rid:
                seen.append(message)
                if message["event"] in ("result", "error"):
                    return seen, message

    def close(self) -> int:
        self.send("bye", "shutdown")
        return self.proc.wait(timeout=60)


@pytest.fixture
def engine() -> Any:
    e = Engine()
    yield e
    if e.proc.poll() is None:
        e.proc.kill()
        e.proc.wait()


TINY = {"name": "tiny-random"}


def test_index_then_searches_with_progress_in_one_process(engine: Engine, tmp_path: Path) -> None:
    assert engine.ready["event"] == "ready" and engine.ready["protocol"] == 1
    raster = shared_raster("drone_rgba_alpha.tif")
    engine.send(1, "index", raster=str(raster), output=str(tmp_path / "ix"), model=TINY, batch_size=8,
                tiling={"tile_size": 96})
    events, done = engine.until(1)
    assert done["event"] == "result", done
    logs = [m for m in engine.seen if m["event"] == "log"]
    assert any("indexing" in m["message"] and m["level"] == "info" for m in logs), logs
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 3 and progress[-1]["done"] == progress[-1]["total"]
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)

    for rid, query in enumerate(["a pool", "a road", "a field"], start=2):
        engine.send(rid, "search", index=done["result"]["path"], query=query, top_k=5)
        _, result = engine.until(rid)
        assert result["event"] == "result", result
        assert result["result"]["random_weights"] is True and result["result"]["regions"]
    engine.send(9, "info", index=done["result"]["path"])
    _, info = engine.until(9)
    assert info["result"]["pid"] == engine.ready["pid"]
    assert engine.close() == 0


def test_errors_are_events_and_the_engine_keeps_serving(engine: Engine, tmp_path: Path) -> None:
    engine.send(1, "search", index=str(tmp_path / "none"), query="pool")
    _, error = engine.until(1)
    assert error["event"] == "error" and error["error"]["kind"] == "index"
    assert "build the index again" in error["error"]["message"]
    assert engine.proc.stdin is not None
    engine.proc.stdin.write("this is not json\n")
    engine.proc.stdin.flush()
    bad = engine.read()
    assert bad["event"] == "error" and bad["error"]["kind"] == "protocol"
    engine.send(2, "teleport")
    _, unknown = engine.until(2)
    assert unknown["event"] == "error" and "Unknown request" in unknown["error"]["message"]
    engine.send(3, "ping")
    _, pong = engine.until(3)
    assert pong["result"]["pong"] is True
    assert engine.close() == 0


def test_cancel_mid_index_leaves_no_index_and_keeps_the_previous_one(engine: Engine, tmp_path: Path) -> None:
    raster = shared_raster("drone_rgba_alpha.tif")
    target = tmp_path / "ix"
    engine.send(1, "index", raster=str(raster), output=str(target), model=TINY, tiling={"tile_size": 200})
    _, first = engine.until(1)
    assert first["event"] == "result"
    manifest_before = (target / "manifest.json").read_text()

    engine.send(2, "index", raster=str(raster), output=str(target), model=TINY, batch_size=4,
                tiling={"tile_size": 24, "overlap": 0.5})
    while engine.read()["event"] != "progress":  # indexing is under way
        pass
    engine.send("c", "cancel", target=2)
    _, outcome = engine.until(2)
    assert outcome["event"] == "error" and outcome["error"]["kind"] == "cancelled"
    assert (target / "manifest.json").read_text() == manifest_before
    # the previous index is whole and untouched; the cancelled build's progress waits beside it, never an index
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.partial", "ix"]
    assert not (tmp_path / ".ix.partial" / "manifest.json").exists()
    assert engine.close() == 0


def test_shutdown_while_indexing_stops_promptly(engine: Engine, tmp_path: Path) -> None:
    raster = shared_raster("drone_rgba_alpha.tif")
    engine.send(1, "index", raster=str(raster), output=str(tmp_path / "ix"), model=TINY, batch_size=4,
                tiling={"tile_size": 24})
    while engine.read()["event"] != "progress":
        pass
    started = time.monotonic()
    assert engine.close() == 0
    assert time.monotonic() - started < 30
    assert not (tmp_path / "ix").exists()


def test_locate_reports_none_ready_and_stale(engine: Engine, tmp_path: Path) -> None:
    import shutil

    raster = tmp_path / "r.tif"
    shutil.copy(shared_raster("colorado_rgb_015m.tif"), raster)
    params = {"raster": str(raster), "model": TINY, "tiling": {"tile_size": 112}}
    engine.send(1, "locate", **params)
    assert engine.until(1)[1]["result"]["status"] == "none"
    engine.send(2, "index", **params)
    built = engine.until(2)[1]["result"]["path"]
    engine.send(3, "locate", **params)
    ready = engine.until(3)[1]["result"]
    assert ready["status"] == "ready" and ready["path"] == built and ready["manifest"]["random_weights"] is True
    with open(raster, "r+b") as f:  # the raster changes after indexing
        f.seek(-100, 2)
        f.write(b"\x07" * 100)
    engine.send(4, "locate", **params)
    stale = engine.until(4)[1]["result"]
    assert stale["status"] == "stale" and stale["path"] == built and "changed" in stale["reason"]
    assert stale["changed"] is True
    assert engine.close() == 0
