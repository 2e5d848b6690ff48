"""Fixtures for engine tests: real shared rasters, the tiny random-weight CLIP, a private index cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from clip_search_plugin.engine.embedding.embedder import ClipEmbedder, load_embedder
from clip_search_plugin.engine.settings import ModelSpec

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
RASTERS = SHARED_DATA / "rasters"


def shared_raster(name: str) -> Path:
    """A raster from the shared test data, or a skip with the reason when that folder is absent."""
    path = RASTERS / name
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path} (it sits beside the repository in CI)")
    return path


def raster_part(name: str, window: Window, folder: Path) -> Path:
    """The ``window`` of the shared raster ``name`` (every band, its colour interpretation kept: an alpha band and a
    transparent border stay so) as a GeoTIFF in ``folder``."""
    with rasterio.open(shared_raster(name)) as src:
        profile = {**src.profile, "width": window.width, "height": window.height,
                   "transform": src.window_transform(window)}
        pixels, colours = src.read(window=window), src.colorinterp
    path = folder / f"{Path(name).stem}_part.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = colours
        dst.write(pixels)
    return path


@pytest.fixture(scope="session")
def tiny() -> ClipEmbedder:
    """The tiny open_clip architecture with random weights (deterministic seed), on the CPU."""
    return load_embedder(ModelSpec("tiny-random"), "cpu")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own default index cache and backend exports, so nothing touches the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIP_SEARCH_CACHE", str(cache))
    backends = tmp_path.with_name(tmp_path.name + "-backends")  # beside: tests list their own folder
    monkeypatch.setenv("CLIP_SEARCH_BACKEND_CACHE", str(backends))  # no verdicts from other tests
    yield cache


UTM_HALF_METRE = Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)


def write_geotiff(
    path: Path,
    data: np.ndarray,
    transform: Affine = UTM_HALF_METRE,
    crs: str | None = "EPSG:32633",
    nodata: float | None = None,
    **profile: object,
) -> Path:
    """Write bands-first ``data`` (count, rows, cols) as a GeoTIFF."""
    count, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
        transform=transform, crs=CRS.from_user_input(crs) if crs else None, nodata=nodata, **profile,
    ) as dst:
        dst.write(data)
    return path


os.environ.setdefault("PYTHONHASHSEED", "0")
