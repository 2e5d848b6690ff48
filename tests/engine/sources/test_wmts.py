"""A WMTS layer (RESTful: a capabilities document and tiles addressed by matrix, column and row, as many national
services publish), read through GDAL's WMTS driver: the red patch is found where it is on the map."""

from __future__ import annotations

from pathlib import Path

from rasterio.warp import transform_bounds
from shapely.geometry import box, shape

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings
from tests.servers.http import RangeFileServer, TileServer
from tests.servers.imagery import ORIGIN, make_xyz_tiles

from ..test_georeference_truth import ColourEmbedder
from .conftest import SCENE_CRS, patch_bounds

SCALE_AT_ZOOM_0 = 559082264.0287178  # the GoogleMapsCompatible well-known scale set (OGC WMTS 1.0, annex E)


def capabilities(tiles_url: str, top_zoom: int) -> str:
    """A WMTS 1.0 capabilities document of one layer "ortho" in GoogleMapsCompatible, zoom 0 to ``top_zoom``."""
    matrices = "".join(
        f"<TileMatrix><ows:Identifier>{z}</ows:Identifier><ScaleDenominator>{SCALE_AT_ZOOM_0 / 2**z!r}"
        f"</ScaleDenominator><TopLeftCorner>{-ORIGIN!r} {ORIGIN!r}</TopLeftCorner><TileWidth>256</TileWidth>"
        f"<TileHeight>256</TileHeight><MatrixWidth>{2**z}</MatrixWidth><MatrixHeight>{2**z}</MatrixHeight>"
        "</TileMatrix>" for z in range(top_zoom + 1))
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Capabilities xmlns="http://www.opengis.net/wmts/1.0" '
        'xmlns:ows="http://www.opengis.net/ows/1.1" version="1.0.0"><Contents><Layer>'
        "<ows:Identifier>ortho</ows:Identifier><Style isDefault=\"true\"><ows:Identifier>default</ows:Identifier>"
        "</Style><Format>image/png</Format><TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet>"
        f'</TileMatrixSetLink><ResourceURL format="image/png" resourceType="tile" template="{tiles_url}/'
        '{TileMatrix}/{TileCol}/{TileRow}.png"/></Layer><TileMatrixSet>'
        "<ows:Identifier>GoogleMapsCompatible</ows:Identifier>"
        f"<ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>{matrices}</TileMatrixSet>"
        "</Contents></Capabilities>")


def test_a_wmts_layer_is_read_and_the_patch_found_where_it_is(scene_tif: Path, tmp_path: Path) -> None:
    info = make_xyz_tiles(scene_tif, tmp_path / "tiles", zoom=18)
    embedder = ColourEmbedder()
    with TileServer(tmp_path / "tiles") as tiles, RangeFileServer(tmp_path / "service") as service:
        (tmp_path / "service").mkdir(exist_ok=True)
        (tmp_path / "service" / "WMTSCapabilities.xml").write_text(capabilities(f"{tiles.base_url}/tiles", 18))
        source = ("crs=EPSG:3857&format=image/png&layers=ortho&styles=default&tileMatrixSet=GoogleMapsCompatible"
                  f"&url={service.url('WMTSCapabilities.xml')}")
        tiling = TilingSettings(tile_size=64, area=info.footprint_3857)
        index = open_index(build_index(source, IndexSettings(tiling=tiling), tmp_path / "ix", embedder=embedder).path)
        assert 0 < tiles.count("/tiles/18/") <= info.written and tiles.count("/tiles/") == tiles.count("/tiles/18/")
    found = search(index, embedder, "red", top_k=50, threshold=0.2, templates=None)
    patch = box(*transform_bounds(SCENE_CRS, "EPSG:3857", *patch_bounds()))
    assert len(found.regions) == 1 and shape(found.regions[0].geometry).contains(patch.centroid)
    assert patch.buffer(64 * 0.75, join_style="mitre").contains(shape(found.regions[0].geometry))
    source_record = index.manifest["raster"]["source"]
    assert source_record["kind"] == "wmts" and source_record["resolution"] == info.pixel_m
