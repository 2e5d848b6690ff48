"""Fixtures for sources: a scene with a red patch at a known place, served as every kind of source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from affine import Affine

from clip_search_plugin.engine.sources import access

from ..conftest import write_geotiff
from ..test_georeference_truth import scene

SCENE_TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)  # UTM 33N, near 36° N
SCENE_CRS = "EPSG:32633"
PATCH = (410, 250, 24)  # column, row, size: inside one sheet of an 8 x 6 cut (80 px sheets)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Retries after hundredths of a second (not 1, 2, 4 ... s), and a private tile cache."""
    monkeypatch.setattr(access, "RETRY_DELAYS", (0.01, 0.02, 0.04))
    monkeypatch.setenv("CLIP_SEARCH_WEB_CACHE", str(tmp_path / "web-tiles"))
    yield


@pytest.fixture
def scene_tif(tmp_path: Path) -> Path:
    """A 640 x 480 scene at 0.5 m in UTM with one red patch (:data:`PATCH`)."""
    return write_geotiff(tmp_path / "scene.tif", scene(PATCH), SCENE_TRANSFORM, SCENE_CRS)


def patch_bounds() -> tuple[float, float, float, float]:
    """The red patch's bounds in the scene's CRS."""
    col, row, size = PATCH
    x0, y0 = SCENE_TRANSFORM @ (col, row)
    x1, y1 = SCENE_TRANSFORM @ (col + size, row + size)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
