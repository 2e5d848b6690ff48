"""A build on a Dask cluster (a real LocalCluster of two worker processes, started here) makes the index a
single-process build makes, a compact one streamed from the shards' files; a worker killed mid-build, a cancel,
lost shard files and an unreachable scheduler are handled."""

from __future__ import annotations

import contextlib
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
from clip_search_plugin.engine.building.distributed import ClusterError, build_on_cluster
from clip_search_plugin.engine.building.sharded import ShardedVectors, ShardLost, merge_shards
from clip_search_plugin.engine.building.shards import (
    Shard,
    read_shard,
    shard_folder,
    single_process_order,
    vectors_path,
    write_shard,
)
from clip_search_plugin.engine.errors import Cancelled, InputError
from clip_search_plugin.engine.index import compact
from clip_search_plugin.engine.index.compact import FLOAT16_FILE, CompactIndex
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
    marked.vectors = -np.asarray(marked.vectors)
    write_shard(folder, left[0].name, marked)

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


def every_shard(drone_part: Path, cluster: Any, tiny: Any, target: Path) -> Path:
    """The shard folder of a cluster build of ``target`` cancelled once every part was embedded (it keeps them)."""
    reports: list[tuple[int, int]] = []
    with pytest.raises(Cancelled):
        build_on_cluster(drone_part, SETTINGS, target, lambda d, t: reports.append((d, t)),
                         lambda: bool(reports) and reports[-1][0] == reports[-1][1], embedder=tiny,
                         cluster=cluster.scheduler.address, task_tiles=TASK_TILES)
    (folder,) = target.parent.glob(f".{target.name}.shards-*")
    return folder


def kept_one_by_one(positions: np.ndarray, sides: np.ndarray, batch_size: int) -> list[int]:
    """The order a single-process build keeps tiles in, tile by tile as :class:`TileEmbedding` takes them."""
    pending: dict[int, list[int]] = {}
    order: list[int] = []
    for i in np.argsort(positions, kind="stable"):
        batch = pending.setdefault(int(sides[i]), [])
        batch.append(int(i))
        if len(batch) == batch_size:
            order.extend(pending.pop(int(sides[i])))
    return order + [i for side in sorted(pending) for i in pending[side]]


def test_the_merge_reads_the_shards_vectors_as_the_in_memory_merge_does(drone_part: Path, single: Path,
                                                                         cluster: Any, tiny: Any,
                                                                         tmp_path: Path) -> None:
    folder = every_shard(drone_part, cluster, tiny, tmp_path / "index")
    names = sorted(path.name for path in folder.glob("shard-*.npz"))
    merged = merge_shards(folder, names, tiny.dim, SETTINGS.batch_size)
    assert merged is not None
    view, table = merged
    reference = open_index(single)
    assert np.array_equal(table, reference.tiles)  # the tiles in the order of the single-process build
    shards = [read_shard(folder / name, tiny.dim) for name in names]
    whole = [s for s in shards if s is not None]
    order = kept_one_by_one(np.concatenate([s.positions for s in whole]), np.concatenate([s.sides for s in whole]),
                            SETTINGS.batch_size)
    expected = np.concatenate([np.asarray(s.vectors) for s in whole])[order]  # the merge all in memory
    n = view.ntotal
    assert n == len(expected) == reference.count > 100 and view.d == tiny.dim and isinstance(view.rows, np.ndarray)
    read = np.concatenate([view.reconstruct_n(start, 37) for start in range(0, n, 37)])  # runs across shards
    assert read.dtype == np.float32 and np.array_equal(read, expected)
    ids = np.concatenate([np.random.default_rng(0).integers(0, n, size=300), [n - 1, 0, 0, 5]])
    assert np.array_equal(view.reconstruct_batch(ids), expected[ids])
    assert view.reconstruct_n(n - 5, 100).shape == (5, tiny.dim)
    np.testing.assert_allclose(view.flat().reconstruct_n(0, n), reference.vectors.reconstruct_n(0, n), atol=1e-5)
    # a vectors file lost after the shards were checked: read no further, said so
    lost = next(vectors_path(folder / name) for name, s in zip(names, whole, strict=True) if len(s.positions))
    del shards, whole
    lost.unlink()
    with pytest.raises(ShardLost, match=lost.name):
        view.reconstruct_n(0, n)
    assert merge_shards(folder, names, tiny.dim, SETTINGS.batch_size) is None


