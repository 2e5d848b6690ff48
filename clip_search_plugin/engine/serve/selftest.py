"""``python -m clip_search_plugin.engine selftest``: is this environment a working engine, and on what device?

Runs before anything heavy is imported, so an environment that lacks a package still gets a report that
names it. Checks, each reported separately: the packages import (with their versions), the device
(CUDA > MPS > CPU, with its name), a tiny CLIP model encodes images and text on that device into unit
vectors, and Faiss finds vectors it was given. Prints one JSON object (``--json``) or readable lines;
exit code 0 when every check passed, 2 otherwise (one line on stderr saying what failed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "torch", "torchvision", "open_clip", "faiss", "rasterio", "shapely", "pyproj", "pyogrio")
FIX = "install the engine's packages into this environment (CLIP Search settings: Set up engine)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _check(report: dict[str, Any], name: str, action: Callable[[], dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        outcome = {"ok": True, **action()}
    except Exception as exc:  # noqa: BLE001  (a check that fails for any reason is reported, not raised)
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    outcome["ms"] = round((time.perf_counter() - started) * 1000, 1)
    report["checks"][name] = outcome


def _packages() -> dict[str, Any]:
    versions, missing = {}, []
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            versions[name] = str(getattr(module, "__version__", "?"))
        except Exception as exc:  # noqa: BLE001  (ImportError, or a broken binary: OSError, RuntimeError)
            missing.append(f"{name} ({type(exc).__name__}: {str(exc)[:160]})")
    if missing:
        raise ImportError("cannot import " + ", ".join(missing) + f"; {FIX}")
    import rasterio

    versions["gdal"] = str(rasterio.__gdal_version__)
    return {"versions": versions}


def _device(requested: str) -> dict[str, Any]:
    import torch

    from ..embedding.models import pick_device

    device = pick_device(requested)
    info: dict[str, Any] = {"device": device, "torch_cuda_build": torch.version.cuda}
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        info.update(name=torch.cuda.get_device_name(index), compute_capability=f"{major}.{minor}",
                    memory_gib=round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1))
        product = torch.ones(64, 64, device=device) @ torch.ones(64, 64, device=device)  # a kernel runs here
        torch.cuda.synchronize(index)
        if float(product[0, 0]) != 64.0:
            raise RuntimeError("a matrix product on the GPU gave a wrong answer")
    else:
        info["name"] = "Apple GPU (MPS)" if device == "mps" else _cpu_name()
    return info


def _encode(device: str) -> dict[str, Any]:
    import numpy as np

    from ..embedding.embedder import load_embedder
    from ..settings import ModelSpec

    embedder = load_embedder(ModelSpec("tiny-random"), device)
    images = np.random.default_rng(0).integers(0, 256, (2, embedder.input_size, embedder.input_size, 3), np.uint8)
    vectors = np.concatenate([embedder.encode_images(images), embedder.encode_text(["a swimming pool"])])
    norms = np.linalg.norm(vectors, axis=1)
    if vectors.shape != (3, embedder.dim) or not np.all(np.isfinite(vectors)) or not np.allclose(norms, 1, atol=1e-3):
        raise RuntimeError(f"the encoder gave unusable vectors (shape {vectors.shape})")
    return {"dim": embedder.dim, "device": embedder.device}


def _faiss() -> dict[str, Any]:
    import faiss
    import numpy as np

    vectors = np.random.default_rng(1).normal(size=(1000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(64)
    index.add(vectors)
    _, ids = index.search(vectors[:8], 5)
    if not np.array_equal(ids[:, 0], np.arange(8)):
        raise RuntimeError("Faiss did not find the vectors it was given")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return {"gpu_build": hasattr(faiss, "StandardGpuResources"), "gpus": int(gpus)}


def run_selftest(device: str = "auto") -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "checks": {},
    }
    _check(report, "packages", _packages)
    if report["checks"]["packages"]["ok"]:
        _check(report, "device", lambda: _device(device))
        chosen = report["checks"]["device"].get("device", "cpu")
        _check(report, "encode", lambda: _encode(chosen))
        _check(report, "faiss", _faiss)
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """"<check>: <error>" for each check that failed."""
    return [f"{name}: {c.get('error')}" for name, c in report["checks"].items() if not c["ok"]]


def summary(report: dict[str, Any]) -> str:
    """One line: what the engine runs on, or what failed."""
    checks = report["checks"]
    failed = failures(report)
    if failed:
        return "engine self-test failed: " + "; ".join(failed)
    device, versions = checks["device"], checks["packages"]["versions"]
    return (f"engine ready on {device['device']} ({device['name']}); torch {versions['torch']}, "
            f"open_clip {versions['open_clip']}, faiss {versions['faiss']}, Python {report['python']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_search_plugin.engine selftest",
                                     description="Check that this environment runs the engine, and on what.")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)  # open_clip's warnings about random weights are expected here
    report = run_selftest(args.device)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, check in report["checks"].items():
            print(f"{name:9} {'ok  ' if check['ok'] else 'FAIL'} {check.get('error', '')}".rstrip())
    print(summary(report), file=sys.stderr if args.json or not report["ok"] else sys.stdout)
    return 0 if report["ok"] else 2
