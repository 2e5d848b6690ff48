"""Fault injection: the engine killed at random points while indexing; the build resumes from its last
checkpoint and ends with exactly the index an uninterrupted build makes, and a partial build is never
taken for a whole one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from clip_search_plugin.engine.building.build import open_index

from ..conftest import REPO, raster_part, shared_raster

KILLS = 6
PART = Window(0, 0, 320, 320)  # ~1,200 tiles of 20 px at two scales: kills land mid-build, builds stay short


@pytest.fixture(scope="module")
def drone_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The top-left corner of the shared drone raster (alpha band and transparent border kept), as a GeoTIFF."""
    return raster_part("drone_rgba_alpha.tif", PART, tmp_path_factory.mktemp("drone"))


def index_command(raster: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "clip_search_plugin.engine", "index", str(raster), "--model", "tiny-random",
            "--tile-size", "20", "--overlap", "0.5", "--scales", "1", "2", "--batch-size", "16", "--backend", "torch",
            "--output", str(output)]


def saved_tiles(partial: Path) -> int:
    """Tiles in the checkpoint (0 when there is none)."""
    try:
        progress = json.loads((partial / "progress.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(len(np.load(partial / f"{s}.ids.npy")) for s in progress["segments"])


def test_killed_at_random_points_the_build_resumes_and_ends_identical(drone_part: Path, tmp_path: Path) -> None:
    raster = drone_part
    env = dict(os.environ, PYTHONPATH=str(REPO), CLIP_SEARCH_CHECKPOINT_SECONDS="0")  # a checkpoint per batch
    whole = tmp_path / "whole"  # the uninterrupted build, made meanwhile in a process of its own
    reference = subprocess.Popen(index_command(raster, whole), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)

    target, partial = tmp_path / "ix", tmp_path / ".ix.partial"
    rng = random.Random(7)
    progress = [0]
    for _ in range(KILLS):
        process = subprocess.Popen(index_command(raster, target), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        goal = progress[-1] + rng.randint(1, 6) * 16  # kill a few batches further on, at a random moment
        deadline = time.monotonic() + 120
        while process.poll() is None and saved_tiles(partial) < goal and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # anywhere: embedding, saving a segment, renaming
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (target / "manifest.json").exists(), "a killed build left something that looks like an index"
        progress.append(saved_tiles(partial))
        assert progress[-1] >= progress[-2]  # a kill never loses saved progress
    assert progress[-1] > 0, progress  # the kills landed mid-build
    _, stderr = reference.communicate(timeout=600)
    assert reference.returncode == 0, stderr

    done = subprocess.run(index_command(raster, target), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a, b = open_index(target), open_index(whole)
    assert np.array_equal(a.tiles, b.tiles)
    assert np.array_equal(a.vectors.reconstruct_n(0, a.count), b.vectors.reconstruct_n(0, b.count))
    assert not partial.exists()


def test_locate_tells_of_a_stopped_build_until_it_is_finished(tiny: object, tmp_path: Path) -> None:
    from clip_search_plugin.engine.building.build import build_index
    from clip_search_plugin.engine.building.checkpoint import locate_build
    from clip_search_plugin.engine.errors import Cancelled
    from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings
    from clip_search_plugin.engine.tiling.raster_io import describe_raster

    raster = shared_raster("colorado_rgb_015m.tif")
    settings = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"), batch_size=8)
    batches: list[int] = []
    with pytest.raises(Cancelled):  # into the user cache folder, as the dock builds
        build_index(raster, settings, progress=lambda d, t: batches.append(d), is_cancelled=lambda: len(batches) >= 3,
                    embedder=tiny)  # type: ignore[arg-type]
    info = describe_raster(str(raster))
    identity = tiny.identity  # type: ignore[attr-defined]
    status = locate_build(info, identity, settings.tiling)
    assert status["status"] == "none" and status["partial_tiles"] == 24
    build_index(raster, settings, embedder=tiny)  # type: ignore[arg-type]
    status = locate_build(info, identity, settings.tiling)
    assert status["status"] == "ready" and "partial_tiles" not in status


def test_a_full_disk_is_a_clear_error_and_the_earlier_index_stays(drone_part: Path, tmp_path: Path) -> None:
    """The disk fills up while the index is written (simulated with a limit on file size, which fails
    writes the same way: EFBIG as ENOSPC would): one clear line, exit code 2, the earlier index whole."""
    import resource

    raster = drone_part
    env = dict(os.environ, PYTHONPATH=str(REPO))
    target = tmp_path / "ix"
    first = [sys.executable, "-m", "clip_search_plugin.engine", "index", str(raster), "--model", "tiny-random",
             "--tile-size", "200", "--output", str(target)]
    assert subprocess.run(first, env=env, capture_output=True, timeout=600).returncode == 0
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # below the ~300 kB of vectors

    done = subprocess.run(index_command(raster, target), env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=small_disk)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: Not enough disk space to write in") and "choose another index folder" in line
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no half-written index left about


def age(folder: Path, days: float) -> None:
    """Make ``folder`` and its files look last changed ``days`` ago."""
    when = time.time() - days * 86400
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (when, when))


def test_progress_abandoned_long_ago_is_removed_by_the_next_build(tiny: object) -> None:
    from clip_search_plugin.engine.building.build import build_index
    from clip_search_plugin.engine.building.checkpoint import ABANDONED_AFTER_DAYS
    from clip_search_plugin.engine.errors import Cancelled
    from clip_search_plugin.engine.index.store import default_cache_root
    from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

    raster = shared_raster("colorado_rgb_015m.tif")
    stopped = IndexSettings(tiling=TilingSettings(tile_size=16), model=ModelSpec("tiny-random"), batch_size=8)
    batches: list[int] = []
    with pytest.raises(Cancelled):  # a build stopped, then its settings changed: nothing will resume it
        build_index(raster, stopped, progress=lambda d, t: batches.append(d), is_cancelled=lambda: len(batches) >= 2,
                    embedder=tiny)  # type: ignore[arg-type]
    root = default_cache_root()
    [abandoned] = root.glob(".*.partial")
    age(abandoned, ABANDONED_AFTER_DAYS + 1)
    recent = root / ".another-build.partial"  # stopped yesterday: kept for its resume
    recent.mkdir()
    (recent / "progress.json").write_text("{}")
    age(recent, 1)
    foreign = root / ".someone-elses.partial"  # an old folder of our name holding a file not ours: kept
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    age(foreign, 100)
    crashed = root / ".x.tmp-0123abcd"  # an index write a crash interrupted two days ago
    crashed.mkdir()
    for name in ("tiles.npy", "neighbours.npy", "vectors16.npy"):  # look-alikes, a compact index's vectors
        (crashed / name).write_bytes(b"")
    age(crashed, 2)
    parts = root / ".z.shards-0123456789abcdef"  # a cluster build's parts, stopped long ago
    parts.mkdir()
    for name in ("shard-00000000-00000064.npy", "shard-00000000-00000064.npz",
                 "shard-00000064-00000128.npy.tmp-7-0a1b2c3d"):
        (parts / name).write_bytes(b"")
    age(parts, ABANDONED_AFTER_DAYS + 1)
    resumable = root / ".w.shards-fedcba9876543210"  # ... and stopped last week: kept for its resume
    resumable.mkdir()
    (resumable / "shard-00000000-00000064.npz").write_bytes(b"")
    age(resumable, 7)
    writing = root / ".y.old-89abcdef"  # moved aside a minute ago: perhaps still in use
    writing.mkdir()
    (writing / "manifest.json").write_text("{}")

    other = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"), batch_size=8)
    build_index(raster, other, embedder=tiny)  # type: ignore[arg-type]
    assert not abandoned.exists() and not crashed.exists() and not parts.exists()
    assert recent.is_dir() and writing.is_dir() and (foreign / "notes.txt").read_text() == "keep me"
    assert resumable.is_dir()