def test_a_compact_cluster_build_streams_the_shards_into_the_single_process_index(
        drone_part: Path, cluster: Any, tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact, "COMPACT_FROM", 100)  # ~600 tiles: a compact index, as from 2 million

    def never(self: ShardedVectors) -> Any:
        raise AssertionError("the vectors of a compact build were all copied into memory")

    single = build_index(drone_part, SETTINGS, tmp_path / "single", embedder=tiny, approximate_from=100)
    monkeypatch.setattr(ShardedVectors, "flat", never)
    result = build_on_cluster(drone_part, SETTINGS, tmp_path / "index", embedder=tiny, approximate_from=100,
                              cluster=cluster.scheduler.address, task_tiles=TASK_TILES)
    built, reference = open_index(result.path), open_index(single.path)
    assert built.manifest["search"]["kind"] == reference.manifest["search"]["kind"] == "compact"
    assert built.manifest["search"] == reference.manifest["search"]
    assert isinstance(built.vectors, CompactIndex) and np.array_equal(built.tiles, reference.tiles)
    assert np.array_equal(np.load(built.path / FLOAT16_FILE), np.load(reference.path / FLOAT16_FILE))
    for query in ("a road", "trees", "a roof"):
        found = [search(index, tiny, query, top_k=10, templates=None) for index in (built, reference)]
        assert [h.tile_id for h in found[0].hits] == [h.tile_id for h in found[1].hits]
        np.testing.assert_allclose([h.score for h in found[0].hits], [h.score for h in found[1].hits], atol=1e-6)
    assert not list(tmp_path.glob(".index.shards-*"))


def rows_of(shard: Path) -> int:
    """The tiles a shard keeps, read from its .npz file alone."""
    with np.load(shard) as found:
        return len(found["positions"])


def test_a_vectors_file_lost_before_the_merge_is_a_cluster_error_and_the_next_build_makes_it_again(
        drone_part: Path, single: Path, cluster: Any, tiny: Any, tmp_path: Path) -> None:
    target = tmp_path / "index"
    damaged: list[Path] = []

    def damage_at_the_end(done: int, total: int) -> None:
        if done == total and not damaged:  # every part embedded, the merge next
            (folder,) = tmp_path.glob(".index.shards-*")
            damaged.extend([p for p in sorted(folder.glob("shard-*.npz")) if rows_of(p)][:2])
            vectors_path(damaged[0]).unlink()  # missing
            with open(vectors_path(damaged[1]), "r+b") as f:  # cut short
                f.truncate(vectors_path(damaged[1]).stat().st_size // 2)

    with pytest.raises(ClusterError, match=r"Parts the workers wrote are missing from .*same path"):
        build_on_cluster(drone_part, SETTINGS, target, damage_at_the_end, embedder=tiny,
                         cluster=cluster.scheduler.address, task_tiles=TASK_TILES)
    assert len(damaged) == 2 and not target.exists()
    assert all(read_shard(path, tiny.dim) is None for path in damaged)  # a part of a shard reads as absent
    lost = sum(rows_of(path) for path in damaged)
    result = build_on_cluster(drone_part, SETTINGS, target, embedder=tiny, cluster=cluster.scheduler.address,
                              task_tiles=TASK_TILES)
    assert result.resumed == result.tile_count - lost  # every other part reused, the damaged ones made again
    assert_same_index(target, single, tiny)


def test_a_shard_is_written_vectors_first_and_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shard = Shard(np.arange(3, dtype=np.int64), np.full(3, 64, np.int32), rng.normal(size=(3, 8)).astype(np.float32),
                  np.arange(15, dtype=np.int32).reshape(3, 5))
    write_shard(tmp_path, "shard-00000000-00000003.npz", shard)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000000-00000003.npy", "shard-00000000-00000003.npz"]
    back = read_shard(tmp_path / "shard-00000000-00000003.npz", 8)
    assert back is not None and isinstance(back.vectors, np.memmap) and np.array_equal(back.vectors, shard.vectors)
    with np.load(tmp_path / "shard-00000000-00000003.npz") as found:
        assert "vectors" not in found.files
    assert read_shard(tmp_path / "shard-00000000-00000003.npz", 16) is None  # another model's
    for order, (positions, sides) in enumerate([(rng.permutation(200), rng.choice([32, 64, 5], 200)),
                                                (np.arange(0), np.arange(0))]):
        assert single_process_order(positions, sides, 7 + order).tolist() == kept_one_by_one(positions, sides,
                                                                                               7 + order)


def index_command(raster: Path, output: Path, cluster: str) -> list[str]:
    return [sys.executable, "-m", "clip_search_plugin.engine", "index", str(raster), "--model", "tiny-random",
            "--tile-size", "20", "--backend", "torch", "--output", str(output), "--cluster", cluster]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_local_cluster_build_on_the_command_line_prints_what_it_did_not_dasks_chatter(drone_part: Path,
                                                                                       tmp_path: Path) -> None:
    with contextlib.ExitStack() as held:
        try:  # Dask's default web port taken, as by another build or program: no warning, no clash
            busy = held.enter_context(socket.socket())
            busy.bind(("127.0.0.1", 8787))
            busy.listen()
        except OSError:
            pass  # taken already: the same case
        done = subprocess.run(index_command(drone_part, tmp_path / "index", "local:1"), capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "indexed" in done.stdout and (tmp_path / "index" / "manifest.json").is_file()
    dask_lines = [line for line in done.stderr.splitlines()
                  if any(word in line for word in ("Nanny", "Scheduler", "scheduler", "worker", "Worker", "dashboard",
                                                   "8787", "comm", "client"))]
    assert dask_lines == []


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
