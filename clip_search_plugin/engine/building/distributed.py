"""Building an index on a Dask cluster: the same index as :func:`.build.build_index`, embedded by many processes.

Why Dask (``dask.distributed``): one scheduler for a laptop's cores (``local``, a :class:`LocalCluster` this build
starts and always closes) and for a room of GPU servers (``tcp://HOST:PORT``, a running ``dask scheduler``), with
a lost worker's tasks rescheduled on the others, and no service of our own to run.

How: this computer plans the tiles exactly as a single-process build does and chooses and verifies the embedding
backend once; the plan is cut into contiguous runs of its reading order (see :mod:`.shards`), one task each. A
worker keeps its model loaded across its tasks; each task writes its shard into the plan's shard folder beside
the target and returns its name. Shards already there from an interrupted build of the same plan are reused, so
a stopped build resumes. The shards are merged in the order a single-process build keeps its tiles, and the index
is finished exactly as :func:`.build.build_index` finishes it (look-alikes, approximate index, manifest, written
whole or not at all), then the shard folder is removed. The merge streams (see :mod:`.sharded`): from
``compact.COMPACT_FROM`` tiles the compact index is built from the shards' files as it reads them, never every
vector in memory; below, the vectors are copied into one flat index as a single-process build holds them.

On a real cluster the source and the output folder must be on storage every worker and this computer see, at
the same path (a network share): the workers read the source and write the shards themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding.embedder import Embedder
from ..errors import Cancelled, ClipSearchError, InputError
from ..index.ann import APPROXIMATE_FROM
from ..index.structure import is_compact
from ..settings import IndexSettings
from .build import (
    IndexResult,
    IsCancelled,
    Progress,
    _nothing_kept,
    _Plan,
    _plan,
    backend_of,
    key_of,
    result_of,
    store_index,
)
from .reading import chunks_of
from .sharded import ShardedVectors, ShardLost, merge_shards
from .shards import (
    ModelWork,
    ShardJob,
    chunk_jobs,
    embed_shard,
    read_shard,
    remove_shard_folders,
    shard_folder,
    task_ranges,
)

log = logging.getLogger("clip_search.engine")
CONNECT_SECONDS = 5  # an unreachable scheduler is reported after this
WORKERS_SECONDS = 30  # a scheduler without workers is reported after this
LOCAL_MODEL_THREADS = 4  # `local` on a CPU: one worker per this many cores (a model runs well on a few threads)
RETRIES = 2  # a task that fails (not a lost worker: Dask reschedules those itself) is tried again this often
POLL_SECONDS = 0.1


class ClusterError(InputError):
    """The cluster cannot be used as given (unreachable, no workers, workers lost, storage not shared)."""


@dataclass
class Cluster:
    """A client connected to a cluster, and what the build needs to know of it."""

    client: Any
    address: str
    local: bool
    workers: int
    host_threads: dict[str, int] = field(default_factory=dict)


def build_on_cluster(
    raster: str | Path,
    settings: IndexSettings | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
    is_cancelled: IsCancelled | None = None,
    embedder: Embedder | None = None,
    cluster: str = "local",
    approximate_from: int = APPROXIMATE_FROM,
    auth: dict[str, str] | None = None,
    task_tiles: int | None = None,
) -> IndexResult:
    """Index ``raster`` on the Dask ``cluster`` (``local``, ``local:N`` or ``tcp://HOST:PORT``): the index
    :func:`.build.build_index` makes, with the same tiles in the same order. ``progress(done, total)`` is called
    as shards complete; a cancel stops submitting, cancels the running tasks and keeps the finished shards for
    the next build of the same plan. ``task_tiles``: tiles per task (default: see :func:`.shards.task_ranges`)."""
    started = time.perf_counter()
    is_cancelled = is_cancelled or (lambda: False)
    plan = _plan(raster, settings or IndexSettings(), output, embedder, auth)
    if plan.info.remote and auth:
        raise InputError(f"{plan.info.title} needs credentials, which stay in this computer's memory: the workers "
                         "of a cluster cannot use them. Index it without a cluster.")
    folder = shard_folder(plan.target, key_of(plan))
    with connected(cluster, plan.embedder.device) as found:
        jobs = _jobs(plan, found, folder, task_tiles)
        resumed = _embed(found, jobs, plan.embedder.dim, progress or (lambda done, total: None), is_cancelled)
    vectors, table = _merged(folder, jobs, plan)
    if not len(table):
        raise _nothing_kept(plan.info)
    path = _finish(plan, vectors, table, approximate_from, is_cancelled, found, folder)
    remove_shard_folders(plan.target)
    return result_of(plan, path, len(table), started, resumed)


def local_workers(cluster: str, device: str) -> tuple[int, int]:
    """(worker processes, model threads each) of ``local`` / ``local:N`` on this computer: by default one worker
    per :data:`LOCAL_MODEL_THREADS` cores on a CPU, one beside a GPU (it has the GPU to itself); the cores are
    shared out among the workers, so they do not oversubscribe them."""
    cores = os.cpu_count() or 1
    if ":" in cluster:
        workers = int(cluster.split(":", 1)[1])
    else:
        workers = max(1, cores // LOCAL_MODEL_THREADS) if device == "cpu" else 1
    return workers, max(1, cores // workers)


@contextlib.contextmanager
def connected(cluster: str, device: str) -> Iterator[Cluster]:
    """A client of ``cluster``: a LocalCluster started here (and always closed), or a running scheduler."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError("Dask is not installed in the engine's environment: install dask and distributed (the "
                           "engine's requirements list them), or build without a cluster.") from exc
    with _dask_quiet():
        if cluster.startswith("tcp://"):
            client = _reach(Client, cluster)
            try:
                yield _described(client, cluster, local=False)
            finally:
                client.close()
            return
        workers, threads = local_workers(cluster, device)
        # no dashboard, and the scheduler's own web server on a free port (by default it takes 8787)
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                             silence_logs=logging.ERROR,
                             env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        try:
            with Client(local, timeout=f"{WORKERS_SECONDS}s") as client:
                yield _described(client, "local", local=True)
        finally:
            local.close()


