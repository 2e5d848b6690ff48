"""Every kind of source, served for real on 127.0.0.1, read and searched like a local file: an XYZ tile server,
a WMS (MapServer), a Cloud-Optimised GeoTIFF behind an HTTP server with range requests, and a folder of sheets.

The georeferencing truth test holds for each: a red patch at known map coordinates is found exactly there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.warp import transform_bounds
from shapely.geometry import box, shape

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings
from tests.servers.http import RangeFileServer, TileServer
from tests.servers.imagery import cut_sheets, make_cog, make_xyz_tiles
from tests.servers.wms import MapServerWMS

from ..conftest import shared_raster
from ..test_georeference_truth import ColourEmbedder
from .conftest import SCENE_CRS, patch_bounds

KINDS = ("xyz", "wms", "cog", "sheets")


def _served(kind: str, scene: Path, tmp_path: Path) -> tuple[object, str, TilingSettings, str]:
    """(server, source string, tiling, the source's CRS) for ``scene`` served as ``kind``."""
    tiling = TilingSettings(tile_size=64, overlap=0.5)
    if kind == "xyz":
        info = make_xyz_tiles(scene, tmp_path / "tiles", zoom=18)
        server = TileServer(tmp_path / "tiles")
        area = info.footprint_3857
        return server, "", TilingSettings(tile_size=64, overlap=0.5, area=area), "EPSG:3857"
    if kind == "wms":
        reason = MapServerWMS.unavailable_reason()
        if reason:
            pytest.skip(reason)
        server = MapServerWMS(scene, 32633, (500_000.0, 3_999_760.0, 500_320.0, 4_000_000.0), (640, 480))
        return server, "", TilingSettings(tile_size=64, area=(500_000.0, 3_999_760.0, 500_320.0, 4_000_000.0),
                                          resolution=0.5), SCENE_CRS
    if kind == "cog":
        make_cog(scene, tmp_path / "served" / "scene.tif")
        return RangeFileServer(tmp_path / "served"), "", tiling, SCENE_CRS
    cut_sheets(scene, tmp_path / "sheets", cols=8, rows=6)
    return None, str(tmp_path / "sheets"), tiling, SCENE_CRS


def _source(kind: str, server: object, given: str) -> str:
    if kind == "xyz":
        assert isinstance(server, TileServer)
        return f"type=xyz&url={server.url_template}&zmax=18&zmin=0"
    if kind == "wms":
        assert isinstance(server, MapServerWMS)
        return f"crs=EPSG:32633&format=image/png&layers=ortho&styles=&url={server.url}"
    if kind == "cog":
        assert isinstance(server, RangeFileServer)
        return "/vsicurl/" + server.url("scene.tif")
    return given


@pytest.mark.parametrize("kind", KINDS)
def test_a_patch_is_found_where_it_is_on_the_map_whatever_the_source(kind: str, scene_tif: Path,
                                                                     tmp_path: Path) -> None:
    server, given, tiling, crs = _served(kind, scene_tif, tmp_path)
    embedder = ColourEmbedder()
    if server is not None:
        server.start()  # type: ignore[attr-defined]
    try:
        source = _source(kind, server, given)
        built = build_index(source, IndexSettings(tiling=tiling), tmp_path / "ix", embedder=embedder)
        index = open_index(built.path)
        found = search(index, embedder, "red", top_k=50, threshold=0.2, templates=None)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    patch = box(*transform_bounds(SCENE_CRS, crs, *patch_bounds()))
    assert len(found.regions) == 1
    region = shape(found.regions[0].geometry)
    assert region.contains(patch.centroid)
    assert patch.buffer(64 * 0.75, join_style="mitre").contains(region)  # within a tile of the patch
    source_record = index.manifest["raster"].get("source")
    if kind == "sheets":
        assert found.regions[0].file == "sheet_r03_c05.tif"
        assert len(source_record["files"]) == 48
    else:
        assert source_record["kind"] == {"cog": "remote"}.get(kind, kind)
        assert index.raster.path == source_record["name"] == source


def test_a_remote_cog_gives_the_same_index_as_the_local_file(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = shared_raster("colorado_rgb_015m.tif")
    make_cog(raster, tmp_path / "served" / "ortho.tif")
    settings = IndexSettings(tiling=TilingSettings(tile_size=48))
    local = open_index(build_index(tmp_path / "served" / "ortho.tif", settings, tmp_path / "local", embedder=tiny).path)
    with RangeFileServer(tmp_path / "served") as server:
        remote = open_index(build_index(server.url("ortho.tif"), settings, tmp_path / "remote", embedder=tiny).path)
        assert server.count(method="GET") >= 1 and all(r.range for r in server.log if r.method == "GET" and
                                                        r.status == 206)
        assert server.bytes_sent() < 3 * (tmp_path / "served" / "ortho.tif").stat().st_size
    assert np.array_equal(local.tiles, remote.tiles)
    assert np.allclose(local.vectors.reconstruct_n(0, local.count), remote.vectors.reconstruct_n(0, remote.count),
                       atol=1e-6)
    assert remote.raster.path == "/vsicurl/" + server.url("ortho.tif")
    assert remote.raster.transform == local.raster.transform


def test_a_collection_of_200_sheets_is_one_index_equal_to_the_whole_raster(tiny: ClipEmbedder,
                                                                          tmp_path: Path) -> None:
    raster = shared_raster("drone_rgba_alpha.tif")
    cut_sheets(raster, tmp_path / "sheets", cols=20, rows=10)
    settings = IndexSettings(tiling=TilingSettings(tile_size=64))
    whole = open_index(build_index(raster, settings, tmp_path / "whole", embedder=tiny).path)
    sheets = open_index(build_index(tmp_path / "sheets", settings, tmp_path / "sheets-ix", embedder=tiny).path)
    assert (sheets.raster.width, sheets.raster.height) == (whole.raster.width, whole.raster.height)
    assert sheets.raster.transform == pytest.approx(whole.raster.transform)
    assert np.array_equal(whole.tiles, sheets.tiles)
    assert np.allclose(whole.vectors.reconstruct_n(0, whole.count), sheets.vectors.reconstruct_n(0, sheets.count),
                       atol=1e-5)
    record = sheets.manifest["raster"]["source"]
    assert record["kind"] == "folder" and len(record["files"]) == 200
    found = search(sheets, tiny, "a roof", top_k=5)
    assert all(r.file and r.file.startswith("sheet_r") for r in found.regions)
    assert json.loads((Path(sheets.path) / "manifest.json").read_text())["raster"]["path"] == str(tmp_path / "sheets")
