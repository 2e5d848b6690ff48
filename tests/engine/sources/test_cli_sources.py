"""Sources on the command line and through the engine's requests: a web layer with --bbox and --resolution, a dry
run that says what a build would download, several files as one collection, sheets in two CRSs refused, and the
status of a web layer's index found again without an area."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio

from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.requests import CollectRequest, LocateRequest, SurveyRequest
from clip_search_plugin.engine.serve.service import Service
from clip_search_plugin.engine.settings import ModelSpec, TilingSettings
from clip_search_plugin.engine.sources.collection import collection_vrt
from tests.servers.child import ServerProcess
from tests.servers.http import RangeFileServer, TileServer
from tests.servers.imagery import XyzInfo, cut_sheets, make_cog, make_xyz_tiles
from tests.servers.wms import MapServerWMS

from ..conftest import shared_raster
from ..serve.test_cli import cli

TINY = ("--model", "clip-search-tiny", "--pretrained", "none")
NEVER = (lambda done, total: None, lambda: False)


@pytest.fixture
def tiles(scene_tif: Path, tmp_path: Path) -> XyzInfo:
    return make_xyz_tiles(scene_tif, tmp_path / "tiles", zoom=18)


def test_the_cli_indexes_an_xyz_layer_over_a_bbox_after_a_dry_run(tiles: XyzInfo, scene_tif: Path,
                                                                   tmp_path: Path) -> None:
    coarser = make_xyz_tiles(scene_tif, tmp_path / "tiles", zoom=17)  # the server has zooms 17 and 18
    bbox = [str(v) for v in tiles.footprint_3857]
    with TileServer(tmp_path / "tiles") as server:
        source = f"type=xyz&url={server.url_template}&zmax=18&zmin=0"
        refused = cli("index", source, *TINY, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "web layer, which has no edges of its own: give the area" in refused.stderr
        dry = cli("index", source, *TINY, "--bbox", *bbox, "--tile-size", "64", "--dry-run", "--json", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        survey = json.loads(dry.stdout)
        assert survey["requests"] == tiles.written and survey["zoom"] == 18 and survey["tiles"] > 0
        assert server.count("/tiles/") == 0  # a dry run downloads nothing
        done = cli("index", source, *TINY, "--bbox", *bbox, "--tile-size", "64", "--resolution", "1.2",
                   "--output", str(tmp_path / "ix"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert server.count("/tiles/") == server.count("/tiles/17/") == coarser.written  # 1.2 m a pixel: zoom 17
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["raster"]["source"]["zoom"] == 17 and manifest["raster"]["source"]["resolution"] == 1.2
    assert manifest["tiling"]["resolution"] == 1.2
    found = cli("search", str(tmp_path / "ix"), "a red patch", "--top-k", "2", "--format", "json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    regions = json.loads(found.stdout)["regions"]
    xmin, ymin, xmax, ymax = tiles.footprint_3857
    assert len(regions) == 2 and all(xmin - 1.2 <= r["bounds"][0] and r["bounds"][2] <= xmax + 1.2 and
                                     ymin - 1.2 <= r["bounds"][1] and r["bounds"][3] <= ymax + 1.2 for r in regions)


def test_several_files_on_the_cli_are_one_collection(scene_tif: Path, tmp_path: Path) -> None:
    sheets = cut_sheets(scene_tif, tmp_path / "sheets", cols=2, rows=2)
    done = cli("index", *map(str, sheets), *TINY, "--tile-size", "64", "--output", str(tmp_path / "ix"),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    source = json.loads((tmp_path / "ix" / "manifest.json").read_text())["raster"]["source"]
    assert sorted(f[0] for f in source["files"]) == sorted(s.name for s in sheets)


def test_sheets_in_two_crss_are_refused_naming_them(scene_tif: Path, tmp_path: Path) -> None:
    sheets = cut_sheets(scene_tif, tmp_path / "sheets", cols=2, rows=1)
    with rasterio.open(sheets[1], "r+") as odd:
        odd.crs = "EPSG:32634"
    with pytest.raises(InputError, match=r"more than one CRS: 1 of 2 \(sheet_r00_c01.tif\).*gdalwarp"):
        collection_vrt([str(s) for s in sheets], "odd")
    with pytest.raises(InputError, match="two or more raster files"):
        CollectRequest(files=(str(sheets[0]),))


def test_a_web_layers_index_is_found_again_without_an_area(tiles: XyzInfo, tmp_path: Path) -> None:
    service = Service("cpu")
    model = ModelSpec("clip-search-tiny", "none")
    with TileServer(tmp_path / "tiles") as server:
        source = f"type=xyz&url={server.url_template}&zmax=18&zmin=0"
        before = service.handle("locate", LocateRequest(source, model, TilingSettings(tile_size=64)).to_params(),
                                *NEVER)
        assert before["status"] == "none"
        tiling = TilingSettings(tile_size=64, area=tiles.footprint_3857)
        survey = service.handle("survey", SurveyRequest(source, model, tiling).to_params(), *NEVER)
        assert survey["kind"] == "xyz" and survey["requests"] == tiles.written and survey["download_mb"] > 0
        service.handle("index", {"raster": source, "model": model.to_dict(), "tiling": tiling.to_dict()}, *NEVER)
        ready = service.handle("locate", LocateRequest(source, model, TilingSettings(tile_size=64)).to_params(),
                               *NEVER)
        assert ready["status"] == "ready"
        other = service.handle("locate", LocateRequest(source, model, TilingSettings(tile_size=96)).to_params(),
                               *NEVER)
        assert other["status"] == "stale" and other["reason"] == "other model or tiling settings"
        elsewhere = TilingSettings(tile_size=64, area=tuple(v + 50 for v in tiles.footprint_3857))
        moved = service.handle("locate", LocateRequest(source, model, elsewhere).to_params(), *NEVER)
        assert moved["status"] == "stale" and moved["reason"] == "another area or resolution"
        assert not moved.get("changed")


@pytest.mark.parametrize("kind", ["wms", "cog", "sheets"])
def test_the_cli_indexes_and_searches_a_wms_a_remote_cog_and_200_sheets(kind: str, tmp_path: Path) -> None:
    raster = shared_raster("drone_rgba_alpha.tif")
    with rasterio.open(raster) as ds:
        bounds, size, epsg = tuple(ds.bounds), (ds.width, ds.height), ds.crs.to_epsg()
    extra: list[str] = []
    server: ServerProcess | None = None
    if kind == "wms":
        if MapServerWMS.unavailable_reason():
            pytest.skip(MapServerWMS.unavailable_reason())
        server = MapServerWMS(raster, epsg, bounds, size).start()
        source = f"crs=EPSG:{epsg}&format=image/png&layers=ortho&styles=&url={server.url}"
        extra = ["--bbox", *map(str, bounds), "--resolution", "0.7"]
    elif kind == "cog":
        make_cog(raster, tmp_path / "served" / "ortho.tif")
        server = RangeFileServer(tmp_path / "served").start()
        source = "/vsicurl/" + server.url("ortho.tif")
    else:
        cut_sheets(raster, tmp_path / "sheets", cols=20, rows=10)
        source = str(tmp_path / "sheets")
    try:
        built = cli("index", source, *TINY, "--tile-size", "64", *extra, "--output", str(tmp_path / "ix"),
                    cwd=tmp_path)
        assert built.returncode == 0, built.stderr
        assert server is None or server.count() > 0
    finally:
        if server is not None:
            server.close()
    found = cli("search", str(tmp_path / "ix"), "a roof", "--top-k", "3", "--format", "json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    regions = json.loads(found.stdout)["regions"]
    assert len(regions) == 3
    for region in regions:  # within the raster's bounds, in its CRS (the WMS and the sheets share it)
        xmin, ymin, xmax, ymax = region["bounds"]
        assert bounds[0] - 1 <= xmin < xmax <= bounds[2] + 1 and bounds[1] - 1 <= ymin < ymax <= bounds[3] + 1
        assert (region.get("file") or "").startswith("sheet_") == (kind == "sheets")
