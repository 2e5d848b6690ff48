"""A build on a Dask cluster (a real LocalCluster of two worker processes, started here) makes the index a
single-process build makes; a worker killed mid-build, a cancel and an unreachable scheduler are handled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rasterio.windows import Window

from clip_search_plugin.engine.building.build import build_index, open_index
from clip_search_plugin.engine.building.distributed import build_on_cluster
from clip_search_plugin.engine.building.shards import read_shard, shard_folder
from clip_search_plugin.engine.errors import Cancelled, InputError
from clip_search_plugin.engine.query.searching import search
from clip_search_plugin.engine.requests import IndexRequest
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import REPO, raster_part

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")

PART = Window(0, 0, 320, 320)  # ~600 tiles of 20 px at two scales (resampled to the model's 64 px)
SETTINGS = IndexSettings(tiling=TilingSettings(tile_size=20, overlap=0.5, scales=(1.0, 2.0)),
                         model=ModelSpec("tiny-random"), device="cpu", batch_size=16, backend="torch")
TASK_TILES = 24  # small tasks: many of them, so a kill or a cancel lands mid-build


@pytest.fixture(scope="module")
def drone_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The top-left corner of the shared drone raster (alpha band and transparent border kept), as a GeoTIFF."""
    return raster_part("drone_rgba_alpha.tif", PART, tmp_path_factory.mktemp("drone"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A LocalCluster of two worker processes of one thread each on 127.0.0.1, and a client of it."""
    import logging

    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(local)
    try:
        yield client
    finally:
        client.close()
        local.close()


@pytest.fixture(scope="module")
def single(drone_part: Path, tmp_path_factory: pytest.TempPathFactory, tiny: Any) -> Path:
    """The single-process build of the raster: the reference."""
    target = tmp_path_factory.mktemp("single") / "index"
    build_index(drone_part, SETTINGS, target, embedder=tiny)
    return target


def assert_same_index(built: Path, reference: Path, tiny: Any) -> None:
    """The same tiles in the same order, vectors within float tolerance, the same search results."""
    a, b = open_index(built), open_index(reference)
    assert a.count == b.count > 100
    assert np.array_equal(a.tiles, b.tiles)
    np.testing.assert_allclose(a.vectors.reconstruct_n(0, a.count), b.vectors.reconstruct_n(0, b.count), atol=1e-5)
    for query in ("a road", "trees"):
        found = [search(index, tiny, query, top_k=10, templates=None) for index in (a, b)]
        assert [h.tile_id for h in found[0].hits] == [h.tile_id for h in found[1].hits]
        np.testing.assert_allclose([r.score for r in found[0].regions], [r.score for r in found[1].regions],
                                   atol=1e-5)


def test_a_two_worker_build_equals_the_single_process_build(drone_part: Path, single: Path, cluster: Any,
                                                            tiny: Any, tmp_path: Path) -> None:
    reports: list[tuple[int, int]] = []
    target = tmp_path / "index"
    result = build_on_cluster(drone_part, SETTINGS, target, lambda d, t: reports.append((d, t)), embedder=tiny,
                              cluster=cluster.scheduler.address, task_tiles=TASK_TILES)
    assert_same_index(target, single, tiny)
    assert result.tile_count == open_index(single).count and result.resumed == 0
    assert len(reports) > 10 and reports[-1][0] == reports[-1][1] == result.grid_count
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)  # progress only goes forward
    assert open_index(target).manifest["built_on"] == {"cluster": cluster.scheduler.address, "workers": 2}
    assert not list(tmp_path.glob(".index.shards-*"))  # the shards are removed once merged


def test_a_worker_killed_mid_build_is_replaced_and_the_index_is_the_same(drone_part: Path, single: Path,
                                                                         cluster: Any, tiny: Any,
                                                                         tmp_path: Path) -> None:
    before = cluster.run(os.getpid)
    killed: list[int] = []

    def kill_once(done: int, total: int) -> None:
        if not killed and 0 < done < total // 2:  # a task finished, most are still to come
            victim = next(iter(before.values()))
            os.kill(victim, signal.SIGKILL)
            killed.extend([victim, done])

    target = tmp_path / "index"
    build_on_cluster(drone_part, SETTINGS, target, kill_once, embedder=tiny, cluster=cluster.scheduler.address,
                     task_tiles=TASK_TILES)
    assert killed, "the kill did not land mid-build"
    assert_same_index(target, single, tiny)
    cluster.wait_for_workers(2, timeout=60)  # the nanny started a new worker in place of the one killed
    assert killed[0] not in cluster.run(os.getpid).values()


def test_a_cancelled_build_leaves_its_shards_and_the_next_build_reuses_them(drone_part: Path, single: Path,
                                                                            cluster: Any, tiny: Any,
                                                                            tmp_path: Path) -> None:
    target = tmp_path / "index"
    reports: list[int] = []
    with pytest.raises(Cancelled):
        build_on_cluster(drone_part, SETTINGS, target, lambda d, t: reports.append(d),
                         lambda: len(reports) >= 3, embedder=tiny, cluster=cluster.scheduler.address,
                         task_tiles=TASK_TILES)
    assert not target.exists()
    (folder,) = tmp_path.glob(".index.shards-*")
    left = sorted(folder.glob("shard-*.npz"))
    assert 2 <= len(left) < 30 and not list(folder.glob("*.tmp-*"))
    # Mark one shard left behind (its vectors negated, still of unit length): only a reused shard ends up so.
    marked = read_shard(left[0], tiny.dim)
    assert marked is not None and len(marked.positions)
    np.savez(left[0], positions=marked.positions, sides=marked.sides, vectors=-marked.vectors, table=marked.table)

    first: list[int] = []
    result = build_on_cluster(drone_part, SETTINGS, target, lambda d, t: first.append(d), embedder=tiny,
                              cluster="local:1", task_tiles=TASK_TILES)  # another cluster: the same parts
    assert result.resumed >= len(marked.positions) and first[0] >= TASK_TILES * len(left)
    built, reference = open_index(target), open_index(single)
    vectors = {tuple(row): v for row, v in zip(built.tiles.tolist(), built.vectors.reconstruct_n(0, built.count),
                                              strict=True)}
    expected = {tuple(row): v for row, v in zip(reference.tiles.tolist(),
                                                reference.vectors.reconstruct_n(0, reference.count), strict=True)}
    for row in marked.table.tolist():
        np.testing.assert_allclose(vectors[tuple(row)], -expected[tuple(row)], atol=1e-5)
    assert not folder.exists() and built.manifest["built_on"]["cluster"] == "local"


def test_shards_are_named_by_the_plan(drone_part: Path, tiny: Any, tmp_path: Path) -> None:
    other = IndexSettings(tiling=SETTINGS.tiling, model=SETTINGS.model, device="cpu", batch_size=8, backend="torch")
    from clip_search_plugin.engine.building.build import _plan, key_of

    keys = {key_of(_plan(drone_part, s, tmp_path / "index", tiny)) for s in (SETTINGS, other)}
    assert len(keys) == 2  # another batch size: other vectors, so other shards
    assert {shard_folder(tmp_path / "index", k).parent for k in keys} == {tmp_path.resolve()}


def index_command(raster: Path, output: Path, cluster: str) -> list[str]:
    return [sys.executable, "-m", "clip_search_plugin.engine", "index", str(raster), "--model", "tiny-random",
            "--tile-size", "20", "--backend", "torch", "--output", str(output), "--cluster", cluster]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_scheduler_is_one_clear_line_and_exit_code_2(drone_part: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    done = subprocess.run(index_command(drone_part, tmp_path / "index", address), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 30
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"error: Could not reach the Dask scheduler at {address}")
    assert "dask scheduler" in lines[0] and "--cluster local" in lines[0]
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("value", ["local:0", "local:-2", "loc", "tcp://host", "tcp://host:99999", "http://h:1", 4])
def test_a_bad_cluster_is_refused_saying_what_to_give(value: object) -> None:
    with pytest.raises(InputError, match=r"Unknown cluster .*local:N .*tcp://HOST:PORT"):
        IndexRequest(raster="x.tif", cluster=value)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="Unknown cluster"):
        IndexRequest.from_params({"raster": "x.tif", "cluster": value})


@pytest.mark.parametrize("value", ["local", "local:3", "tcp://10.0.0.5:8786", "tcp://scheduler.lan:8786"])
def test_good_clusters_are_taken_and_round_trip(value: str) -> None:
    request = IndexRequest(raster="x.tif", cluster=value)
    assert IndexRequest.from_params(request.to_params()).cluster == value
    assert IndexRequest(raster="x.tif").cluster is None


def test_the_command_line_refuses_a_bad_cluster_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(index_command(tmp_path / "x.tif", tmp_path / "index", "local:0"), capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: Unknown cluster 'local:0'") and "\n" not in done.stderr.strip()
