"""The shared test servers and data makers, checked for real: the web-imagery tests stand on them.

Tiles are decoded, GDAL reads the COG through /vsicurl/ and the XYZ tiles through its WMS driver, MapServer
answers real GetMap requests, and the tile maker's georeferencing is checked against a marker painted into a
copy of a shared raster and located independently (point transform plus the standard tile formula).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.warp import transform
from rasterio.windows import from_bounds

from tests.servers.http import RangeFileServer, TileServer, parse_range
from tests.servers.imagery import ORIGIN, XyzInfo, cut_sheets, make_cog, make_xyz_tiles, pixel_size_m, tile_of, zoom_for
from tests.servers.wms import MapServerWMS

from ..conftest import REPO, shared_raster

MARKER = (slice(100, 104), slice(200, 204))  # rows, columns of a magenta square painted into a copy
REMOTE_GDAL = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
               "GDAL_HTTP_TIMEOUT": "20"}


def fetch(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, method=method, headers={k.replace("_", "-"): v for k, v in headers.items()})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def decode(data: bytes) -> np.ndarray:
    """The pixels of a PNG or JPEG answer (which carries no georeferencing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(data) as memory, memory.open() as image:
            return image.read()


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the Colorado raster with a 4 x 4 magenta square at MARKER."""
    source = shared_raster("colorado_rgb_015m.tif")
    path = tmp_path_factory.mktemp("marked") / "marked.tif"
    with rasterio.open(source) as src:
        data, profile = src.read(), src.profile
    data[:, MARKER[0], MARKER[1]] = np.array([255, 0, 255], np.uint8)[:, None, None]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def xyz(marked: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, XyzInfo]:
    root = tmp_path_factory.mktemp("xyz")
    return root, make_xyz_tiles(marked, root, zoom_for(marked))


@pytest.fixture()
def tiles(xyz: tuple[Path, XyzInfo]) -> Iterator[TileServer]:
    with TileServer(xyz[0]) as server:
        yield server


def centre_tile(info: XyzInfo) -> tuple[int, int]:
    left, bottom, right, top = info.footprint_3857
    return tile_of((left + right) / 2, (bottom + top) / 2, info.zoom)


# the tile server -----------------------------------------------------------------------------------------------
def test_tile_server_serves_a_decodable_tile_with_imagery(tiles: TileServer, xyz: tuple[Path, XyzInfo]) -> None:
    x, y = centre_tile(xyz[1])
    status, headers, body = fetch(tiles.url_template.format(z=xyz[1].zoom, x=x, y=y))
    assert (status, headers["Content-Type"], int(headers["Content-Length"])) == (200, "image/png", len(body))
    image = decode(body)
    assert image.shape == (3, 256, 256)
    assert image.std() > 10, "a tile in the middle of the raster holds imagery, not a blank"
    assert tiles.requests == [("GET", tiles.tile_path(xyz[1].zoom, x, y), 200)]


def test_a_missing_tile_or_a_wrong_path_is_404(tiles: TileServer) -> None:
    assert fetch(tiles.tile_url(3, 0, 0))[0] == 404
    assert fetch(tiles.base_url + "/tiles/nonsense")[0] == 404
    assert fetch(tiles.base_url + "/")[0] == 404
    assert tiles.count() == 2 and tiles.count("/") == 3


def test_fail_first_answers_the_code_n_times_per_path_then_serves(tiles: TileServer, xyz: tuple[Path, XyzInfo]) -> None:
    x, y = centre_tile(xyz[1])
    tiles.fail_first(2, 503)
    assert [fetch(tiles.tile_url(xyz[1].zoom, x, y))[0] for _ in range(3)] == [503, 503, 200]
    assert fetch(tiles.tile_url(xyz[1].zoom, x, y + 1))[0] == 503, "each path has its own count"
    tiles.fail_first(1, 429, retry_after=2)
    status, headers, _ = fetch(tiles.tile_url(xyz[1].zoom, x, y))
    assert (status, headers["Retry-After"]) == (429, "2")
    assert fetch(tiles.tile_url(xyz[1].zoom, x, y))[0] == 200


def test_always_refuses_every_request_or_the_listed_paths(tiles: TileServer, xyz: tuple[Path, XyzInfo]) -> None:
    z, (x, y) = xyz[1].zoom, centre_tile(xyz[1])
    tiles.always(403)
    assert {fetch(tiles.tile_url(z, x, y + d))[0] for d in (0, 1)} == {403}
    tiles.always(500, paths=[tiles.tile_path(z, x, y)])
    assert [fetch(tiles.tile_url(z, x, y + d))[0] for d in (0, 1)] == [500, 200]
    tiles.reset()
    assert fetch(tiles.tile_url(z, x, y))[0] == 200 and len(tiles.requests) == 1


def test_delay_and_blank_knobs(tiles: TileServer, xyz: tuple[Path, XyzInfo]) -> None:
    z, (x, y) = xyz[1].zoom, centre_tile(xyz[1])
    tiles.delay_s = 0.3
    began = time.monotonic()
    assert fetch(tiles.tile_url(z, x, y))[0] == 200
    assert time.monotonic() - began >= 0.3
    tiles.delay_s = 0
    tiles.blank = True
    status, _, body = fetch(tiles.tile_url(z, x, y))
    image = decode(body)
    assert status == 200 and image.shape == (3, 256, 256) and (image == 255).all()


def test_restart_on_the_same_port_and_a_cut_in_flight_request(tiles: TileServer, xyz: tuple[Path, XyzInfo]) -> None:
    z, (x, y) = xyz[1].zoom, centre_tile(xyz[1])
    port, outcome = tiles.port, []
    tiles.delay_s = 1.0
    request = threading.Thread(target=lambda: outcome.append(_status_or_error(tiles.tile_url(z, x, y))))
    request.start()
    time.sleep(0.3)
    tiles.stop()
    request.join(10)
    assert outcome and isinstance(outcome[0], Exception), f"a request in flight when the server stops fails: {outcome}"
    with pytest.raises(urllib.error.URLError):
        fetch(tiles.tile_url(z, x, y))
    tiles.start()
    tiles.delay_s = 0
    assert tiles.port == port and fetch(tiles.tile_url(z, x, y))[0] == 200


def _status_or_error(url: str) -> int | Exception:
    try:
        return fetch(url)[0]
    except (OSError, urllib.error.URLError) as error:
        return error


# the tile maker ------------------------------------------------------------------------------------------------
def test_zoom_for_the_015m_raster_is_20() -> None:
    assert zoom_for(shared_raster("colorado_rgb_015m.tif")) == 20
    assert zoom_for(shared_raster("colorado_rgb_015m.tif"), pixel_m=pixel_size_m(17) * 1.1) == 17


def test_tiles_cover_the_footprint_and_hold_the_raster(xyz: tuple[Path, XyzInfo], marked: Path) -> None:
    root, info = xyz
    files = sorted(root.glob(f"{info.zoom}/*/*.png"))
    assert len(files) == info.written > 0 and (root / "blank.png").is_file()
    x, y = centre_tile(info)
    assert info.x_range[0] <= x <= info.x_range[1] and info.y_range[0] <= y <= info.y_range[1]
    assert (root / str(info.zoom) / str(x) / f"{y}.png").is_file()
    left, bottom, right, top = info.tiles_bounds_3857
    fl, fb, fr, ft = info.footprint_3857
    assert left <= fl < fr <= right and bottom <= fb < ft <= top
    mosaic = _mosaic(root, info)
    inner = mosaic[:, mosaic.min(axis=0) < 255]  # drop the white outside the raster
    with rasterio.open(marked) as src:
        assert np.abs(inner.mean(axis=1) - src.read().reshape(3, -1).mean(axis=1)).max() < 6


def _mosaic(root: Path, info: XyzInfo) -> np.ndarray:
    """The written tiles put back together on their grid (white where no tile was written)."""
    (x0, x1), (y0, y1), px = info.x_range, info.y_range, info.tile_px
    mosaic = np.full((3, (y1 - y0 + 1) * px, (x1 - x0 + 1) * px), 255, np.uint8)
    for path in root.glob(f"{info.zoom}/*/*.{info.ext}"):
        x, y = int(path.parent.name), int(path.stem)
        mosaic[:, (y - y0) * px:(y - y0 + 1) * px, (x - x0) * px:(x - x0 + 1) * px] = decode(path.read_bytes())
    return mosaic


def _expected_marker_pixel(marked: Path, info: XyzInfo) -> tuple[float, float]:
    """Where the marker's centre should be in the mosaic (column, row), from a point transform only."""
    with rasterio.open(marked) as src:
        cx, cy = src.transform @ ((MARKER[1].start + MARKER[1].stop) / 2, (MARKER[0].start + MARKER[0].stop) / 2)
        (mx,), (my,) = transform(src.crs, "EPSG:3857", [cx], [cy])
    tx, ty = tile_of(mx, my, info.zoom)
    side = 2 * ORIGIN / 2**info.zoom
    column = (tx - info.x_range[0]) * info.tile_px + (mx - (-ORIGIN + tx * side)) / info.pixel_m
    row = (ty - info.y_range[0]) * info.tile_px + ((ORIGIN - ty * side) - my) / info.pixel_m
    return column, row


def _magenta_centre(image: np.ndarray) -> tuple[float, float]:
    rows, columns = np.nonzero((image[0] > 180) & (image[1] < 90) & (image[2] > 180))
    assert rows.size > 0, "the magenta marker is in the tiles"
    return columns.mean(), rows.mean()


def test_a_marker_lands_within_a_pixel_of_where_the_tile_formula_puts_it(
    xyz: tuple[Path, XyzInfo], marked: Path,
) -> None:
    root, info = xyz
    found = np.array(_magenta_centre(_mosaic(root, info)))
    expected = np.array(_expected_marker_pixel(marked, info))
    assert np.abs(found - expected).max() <= 1.0, (found, expected)


def test_gdal_reads_the_tiles_through_the_server_where_they_belong(
    tiles: TileServer, xyz: tuple[Path, XyzInfo], marked: Path,
) -> None:
    """GDAL's WMS driver (TMS service, the XYZ scheme) agrees with the maker on where the marker is."""
    root, info = xyz
    with rasterio.Env(GDAL_HTTP_TIMEOUT="20"), rasterio.open(tiles.gdal_wms_xml(info.zoom)) as remote:
        window = from_bounds(*info.tiles_bounds_3857, transform=remote.transform).round_offsets().round_lengths()
        image = remote.read(window=window)
    assert image.shape[1:] == _mosaic(root, info).shape[1:]
    assert np.abs(np.array(_magenta_centre(image)) - _expected_marker_pixel(marked, info)).max() <= 1.0
    assert tiles.count(status=200) == info.written


def test_jpeg_tiles_are_served_as_jpeg(tmp_path: Path) -> None:
    info = make_xyz_tiles(shared_raster("drone_rgba_alpha.tif"), tmp_path, 18, fmt="jpeg")
    x, y = centre_tile(info)
    with TileServer(tmp_path, ext="jpeg") as server:
        status, headers, body = fetch(server.tile_url(info.zoom, x, y))
        server.blank = True
        blank = decode(fetch(server.tile_url(info.zoom, x, y))[2])
    assert (status, headers["Content-Type"], server.url_template.endswith("{y}.jpg")) == (200, "image/jpeg", True)
    assert decode(body).shape == (3, 256, 256) and blank.min() >= 250


# the range file server and the COG maker -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cog(shared_raster("drone_rgba_alpha.tif"), tmp_path_factory.mktemp("cog") / "drone.tif")


@pytest.mark.parametrize(("header", "span"), [
    ("bytes=0-9", (0, 9)), ("bytes=90-", (90, 99)), ("bytes=-5", (95, 99)), ("bytes=95-500", (95, 99)),
    ("bytes=100-", (-1, -1)), ("bytes=-0", (-1, -1)), ("bytes=5-2", None), ("bytes=0-1,4-5", None), (None, None),
])
def test_parse_range(header: str | None, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == span


def test_the_cog_maker_writes_a_cog_with_overviews(cog: Path) -> None:
    with rasterio.open(cog) as made, rasterio.open(shared_raster("drone_rgba_alpha.tif")) as source:
        assert made.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and made.overviews(1)
        assert made.block_shapes[0] == (256, 256) and made.colorinterp == source.colorinterp
        assert np.array_equal(made.read(), source.read())


def test_range_requests_head_and_errors(cog: Path) -> None:
    data = cog.read_bytes()
    with RangeFileServer(cog.parent) as server:
        status, headers, body = fetch(server.url(cog.name), Range="bytes=100-199")
        assert (status, body, headers["Content-Range"]) == (206, data[100:200], f"bytes 100-199/{len(data)}")
        assert fetch(server.url(cog.name), Range="bytes=-10")[2] == data[-10:]
        status, headers, body = fetch(server.url(cog.name), method="HEAD")
        assert (status, int(headers["Content-Length"]), body) == (200, len(data), b"")
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["ETag"] and headers["Last-Modified"]
        assert fetch(server.url(cog.name), Range=f"bytes={len(data)}-")[0] == 416
        assert fetch(server.url(cog.name))[2] == data
        assert fetch(server.base_url + "/")[0] == 404 and fetch(server.url("missing.tif"))[0] == 404
        server.fail_first(1, 503)
        assert [fetch(server.url(cog.name), method="HEAD")[0] for _ in range(2)] == [503, 200]
        error_bodies = len(b"416 Requested Range Not Satisfiable\n") + 2 * len(b"404 Not Found\n")  # HEAD: none
        assert server.bytes_sent() == 100 + 10 + len(data) + error_bodies


def test_gdal_reads_the_cog_through_vsicurl_with_range_requests_only(cog: Path) -> None:
    with RangeFileServer(cog.parent) as server:
        with rasterio.Env(**REMOTE_GDAL), rasterio.open(server.vsicurl(cog.name)) as remote:
            pixels = remote.read()
            overview = remote.read(out_shape=(remote.count, remote.height // 4, remote.width // 4))
        log = server.log
    with rasterio.open(cog) as local:
        assert np.array_equal(pixels, local.read())
        assert overview.shape[1:] == (local.height // 4, local.width // 4)
    gets = [r for r in log if r.method == "GET"]
    assert gets and all(r.status == 206 and r.range for r in gets), log
    assert sum(r.sent for r in gets) < 1.1 * cog.stat().st_size
    assert ("HEAD", f"/{cog.name}") in {(r.method, r.path) for r in log}


def test_vsicurl_without_options_lists_the_folder_and_still_reads(cog: Path) -> None:
    """GDAL's default folder listing and side-car probing get 404s; the server must answer them (no hang)."""
    with RangeFileServer(cog.parent) as server:
        with rasterio.Env(GDAL_HTTP_TIMEOUT="20"), rasterio.open(server.vsicurl(cog.name)) as remote:
            assert remote.read(1, window=((0, 64), (0, 64))).shape == (64, 64)
        assert ("GET", "/", 404) in server.requests


# the MapServer WMS -----------------------------------------------------------------------------------------------
@pytest.fixture()
def wms() -> Iterator[MapServerWMS]:
    reason = MapServerWMS.unavailable_reason()
    if reason:
        pytest.skip(reason)
    raster = shared_raster("colorado_rgb_015m.tif")
    with rasterio.open(raster) as src:
        server = MapServerWMS(raster, src.crs.to_epsg(), tuple(src.bounds), (src.width, src.height))
    with server:
        yield server


def test_wms_capabilities_name_the_layer_and_this_server(wms: MapServerWMS) -> None:
    status, headers, body = fetch(wms.url + "SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities")
    text = body.decode()
    assert status == 200 and "xml" in headers["Content-Type"]
    assert "<Name>ortho</Name>" in text and wms.url in text and "EPSG:3857" in text


def test_wms_getmap_returns_the_rasters_pixels(wms: MapServerWMS) -> None:
    left, bottom, right, top = wms.extent
    query = (f"SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=ortho&STYLES=&CRS=EPSG:{wms.epsg}"
             f"&BBOX={left},{bottom},{right},{top}&WIDTH={wms.size[0]}&HEIGHT={wms.size[1]}&FORMAT=image/png")
    status, headers, body = fetch(wms.url + query)
    assert (status, headers["Content-Type"]) == (200, "image/png")
    image = decode(body).astype(int)
    with rasterio.open(wms.raster) as src:
        source = src.read().astype(int)
    assert image.shape == source.shape
    assert np.abs(image.mean(axis=(1, 2)) - source.mean(axis=(1, 2))).max() < 3
    assert np.abs(image - source).mean() < 3


def test_wms_getmap_in_web_mercator_as_jpeg(wms: MapServerWMS) -> None:
    with rasterio.open(wms.raster) as src:
        inner = (0.25, 0.25, 0.75, 0.75)  # the middle of the raster, away from the white outside
        cols = [src.width * f for f in inner[::2]]
        rows = [src.height * f for f in inner[1::2]]
        xs, ys = rasterio.transform.xy(src.transform, rows, cols, offset="ul")
        (x0, x1), (y1, y0) = transform(src.crs, "EPSG:3857", list(xs), list(ys))
        middle = src.read(window=((rows[0], rows[1]), (cols[0], cols[1]))).astype(float)
    query = (f"SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap&LAYERS=ortho&STYLES=&SRS=EPSG:3857"
             f"&BBOX={x0},{y0},{x1},{y1}&WIDTH=200&HEIGHT=120&FORMAT=image/jpeg")
    status, headers, body = fetch(wms.url + query)
    image = decode(body).astype(float)
    assert (status, headers["Content-Type"], image.shape) == (200, "image/jpeg", (3, 120, 200))
    assert np.abs(image.mean(axis=(1, 2)) - middle.mean(axis=(1, 2))).max() < 6
    assert wms.count() == 1


# sheets, the command line, the standard-library promise --------------------------------------------------------
@pytest.mark.parametrize(("name", "cols", "rows", "fmt"), [
    ("drone_rgba_alpha.tif", 20, 10, "GTiff"), ("colorado_rgb_015m.tif", 2, 2, "JP2OpenJPEG"),
])
def test_sheets_tile_the_raster_exactly(name: str, cols: int, rows: int, fmt: str, tmp_path: Path) -> None:
    """200 small GeoTIFF sheets (alpha kept), or lossless JPEG 2000 ones: same bounds, same pixel sums."""
    raster = shared_raster(name)
    sheets = cut_sheets(raster, tmp_path, cols=cols, rows=rows, fmt=fmt)
    assert len(set(sheets)) == cols * rows and sheets[cols + 1].stem == "sheet_r01_c01"
    with rasterio.open(raster) as src:
        bounds, total, kind = src.bounds, src.read().astype(np.int64).sum(axis=(1, 2)), (src.crs, src.colorinterp)
    edges, sums = [], np.zeros_like(total)
    for sheet in sheets:
        with rasterio.open(sheet) as part:
            assert (part.crs, part.colorinterp) == kind
            edges.append(part.bounds)
            sums += part.read().astype(np.int64).sum(axis=(1, 2))
    left, bottom, right, top = np.array(edges).T
    assert np.allclose((left.min(), bottom.min(), right.max(), top.max()), bounds, rtol=0, atol=1e-6)
    assert (sums == total).all()


def test_the_command_line_makes_tiles_for_tests_without_rasterio(tmp_path: Path) -> None:
    raster = shared_raster("colorado_rgb_015m.tif")
    done = subprocess.run(
        [sys.executable, "-m", "tests.servers.imagery", "xyz", str(raster), str(tmp_path), "--zoom", "19"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    summary = json.loads(done.stdout)
    assert summary["zoom"] == 19 and summary["written"] == len(list(tmp_path.glob("19/*/*.png"))) > 0


def test_the_http_modules_import_without_rasterio_or_numpy() -> None:
    """The QGIS side has no rasterio: importing the servers must not need it."""
    check = ("import sys, tests.servers.http, tests.servers.wms; "
             "assert not {'rasterio', 'numpy', 'osgeo'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", check], cwd=REPO, timeout=60, check=True)
