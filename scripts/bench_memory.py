"""Peak memory of indexing against raster area: does build_index stay flat as the raster grows?

Usage::

    python scripts/bench_memory.py [--base-size 2048] [--json OUT.json] [--keep DIR] [--gdal-cachemax MB]

Builds two benchmark rasters with ``make_bench_raster.py`` (real aerial scene photos mosaicked into a
tiled JPEG GeoTIFF): one of ``base-size`` squared pixels (1x area) and one of ``2 * base-size`` squared
(4x area). Each is indexed by the real ``build_index`` (model preset ``tiny-random``, 224 px tiles, 0.5
overlap, scale 1, CPU) in its own fresh Python process, so each figure covers exactly one build. That
child reports its own ``ru_maxrss`` (peak resident set), wall time, tile count, and an RSS trace (sampled
every 20 ms and at each progress callback) and the peak size of GDAL's block cache during the build.
The table and the ratio peak RSS(4x) / peak RSS(1x) are printed; the target is a ratio of at most 1.2.
``--gdal-cachemax MB`` sets ``GDAL_CACHEMAX`` for the builds (GDAL's default is 5% of physical RAM).

``--child RASTER OUTDIR`` is the internal mode that runs one build and prints one JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.2
TRACE_POINTS = 40
SAMPLE_S = 0.02
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def rss_bytes() -> int:
    """The current resident set size of this process (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gdal_cache() -> tuple[Any, Any]:
    """(GDALGetCacheUsed64, GDALGetCacheMax64) of the GDAL that rasterio loaded, or (None, None).

    Best effort, Linux only: the library is found in /proc/self/maps (rasterio loads it privately).
    """
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "libgdal" in ln and ln.split()[-1].startswith("/")}
        lib = ctypes.CDLL(sorted(paths)[0])
        used, cmax = lib.GDALGetCacheUsed64, lib.GDALGetCacheMax64
        used.restype = cmax.restype = ctypes.c_int64
        return used, cmax
    except (OSError, IndexError, AttributeError):
        return None, None


def thin(points: list[list[float]], n: int) -> list[list[float]]:
    """At most ``n`` points, evenly spaced, always keeping the last one."""
    if len(points) <= n:
        return points
    step = len(points) / n
    return [points[int(i * step)] for i in range(n - 1)] + [points[-1]]


