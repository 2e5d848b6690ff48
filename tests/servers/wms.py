"""A real WMS for tests: MapServer's ``mapserv`` CGI program behind a small standard-library HTTP gateway.

Standard library only (imported from the engine and the QGIS test environments). The raster's extent and
size are passed in, since this side may have no rasterio to read them. Like the other test servers, the
gateway runs in a process of its own (``tests.servers.child``) and runs ``mapserv`` once per request.

MapServer 8 (Debian 12's ``mapserver-bin``) will not run without a config file: ``MAPSERVER_CONFIG_FILE``
names one, and its ``ENV`` block sets ``MS_MAPFILE`` so requests need no ``map=`` parameter (MapServer 8 only
honours ``MS_MAPFILE`` from the config, not from the process environment). MapServer 7 reads ``MS_MAPFILE``
from the environment, so both are set. ``mapserv`` runs with a minimal environment: PROJ and GDAL settings of
the calling Python (pip wheels bundle their own PROJ database) must not leak into Debian's libraries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from .backend import HOST, Backend, Reply, error_reply
from .child import ServerProcess

GEOGRAPHIC_EPSG = frozenset({4326, 4258, 4269, 4283, 4979})
PASSED_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")

_MAPFILE = """MAP
  NAME "test_wms"
  EXTENT {extent}
  SIZE {width} {height}
  UNITS {units}
  IMAGECOLOR 255 255 255
  PROJECTION "init=epsg:{epsg}" END
  OUTPUTFORMAT NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGB EXTENSION "png" END
  OUTPUTFORMAT
    NAME "jpeg" DRIVER "AGG/JPEG" MIMETYPE "image/jpeg" IMAGEMODE RGB EXTENSION "jpg"
    FORMATOPTION "QUALITY=90"
  END
  WEB
    METADATA
      "wms_title" "test WMS"
      "wms_onlineresource" "{url}"
      "wms_srs" "{srs}"
      "wms_enable_request" "*"
      "wms_getmap_formatlist" "image/png,image/jpeg"
    END
  END
  LAYER
    NAME "{layer}"
    TYPE RASTER
    STATUS ON
    DATA "{data}"
    EXTENT {extent}
    PROJECTION "init=epsg:{epsg}" END
{processing}    METADATA
      "wms_title" "{layer}"
      "wms_srs" "{srs}"
    END
  END
