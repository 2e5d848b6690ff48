"""Real HTTP servers on 127.0.0.1 for web-imagery tests: an XYZ tile server and a byte-range file server.

Standard library only: the engine tests and the QGIS plugin tests (whose Python has no rasterio) both import
this module. Each server runs in a process of its own (see ``tests.servers.child`` for why), listens on a
free port (or a given one), speaks HTTP/1.1 with keep-alive and logs every request. The fault knobs can be
changed while it runs, so a test can make a server slow, flaky or refusing in the middle of a build;
``stop()`` then ``start()`` brings it back on the same port::

    with TileServer(root) as tiles:
        tiles.fail_first(2, 503)
        ... read tiles.url_template ...
        assert tiles.count() == ...
"""

from __future__ import annotations

from pathlib import Path

from .backend import LoggedRequest, blank_png, parse_range
from .child import ServerProcess

__all__ = ["LoggedRequest", "RangeFileServer", "ServerProcess", "TileServer", "blank_png", "parse_range"]


class TileServer(ServerProcess):
    """XYZ tiles from ``root/{z}/{x}/{y}.{ext}`` at ``/tiles/{z}/{x}/{y}.{ext}``; 404 for a missing tile.

    ``ext`` is the file extension ("png" or "jpg"; "jpeg" means "jpg", as the tile maker writes). With
    ``blank = True`` every tile is answered with ``root/blank.{ext}`` (the uniform white tile the tile maker
    writes), or for PNG without that file a white 256-pixel PNG, as a server that returns blank tiles.
    """

    backend = "tests.servers.backend:TileBackend"
    default_prefix = "/tiles/"

    def __init__(self, root: Path, ext: str = "png", port: int = 0) -> None:
        self.root = Path(root)
        self.ext = "jpg" if ext.lower() == "jpeg" else ext.lower()
        self._blank = False
        super().__init__(port, root=str(self.root.resolve()), ext=self.ext)

    @property
    def url_template(self) -> str:
        """The XYZ URL with literal ``{z}/{x}/{y}``, as QGIS's XYZ layers and GDAL take it."""
        return f"{self.base_url}/tiles/{{z}}/{{x}}/{{y}}.{self.ext}"

    @property
    def gdal_template(self) -> str:
        """The same URL in the ``${z}/${x}/${y}`` form of a GDAL WMS-driver (TMS service) description."""
        return f"{self.base_url}/tiles/${{z}}/${{x}}/${{y}}.{self.ext}"

    def gdal_wms_xml(self, zoom: int, bands: int = 3, tile_px: int = 256) -> str:
        """A GDAL WMS-driver description (TMS service: the XYZ scheme, y from the top) of the tiles at ``zoom``.

        A reference client for checking the server and the tile maker; 404 reads as an empty tile.
        """
        world = 20037508.342789244
        return (
            f"<GDAL_WMS><Service name='TMS'><ServerUrl>{self.gdal_template}</ServerUrl></Service><DataWindow>"
            f"<UpperLeftX>{-world}</UpperLeftX><UpperLeftY>{world}</UpperLeftY><LowerRightX>{world}</LowerRightX>"
            f"<LowerRightY>{-world}</LowerRightY><TileLevel>{zoom}</TileLevel><TileCountX>1</TileCountX>"
            "<TileCountY>1</TileCountY><YOrigin>top</YOrigin></DataWindow><Projection>EPSG:3857</Projection>"
            f"<BlockSizeX>{tile_px}</BlockSizeX><BlockSizeY>{tile_px}</BlockSizeY><BandsCount>{bands}</BandsCount>"
            "<ZeroBlockHttpCodes>404</ZeroBlockHttpCodes></GDAL_WMS>"
        )

    def tile_path(self, z: int, x: int, y: int) -> str:
        """The request path of one tile (for ``always(code, paths=[...])`` and log checks)."""
        return f"/tiles/{z}/{x}/{y}.{self.ext}"

    def tile_url(self, z: int, x: int, y: int) -> str:
        return self.base_url + self.tile_path(z, x, y)

    @property
    def blank(self) -> bool:
        """Whether every tile is answered blank (white)."""
        return self._blank

    @blank.setter
    def blank(self, on: bool) -> None:
        self._call("set", "blank", bool(on))
        self._blank = bool(on)

    def reset(self) -> None:
        super().reset()
        self._blank = False


class RangeFileServer(ServerProcess):
    """Files under ``root`` at ``/NAME``, as a static web server or a bucket: HEAD and single byte ranges.

    ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` answer 206 with ``Content-Range``; a range past the end
    answers 416; no (or a multi-part) range answers 200 with the whole file. Every answer carries
    ``Accept-Ranges: bytes``, ``Last-Modified`` and an ``ETag`` made of the size and modification time.
    A folder or a missing file answers 404 (so GDAL's folder listing finds nothing).
    """

    backend = "tests.servers.backend:RangeFileBackend"

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        super().__init__(port, root=str(self.root.resolve()))

    def url(self, name: str) -> str:
        """The URL of a file under the root (a relative path with forward slashes)."""
        return f"{self.base_url}/{name.lstrip('/')}"

    def vsicurl(self, name: str) -> str:
        """The GDAL path of a file under the root: ``/vsicurl/`` + its URL."""
        return "/vsicurl/" + self.url(name)
