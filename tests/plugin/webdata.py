"""Web imagery for the plugin tests: XYZ tiles, a Cloud-Optimised GeoTIFF and sheets made from the shared rasters
by the engine environment's Python (QGIS's has no rasterio), and a tile server that also keeps what each request
said of itself (its client and its login) and may ask for a login, as a protected service does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.servers.child import ServerProcess
from tests.servers.http import TileServer

from . import web_backend
from .conftest import ENGINE_PYTHON, REPO, shared_raster

ENGINE_AGENT = "clip_search_plugin"  # how the engine's GDAL introduces itself (QGIS's own rendering does not)


def make_imagery(*args: str) -> dict[str, Any]:
    """Run the test-data maker (tests/servers/imagery.py) in the engine's environment; its JSON summary."""
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    done = subprocess.run([str(ENGINE_PYTHON), "-m", "tests.servers.imagery", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def xyz_pyramid(folder: Path, raster: str = "colorado_rgb_015m.tif", zoom: int = 20) -> dict[str, Any]:
    """XYZ PNG tiles of a shared raster at one zoom under ``folder``; the maker's summary (footprint_3857 …)."""
    return make_imagery("xyz", str(shared_raster(raster)), str(folder), "--zoom", str(zoom), "--format", "png")


def basic(user: str, password: str) -> str:
    return web_backend.basic(f"{user}:{password}")


class RecordingTiles(TileServer):
    """XYZ tiles (see ``TileServer``) whose server also writes down each request's target, User-Agent and
    Authorization (see ``web_backend``), and answers 401 to requests without ``login`` (user, password) when one
    is set. Faults (``always``) answer before anything is written down."""

    backend = "tests.plugin.web_backend:RecordingTileBackend"

    def __init__(self, root: Path, heard: Path, login: tuple[str, str] | None = None) -> None:
        self.root, self.ext, self._blank, self.heard_file = Path(root), "png", False, Path(heard)
        ServerProcess.__init__(self, 0, root=str(self.root.resolve()), ext="png", heard=str(heard),
                               login=":".join(login) if login else None)

    def heard(self) -> list[dict[str, Any]]:
        if not self.heard_file.is_file():
            return []
        return [json.loads(line) for line in self.heard_file.read_text(encoding="utf-8").splitlines() if line]

    def engine_heard(self) -> list[dict[str, Any]]:
        """The requests the engine made (QGIS's own drawing of the layer left out)."""
        return [h for h in self.heard() if str(h["agent"]).startswith(ENGINE_AGENT)]

    def forget_heard(self) -> None:
        self.heard_file.unlink(missing_ok=True)
        self.clear_log()


@pytest.fixture
def web_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache of downloaded tiles for the engines this test starts, and quick retries."""
    folder = tmp_path / "web-tiles"
    monkeypatch.setenv("CLIP_SEARCH_WEB_CACHE", str(folder))
    monkeypatch.setenv("CLIP_SEARCH_WEB_RETRY_DELAYS", "0.2 0.4")
    return folder