class Sampler(threading.Thread):
    """Samples RSS every ``SAMPLE_S`` seconds in the background; records when the highest sample was seen."""

    def __init__(self, started: float) -> None:
        super().__init__(daemon=True)
        self.started = started
        self.samples: list[list[float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            self.samples.append([round(time.perf_counter() - self.started, 3), rss_bytes() / MIB])

    def finish(self) -> list[list[float]]:
        """Stop sampling; the samples (seconds since the start, RSS MiB)."""
        self.stop.set()
        self.join()
        return self.samples


class ProgressTrace:
    """The build's progress callback: (seconds, done, total, RSS MiB) at each call, and the peak size of GDAL's
    block cache seen then (when it can be read)."""

    def __init__(self, started: float, cache_used: Any) -> None:
        self.started, self.cache_used = started, cache_used
        self.points: list[list[float]] = []
        self.cache_peak = 0.0

    def __call__(self, done: int, total: int) -> None:
        self.points.append([round(time.perf_counter() - self.started, 3), done, total, rss_bytes() / MIB])
        if self.cache_used is not None:
            self.cache_peak = max(self.cache_peak, self.cache_used() / MIB)


def run_child(raster: str, output: str) -> int:
    """Index ``raster`` once in this process and print one JSON line of figures."""
    started = time.perf_counter()
    rss_start = rss_bytes()
    sys.path.insert(0, str(REPO))
    import faiss  # noqa: F401 - imported up front so the baseline holds every library's fixed cost
    import open_clip  # noqa: F401
    import rasterio  # noqa: F401 - loads GDAL, so its block cache can be read
    import torch

    from clip_search_plugin.engine.building.build import build_index
    from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

    rss_imports = rss_bytes()
    cache_used, cache_max = gdal_cache()
    peak_imports = peak_rss_bytes()
    tiling = TilingSettings(tile_size=224, tile_units="px", overlap=0.5, scales=(1.0,))
    settings = IndexSettings(tiling=tiling, model=ModelSpec("tiny-random"), device="cpu")
    trace = ProgressTrace(started, cache_used)
    sampler = Sampler(started)
    sampler.start()
    build_started = time.perf_counter()
    result = build_index(raster, settings, output, progress=trace)
    build_s = time.perf_counter() - build_started
    samples = sampler.finish()
    peak = max(samples, key=lambda s: s[1]) if samples else [0.0, 0.0]
    figures = {
        "raster": raster,
        "tiles": result.tile_count,
        "grid_count": result.grid_count,
        "skipped_empty": result.skipped_empty,
        "build_s": round(build_s, 3),
        "engine_seconds": round(result.seconds, 3),
        "rss_start_mib": round(rss_start / MIB, 1),
        "rss_after_imports_mib": round(rss_imports / MIB, 1),
        "peak_after_imports_mib": round(peak_imports / MIB, 1),
        "rss_end_mib": round(rss_bytes() / MIB, 1),
        "peak_rss_mib": round(peak_rss_bytes() / MIB, 1),
        "gdal_cache_max_mib": round(cache_max() / MIB, 1) if cache_max is not None else None,
        "gdal_cache_used_peak_mib": round(trace.cache_peak, 1) if cache_used is not None else None,
        "sampled_peak": {"t_s": peak[0], "rss_mib": round(peak[1], 1)},
        "torch_threads": torch.get_num_threads(),
        "progress_trace": [[t, d, n, round(r, 1)] for t, d, n, r in thin(trace.points, TRACE_POINTS)],
        "rss_trace": [[t, round(r, 1)] for t, r in thin(samples, TRACE_POINTS)],
    }
    print("BENCH-RESULT " + json.dumps(figures), flush=True)
    return 0


def measure(raster: Path, output: Path, gdal_cachemax: str | None = None) -> dict[str, Any]:
    """Run one build in a fresh child process; its figures plus the wall time seen from outside."""
    env = dict(os.environ)
    if gdal_cachemax is not None:
        env["GDAL_CACHEMAX"] = gdal_cachemax
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(raster), str(output)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"build of {raster} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(lines[-1][len("BENCH-RESULT ") :])
    figures["wall_s"] = round(wall, 3)
    return figures


def machine() -> dict[str, Any]:
    """What the benchmark ran on."""
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = platform.platform()
    try:
        with open("/etc/os-release") as f:
            info = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        os_name = info.get("PRETTY_NAME", os_name).strip('"')
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "python": platform.python_version(),
    }


def table(runs: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    rows = [
        "| raster | pixels | tiles | wall s | build s | RSS after imports MiB | peak RSS MiB "
        "| peak - imports MiB | GDAL block cache MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        rows.append(
            f"| {r['label']} ({r['width']} x {r['height']}) | {r['pixels']:,} | {r['tiles']:,} "
            f"| {r['wall_s']:.1f} | {r['build_s']:.1f} | {r['rss_after_imports_mib']:.0f} "
            f"| {r['peak_rss_mib']:.0f} "
            f"| {r['peak_rss_mib'] - r['rss_after_imports_mib']:.0f} | {r['gdal_cache_used_peak_mib']} |"
        )
    return "\n".join(rows)


def run_bench(base_size: int, workdir: Path, gdal_cachemax: str | None = None) -> dict[str, Any]:
    """Make the 1x and 4x rasters in ``workdir``, index each in a child, and gather the figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_bench_raster import DEFAULT_SCENES, make_bench_raster

    runs: list[dict[str, Any]] = []
    for label, side in (("1x", base_size), ("4x", 2 * base_size)):
        raster = workdir / f"bench_{side}.tif"
        started = time.perf_counter()
        make_bench_raster(raster, side, side, DEFAULT_SCENES, seed=0)
        made_s = time.perf_counter() - started
        print(f"{label}: made {raster.name} ({side} x {side}) in {made_s:.1f} s; indexing...", flush=True)
        figures = measure(raster, workdir / f"index_{side}", gdal_cachemax)
        figures.update(label=label, width=side, height=side, pixels=side * side, make_s=round(made_s, 2))
        figures["raster_mib"] = round(raster.stat().st_size / MIB, 1)
        runs.append(figures)
        tiles, wall, peak = figures["tiles"], figures["wall_s"], figures["peak_rss_mib"]
        print(f"{label}: {tiles} tiles, {wall:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
    ratio = runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    growth = [r["peak_rss_mib"] - r["rss_after_imports_mib"] for r in runs]
    return {
        "base_size": base_size,
        "gdal_cachemax_env": gdal_cachemax,
        "machine": machine(),
        "runs": runs,
        "ratio_peak_rss_4x_over_1x": round(ratio, 3),
        "ratio_peak_above_imports_4x_over_1x": round(growth[1] / growth[0], 3) if growth[0] > 0 else None,
        "target_ratio": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base-size", type=int, default=2048, help="1x raster side in px (default 2048)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="work and keep files here (default: temp)")
    parser.add_argument(
        "--gdal-cachemax",
        default=None,
        help="GDAL_CACHEMAX for the builds, e.g. 64 (MB); default: GDAL's own",
    )
    parser.add_argument("--child", nargs=2, metavar=("RASTER", "OUTDIR"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child[0], args.child[1])
    if args.base_size < 224:
        print("error: --base-size must be at least one tile (224 px)", file=sys.stderr)
        return 2
    try:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            report = run_bench(args.base_size, args.keep, args.gdal_cachemax)
        else:
            with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
                report = run_bench(args.base_size, Path(tmp), args.gdal_cachemax)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(report["runs"]))
    verdict = "within" if report["within_target"] else "ABOVE"
    print(
        f"\npeak RSS ratio 4x/1x = {report['ratio_peak_rss_4x_over_1x']:.3f} "
        f"({verdict} the {TARGET_RATIO} target); above-imports ratio = "
        f"{report['ratio_peak_above_imports_4x_over_1x']}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
