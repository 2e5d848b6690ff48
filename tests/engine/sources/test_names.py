"""What a source string names, what of it may be written down, and the pixel grid a web layer is read on."""

from __future__ import annotations

import math

import pytest

from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.sources import names, web
from clip_search_plugin.engine.sources.names import hide_urls, public_name, read_source

SECRET = "s3cret-Value"


@pytest.mark.parametrize(("text", "kind"), [
    ("/vsicurl/https://example.org/ortho.tif", names.REMOTE),
    ("https://example.org/ortho.tif", names.REMOTE),
    ("/vsis3/bucket/ortho.tif", names.REMOTE),
    ("type=xyz&url=https://tiles.example.org/{z}/{x}/{y}.jpg&zmax=19&zmin=0", names.XYZ),
    ("contextualWMSLegend=0&crs=EPSG:25832&format=image/jpeg&layers=dop20&styles&url=https://example.org/wms",
     names.WMS),
    ("crs=EPSG:3857&format=image/png&layers=ortho&styles=default&tileMatrixSet=GoogleMapsCompatible"
     "&url=https://example.org/WMTSCapabilities.xml", names.WMTS),
    ("crs='EPSG:3857' format='PNG32' layer='0' url='https://example.org/arcgis/rest/services/Ortho/MapServer'",
     names.ARCGIS),
    ("<GDAL_WMS><Service name=\"TMS\"><ServerUrl>https://t/${z}/${x}/${y}</ServerUrl></Service></GDAL_WMS>",
     names.GDAL_WEB),
    ("WMTS:https://example.org/WMTSCapabilities.xml,layer=ortho", names.GDAL_WEB),
])
def test_each_kind_of_source_is_told_apart(text: str, kind: str) -> None:
    assert read_source(text).kind == kind


def test_local_paths_are_files_or_folders(tmp_path: object) -> None:
    assert read_source(str(tmp_path)).kind == names.FOLDER
    assert read_source(f"{tmp_path}/ortho.tif").kind == names.FILE


@pytest.mark.parametrize("text", [
    f"type=xyz&url=https://t.example.org/{{z}}/{{x}}/{{y}}.png?apikey={SECRET}&zmax=19",
    f"type=xyz&url=https://t.example.org/{{z}}/{{x}}/{{y}}.png&username=bob&password={SECRET}&zmax=19",
    f"authcfg=abc1234&type=xyz&url=https://t.example.org/{{z}}/{{x}}/{{y}}.png&http-header:X-Key={SECRET}",
    f"/vsicurl/https://bob:{SECRET}@example.org/ortho.tif",
    f"https://example.org/ortho.tif?X-Amz-Signature={SECRET}&X-Amz-Credential=AKIA",
    f"crs='EPSG:3857' password='{SECRET}' url='https://example.org/MapServer?token={SECRET}'",
    f"<GDAL_WMS><Service name=\"TMS\"><ServerUrl>https://t/${{z}}?key={SECRET}</ServerUrl></Service>"
    f"<UserPwd>bob:{SECRET}</UserPwd></GDAL_WMS>",
])
def test_no_credential_survives_in_the_public_name(text: str) -> None:
    public = public_name(text)
    assert SECRET not in public and "abc1234" not in public and "bob" not in public
    assert "example.org" in public or "https://t" in public


def test_a_source_without_credentials_is_its_own_public_name() -> None:
    text = "type=xyz&url=http://127.0.0.1:8000/tiles/{z}/{x}/{y}.png&zmax=18&zmin=0"
    assert public_name(text) == text
    assert public_name("url=http://127.0.0.1:8000/wms?&layers=a") .startswith("url=http://127.0.0.1:8000/wms?")


def test_gdal_messages_lose_the_credentials_of_urls_in_them() -> None:
    said = f"Unable to download https://example.org/1/2/3.png?token={SECRET}. HTTP status code: 403"
    assert SECRET not in hide_urls(said) and "HTTP status code: 403" in hide_urls(said)


def test_credentials_of_a_qgis_source_are_read_apart() -> None:
    found = read_source(f"type=xyz&url=https://t.example.org/{{z}}/{{x}}/{{y}}.png&username=bob&password={SECRET}"
                        "&http-header:referer=https://example.org/&referer=https://qgis.org/")
    assert (found.user, found.password) == ("bob", SECRET)
    assert "referer: https://example.org/" in found.headers and "Referer: https://qgis.org/" in found.headers


def test_the_xyz_grid_reads_the_zoom_that_is_at_least_as_fine_as_asked_and_snaps_to_its_pixels() -> None:
    name = read_source("type=xyz&url=https://t/{z}/{x}/{y}.png&zmax=19&zmin=0")
    top = web.level_resolution(19, 256)
    grid = web.xyz_grid(name, (1000.3, 2000.7, 1500.0, 2500.0), None)
    assert (grid.zoom, grid.resolution, grid.native_resolution) == (19, top, top)
    for value in grid.extent:  # on the zoom's own pixel grid, from the world's corner
        assert abs((value + web.MERCATOR_HALF) / top - round((value + web.MERCATOR_HALF) / top)) < 1e-6
    assert grid.extent[0] <= 1000.3 and grid.extent[2] >= 1500.0
    coarse = web.xyz_grid(name, (1000.3, 2000.7, 1500.0, 2500.0), 1.0)
    assert coarse.zoom == 18 and web.level_resolution(18, 256) <= 1.0 < web.level_resolution(17, 256)
    side = web.level_resolution(18, 256) * 256
    assert coarse.requests == math.prod(
        math.ceil(hi / side - 1e-9) - math.floor(lo / side) for lo, hi in
        ((coarse.extent[0] + web.MERCATOR_HALF, coarse.extent[2] + web.MERCATOR_HALF),
         (web.MERCATOR_HALF - coarse.extent[3], web.MERCATOR_HALF - coarse.extent[1])))
    capped = web.xyz_grid(name, (0.0, 0.0, 10.0, 10.0), 0.01)
    assert capped.zoom == 19  # no finer zoom than the layer offers


@pytest.mark.parametrize(("bounds", "resolution", "words"), [
    ((10.0, 0.0, 0.0, 10.0), 1.0, "xmin < xmax"),
    ((0.0, 0.0, 10.0, 10.0), -1.0, "positive number"),
    ((0.0, 0.0, 1e7, 1e7), 0.01, "smaller area or a coarser resolution"),
])
def test_a_grid_that_cannot_be_is_refused(bounds: tuple[float, float, float, float], resolution: float,
                                          words: str) -> None:
    name = read_source("crs=EPSG:3857&layers=a&url=https://example.org/wms")
    with pytest.raises(InputError, match=words):
        web.wms_grid(name, bounds, resolution)


def test_xyz_addresses_in_gdal_words() -> None:
    assert web.tms_url("https://t/{z}/{x}/{y}.png") == "https://t/${z}/${x}/${y}.png"
    assert web.tms_url("https://t/{z}/{x}/{-y}.png") == "https://t/${z}/${x}/${y}.png"
    with pytest.raises(InputError, match="quadkey"):
        web.tms_url("https://t/{q}.png")
    with pytest.raises(InputError, match=r"has no \{x\}"):
        web.tms_url("https://t/{z}/{y}.png")
