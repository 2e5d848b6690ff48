"""A good citizen of tile servers, and a clear account of a bad one: retries on 429 and 5xx, one message naming the
layer on 401, 403 and 404 (never its credentials), blank tiles caught early, a server stopped mid-build and
restarted (the build resumes from its checkpoint and the tile cache), and a second build that downloads nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clip_search_plugin.engine.building import reading
from clip_search_plugin.engine.building.build import build_index, open_index
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings
from clip_search_plugin.engine.sources.access import BlankSourceError, SourceReadError, tile_cache
from clip_search_plugin.engine.sources.names import public_name
from tests.servers.http import TileServer
from tests.servers.imagery import XyzInfo, make_xyz_tiles

from ..test_georeference_truth import ColourEmbedder


@pytest.fixture
def tiles(scene_tif: Path, tmp_path: Path) -> XyzInfo:
    return make_xyz_tiles(scene_tif, tmp_path / "tiles", zoom=18)


def xyz(server: TileServer, extra: str = "") -> str:
    return f"type=xyz&url={server.url_template}&zmax=18&zmin=0{extra}"


def settings(tiles: XyzInfo, **more: object) -> IndexSettings:
    return IndexSettings(tiling=TilingSettings(tile_size=64, area=tiles.footprint_3857), batch_size=4, **more)


def test_a_second_build_downloads_nothing_and_5xx_and_429_are_retried(tiles: XyzInfo, tmp_path: Path) -> None:
    embedder = ColourEmbedder()
    with TileServer(tmp_path / "tiles") as server:
        server.fail_first(2, 503)  # every tile answers 503 twice before it is served
        first = build_index(xyz(server), settings(tiles), tmp_path / "one", embedder=embedder)
        served = server.count("/tiles/", status=200)
        assert served == tiles.written and server.count("/tiles/", status=503) == 2 * served
        server.reset()
        server.fail_first(1, 429, retry_after=0)
        again = build_index(xyz(server), settings(tiles), tmp_path / "two", embedder=embedder)
        assert server.count("/tiles/") == 0  # all from the tile cache
    one, two = open_index(first.path), open_index(again.path)
    assert np.array_equal(one.tiles, two.tiles)
    assert one.manifest["raster"]["source"]["requests"] == tiles.written


@pytest.mark.parametrize("code", [401, 403])
def test_a_refusal_names_the_layer_and_says_what_to_do_without_its_credentials(
        code: int, tiles: XyzInfo, tmp_path: Path) -> None:
    with TileServer(tmp_path / "tiles") as server:
        server.always(code)
        source = xyz(server, "&username=alice&password=s3cret-pw")
        with pytest.raises(SourceReadError) as caught:
            build_index(source, settings(tiles), tmp_path / "ix", embedder=ColourEmbedder())
        assert server.count("/tiles/") <= tiles.written  # a refusal is not retried
    message = str(caught.value)
    assert f"HTTP {code}" in message and "127.0.0.1" in message
    assert "s3cret" not in message and "s3cret" not in public_name(source)
    assert not (tmp_path / "ix").exists()


def test_missing_tiles_are_empty_and_a_layer_with_none_says_so(tiles: XyzInfo, tmp_path: Path) -> None:
    with TileServer(tmp_path / "tiles") as server:
        whole = build_index(xyz(server), settings(tiles), tmp_path / "whole", embedder=ColourEmbedder())
    with TileServer(tmp_path / "tiles") as server:  # another port: a tile cache of its own
        server.always(404, [server.tile_path(tiles.zoom, tiles.x_range[0] + 1, tiles.y_range[0] + 1)])
        holed = build_index(xyz(server), settings(tiles), tmp_path / "holed", embedder=ColourEmbedder())
        assert server.count("/tiles/", status=404) == 1  # a missing tile is no failure to retry
    assert 0 < holed.tile_count < whole.tile_count
    with TileServer(tmp_path / "tiles") as server:
        server.always(404)
        with pytest.raises(InputError, match="sent no imagery for this area: every tile was missing"):
            build_index(xyz(server), settings(tiles), tmp_path / "none", embedder=ColourEmbedder())


def test_credentials_reach_the_server_and_nothing_written(tiles: XyzInfo, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with TileServer(tmp_path / "tiles") as server:
        server.require_basic("alice", "s3cret-pw")  # a server that serves only with these credentials
        source = xyz(server, "&username=alice&password=s3cret-pw")
        built = build_index(source, settings(tiles), tmp_path / "ix", embedder=ColourEmbedder())
        assert server.count("/tiles/", status=200) == tiles.written
    manifest = (built.path / "manifest.json").read_text()
    assert "s3cret" not in manifest and "s3cret" not in caplog.text
    assert json.loads(manifest)["raster"]["path"] == xyz(server)  # the source without its credentials
    assert not any("s3cret" in p.read_text(errors="replace") for p in (tmp_path / "web-tiles").rglob("*")
                   if p.is_file() and p.suffix in (".xml", ".vrt", ".json"))


def test_blank_tiles_are_caught_before_the_build_and_not_kept(tiles: XyzInfo, tmp_path: Path) -> None:
    with TileServer(tmp_path / "tiles") as server:
        server.blank = True
        source = xyz(server)
        with pytest.raises(BlankSourceError, match=r"sent blank tiles.*RGB 255, 255, 255"):
            build_index(source, settings(tiles), tmp_path / "ix", embedder=ColourEmbedder())
    assert not os.path.exists(tile_cache(public_name(source)))
    assert not (tmp_path / ".ix.partial").exists()


def test_a_slow_server_is_waited_for(tiles: XyzInfo, tmp_path: Path) -> None:
    with TileServer(tmp_path / "tiles") as server:
        server.delay_s = 0.3
        built = build_index(xyz(server), settings(tiles), tmp_path / "ix", embedder=ColourEmbedder())
    assert built.tile_count > 0


def test_a_server_stopped_mid_build_then_restarted_resumes_from_checkpoint_and_cache(
        tiles: XyzInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "CHUNK_SOURCE_PIXELS", 128)  # many chunks, so the server goes away part-way
    monkeypatch.setattr(reading, "READ_AHEAD", 1)
    embedder = ColourEmbedder()
    with TileServer(tmp_path / "tiles") as other:  # the same build, uninterrupted (another port: its own cache)
        plain = open_index(build_index(xyz(other), settings(tiles), tmp_path / "plain", embedder=embedder).path)
    with TileServer(tmp_path / "tiles") as server:
        source = xyz(server)
        batches: list[int] = []

        def stop_after_two_batches(done: int, total: int) -> None:
            batches.append(done)
            if len(batches) == 2:
                server.stop()

        with pytest.raises(SourceReadError, match=r"did not answer.*resumes where it stopped"):
            build_index(source, settings(tiles), tmp_path / "ix", stop_after_two_batches, embedder=embedder)
        fetched = server.count("/tiles/", status=200)
        assert (tmp_path / ".ix.partial").is_dir() and 0 < fetched < tiles.written
        server.start()
        server.clear_log()
        resumed = build_index(source, settings(tiles), tmp_path / "ix", embedder=embedder)
        assert resumed.resumed > 0
        assert server.count("/tiles/") <= tiles.written - fetched  # what was fetched comes from the cache
    again = open_index(resumed.path)
    assert np.array_equal(plain.tiles, again.tiles)
    assert np.allclose(plain.vectors.reconstruct_n(0, plain.count), again.vectors.reconstruct_n(0, again.count))


def test_a_web_layer_without_an_area_and_a_wms_without_a_resolution_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="web layer, which has no edges of its own: give the area"):
        build_index("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=18", IndexSettings(), tmp_path / "ix",
                    embedder=ColourEmbedder())
    with pytest.raises(InputError, match="WMS layer draws at any scale: give the resolution"):
        build_index("crs=EPSG:3857&layers=a&styles=&format=image/png&url=http://127.0.0.1:9/wms",
                    IndexSettings(tiling=TilingSettings(area=(0.0, 0.0, 100.0, 100.0))), tmp_path / "ix",
                    embedder=ColourEmbedder())


def test_the_engine_process_keeps_a_layers_key_out_of_its_answers_and_its_log(tiles: XyzInfo, tmp_path: Path) -> None:
    """Through the engine process as the dock drives it: a refused layer whose address holds a key, and one whose
    source holds a password; neither reaches an answer, an event or the log the QGIS side keeps."""
    from ..serve.test_worker import Engine

    engine = Engine()
    try:
        with TileServer(tmp_path / "tiles") as server:
            server.always(403)
            keyed = f"type=xyz&url={server.base_url}/tiles/{{z}}/{{x}}/{{y}}.png?apikey=s3cret-key&zmax=18"
            tiling = TilingSettings(tile_size=64, area=tiles.footprint_3857).to_dict()
            engine.send(1, "index", raster=keyed, model={"name": "tiny-random"}, tiling=tiling,
                        auth={"user": "alice", "password": "s3cret-pw"})
            _, answer = engine.until(1)
    finally:
        engine.close()
    assert answer["event"] == "error" and "HTTP 403" in answer["error"]["message"]
    assert engine.proc.stderr is not None
    said = json.dumps(engine.seen) + engine.proc.stderr.read()
    assert "s3cret" not in said and "apikey=***" in said