@contextlib.contextmanager
def _dask_quiet() -> Iterator[None]:
    """Dask's own news (workers started, connections opened and closed: some forty lines a build) kept from the
    terminal and the log; its warnings and errors still pass."""
    logger = logging.getLogger("distributed")
    before = logger.level
    logger.setLevel(max(before, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(before)


def _reach(client_class: Any, address: str) -> Any:
    """A client of the scheduler at ``address`` with at least one worker, or one clear error."""
    try:
        client = client_class(address, timeout=f"{CONNECT_SECONDS}s")
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(
            f"Could not reach the Dask scheduler at {address}: {reason}. Check the address, that `dask scheduler` "
            "runs there and that this computer may connect, or use --cluster local.") from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_SECONDS)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ClusterError(f"The Dask scheduler at {address} has no workers: start `dask worker {address}` on the "
                           "computers that should embed, or use --cluster local.") from exc
    return client


def _described(client: Any, address: str, local: bool) -> Cluster:
    """The cluster behind ``client``: how many workers, and the Dask threads on each host."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    hosts: dict[str, int] = {}
    for worker in workers:
        host = str(worker.get("host", ""))
        hosts[host] = hosts.get(host, 0) + int(worker.get("nthreads", 1))
    log.info("cluster %s: %d workers on %d hosts", address, len(workers), len(hosts))
    return Cluster(client, address, local, len(workers), hosts)


def _jobs(plan: _Plan, found: Cluster, folder: Path, task_tiles: int | None) -> list[ShardJob]:
    """The plan's tasks, in reading order."""
    embedder, tiling = plan.embedder, plan.settings.tiling
    threads = local_workers(found.address, embedder.device)[1] if found.local else 0
    device = embedder.device if found.local else plan.settings.device  # a remote worker picks its own GPU
    work = ModelWork(plan.settings.model, device, backend_of(embedder), plan.batch_size,
                     embedder.identity.to_dict(), threads, found.host_threads)
    chunks = list(chunks_of(plan.tiles, plan.base, tiling.scales))
    ranges = task_ranges(len(plan.tiles), plan.batch_size, task_tiles)

    def make(where: str, start: int, stop: int, skip: int, runs: list[Any]) -> ShardJob:
        return ShardJob(where, start, stop, skip, runs, plan.info, plan.base, tuple(tiling.scales),
                        tiling.max_empty_fraction, work)

    return chunk_jobs(chunks, folder, ranges, make)


def _embed(found: Cluster, jobs: list[ShardJob], dim: int, progress: Progress, is_cancelled: IsCancelled) -> int:
    """Run the jobs whose shards are not there yet; the tiles kept in the shards reused."""
    reused, todo, total = 0, [], jobs[-1].stop if jobs else 0
    for job in jobs:
        path = Path(job.folder) / job.name
        shard = read_shard(path, dim)
        if shard is None:
            path.unlink(missing_ok=True)  # damaged, a part or absent: made again
            todo.append(job)
        else:
            reused += len(shard.positions)
    if reused:
        log.info("resuming: %d of %d parts done by an earlier build", len(jobs) - len(todo), len(jobs))
    done = total - sum(job.stop - job.start for job in todo)
    progress(done, total)
    _run(found, todo, progress, is_cancelled, done, total)
    return reused


def _run(found: Cluster, todo: list[ShardJob], progress: Progress, is_cancelled: IsCancelled, done: int,
         total: int) -> None:
    """Submit the jobs, a few per worker at a time, and wait for them, reporting progress as each finishes."""
    queue, running = deque(todo), dict[Any, ShardJob]()
    limit = max(4, 2 * found.workers)
    try:
        while queue or running:
            if is_cancelled():
                raise Cancelled("Cancelled; no index was stored yet. The parts embedded so far are saved: the same "
                                "build resumes from there.")
            while queue and len(running) < limit:
                job = queue.popleft()
                future = found.client.submit(embed_shard, job, key=f"embed-{job.name}-{uuid.uuid4().hex[:8]}",
                                             retries=RETRIES, pure=False)
                running[future] = job
            finished = [f for f in running if f.done()]
            if not finished:
                time.sleep(POLL_SECONDS)
            for future in finished:
                job = running.pop(future)
                _result(future, job, found)
                done += job.stop - job.start
                progress(done, total)
    finally:
        if running:
            found.client.cancel(list(running))


def _result(future: Any, job: ShardJob, found: Cluster) -> None:
    """Wait for a finished task's result; its failure as one clear error."""
    from distributed import KilledWorker

    try:
        future.result()
    except KilledWorker as exc:
        raise ClusterError(
            f"Workers of the cluster died while embedding tiles {job.start}-{job.stop} (often: out of memory). The "
            "parts done are kept: run the same build again to resume, with fewer workers per computer or a smaller "
            "batch size.") from exc
    except ClipSearchError:
        raise
    except OSError as exc:
        raise ClusterError(f"The cluster {found.address} failed while embedding tiles {job.start}-{job.stop}: {exc}. "
                           "The parts done are kept: run the same build again to resume.") from exc


def _merged(folder: Path, jobs: list[ShardJob], plan: _Plan) -> tuple[ShardedVectors, np.ndarray]:
    """(vectors, tile table) of all shards, in the order a single-process build keeps its tiles: the vectors
    left in the shards' files, read as they are asked for."""
    merged = merge_shards(folder, [job.name for job in jobs], plan.embedder.dim, plan.batch_size)
    if merged is None:
        raise _missing(folder)
    return merged


def _missing(folder: Path) -> ClusterError:
    return ClusterError(
        f"Parts the workers wrote are missing from {folder}. On a cluster, the source and the output folder "
        "must be on storage every worker and this computer see, at the same path; then run the build again.")


def _finish(plan: _Plan, vectors: ShardedVectors, table: np.ndarray, approximate_from: int,
            is_cancelled: IsCancelled, found: Cluster, folder: Path) -> Path:
    """Write the index as :func:`.build.build_index` does, its manifest saying where it was built. A compact
    index (``compact.COMPACT_FROM`` tiles, read now: tests lower it) is built from the shards' files, read block
    by block; any other is searched in memory, so the vectors are copied into a flat index first."""
    streamed = is_compact(len(table), approximate_from)
    built_on = {"cluster": "local" if found.local else found.address, "workers": found.workers}
    try:
        searched = vectors if streamed else vectors.flat()
        return store_index(plan, searched, table, approximate_from, is_cancelled, built_on=built_on)
    except ShardLost as exc:
        raise _missing(folder) from exc