END
"""


def mapserv_binary() -> str | None:
    """The ``mapserv`` program on PATH (or the usual Debian place), or None."""
    found = shutil.which("mapserv")
    if found:
        return found
    return "/usr/bin/mapserv" if os.access("/usr/bin/mapserv", os.X_OK) else None


def parse_cgi_output(output: bytes) -> Reply:
    """A CGI answer (headers, blank line, body) as a reply; ``Status:`` sets the code (default 200)."""
    cuts = [(output.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if output.find(sep) >= 0]
    if not cuts:
        return error_reply(502)
    at, sep = min(cuts)
    status, headers = 200, {}
    for line in output[:at].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.split()[0])
        elif name.strip():
            headers[name.strip()] = value.strip()
    return Reply(status, output[at + len(sep):], headers)


class WmsBackend(Backend):
    """The CGI gateway, inside the server process: writes the mapfile once the port is known, runs mapserv."""

    def __init__(
        self, raster: str, epsg: int, extent: list[float], size: list[int], layer: str, processing: list[str],
    ) -> None:
        self.raster, self.epsg, self.extent, self.size = raster, epsg, extent, size
        self.layer, self.processing = layer, processing
        self._folder = tempfile.TemporaryDirectory(prefix="test-wms-")
        self.mapfile = Path(self._folder.name) / "wms.map"
        self.config = Path(self._folder.name) / "mapserver.conf"
        super().__init__()

    def start(self, port: int | None = None) -> WmsBackend:
        """Listen, then write the mapfile: its online-resource URL (where clients send GetMap) needs the port."""
        super().start(port)
        srs = " ".join(dict.fromkeys(f"EPSG:{code}" for code in (self.epsg, 3857, 4326)))
        processing = "".join(f'    PROCESSING "{item}"\n' for item in self.processing)
        self.mapfile.write_text(_MAPFILE.format(
            extent=" ".join(repr(float(v)) for v in self.extent), width=self.size[0], height=self.size[1],
            units="DD" if self.epsg in GEOGRAPHIC_EPSG else "METERS", epsg=self.epsg, url=f"{self.base_url}/wms?",
            srs=srs, layer=self.layer, data=self.raster, processing=processing,
        ), encoding="utf-8")
        self.config.write_text(f'CONFIG\n  ENV\n    MS_MAPFILE "{self.mapfile}"\n  END\nEND\n', encoding="utf-8")
        return self

    def close(self) -> None:
        super().close()
        self._folder.cleanup()

    def _environment(self, query: str) -> dict[str, str]:
        """The CGI environment of one request: the query, the config and mapfile, where the server is."""
        environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
        environment.update({
            "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "QUERY_STRING": query,
            "SCRIPT_NAME": "/wms", "SERVER_NAME": HOST, "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/1.1", "MAPSERVER_CONFIG_FILE": str(self.config), "MS_MAPFILE": str(self.mapfile),
        })
        return environment

    def answer(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> Reply:
        """Run ``mapserv`` once for the request (HEAD runs it too; the body is then dropped)."""
        binary = mapserv_binary()
        if path.rstrip("/") != "/wms" or binary is None:
            return error_reply(404 if binary else 503)
        done = subprocess.run(  # a fixed program; the query goes in the environment
            [binary], env=self._environment(urlsplit(handler.path).query), capture_output=True, timeout=120,
            check=False,
        )
        if done.returncode and not done.stdout:
            sys.stderr.write(done.stderr.decode(errors="replace"))
        return parse_cgi_output(done.stdout)


class MapServerWMS(ServerProcess):
    """A WMS 1.1.1 / 1.3.0 of one raster layer, at ``url`` (``http://127.0.0.1:PORT/wms?``).

    ``extent`` is (left, bottom, right, top) in the raster's CRS ``EPSG:epsg`` and ``size`` its (width,
    height); GetMap is offered in that CRS, EPSG:3857 and EPSG:4326, as PNG and JPEG (RGB; outside the raster
    and transparent pixels are white: MapServer applies an alpha band itself). ``processing`` adds MapServer
    PROCESSING directives, e.g. ``["BANDS=1,2,3", "RESAMPLE=BILINEAR"]``. The fault knobs and request log of
    ``ServerProcess`` apply. Check ``unavailable_reason()`` first (skip when MapServer is not installed).
    """

    backend = "tests.servers.wms:WmsBackend"
    default_prefix = "/wms"

    def __init__(
        self, raster: Path, epsg: int, extent: tuple[float, float, float, float], size: tuple[int, int],
        layer: str = "ortho", processing: list[str] | None = None, port: int = 0,
    ) -> None:
        for text in (str(raster), layer, *(processing or [])):
            if '"' in text:
                raise ValueError(f"a double quote cannot go into a mapfile: {text!r}")
        self.raster = Path(raster).resolve()
        self.epsg, self.extent, self.size, self.layer = epsg, tuple(extent), tuple(size), layer
        super().__init__(
            port, raster=str(self.raster), epsg=int(epsg), extent=[float(v) for v in extent],
            size=[int(v) for v in size], layer=layer, processing=list(processing or []),
        )

    @staticmethod
    def available() -> bool:
        """Whether ``mapserv`` is installed (Debian package ``mapserver-bin``)."""
        return mapserv_binary() is not None

    @staticmethod
    def unavailable_reason() -> str | None:
        """None when MapServer can run, else why not (a skip reason)."""
        if mapserv_binary() is None:
            return "MapServer's mapserv is not installed (Debian package mapserver-bin; make servers)"
        return None

    @property
    def url(self) -> str:
        """The WMS endpoint, ready for ``SERVICE=WMS&...`` to be appended."""
        return f"{self.base_url}/wms?"

    def start(self) -> MapServerWMS:
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        super().start()
        return self
