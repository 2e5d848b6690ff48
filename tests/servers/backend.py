"""The HTTP side of the test servers: what runs inside a server's own process (standard library only).

``Backend`` is a ``ThreadingHTTPServer`` on 127.0.0.1 speaking HTTP/1.1 with keep-alive (GDAL and QGIS read
through libcurl / Qt, which reuse connections), answering from daemon threads, keeping a request log and the
fault knobs. It runs in a child process driven by ``tests.servers.child``, never in the test's own process:
rasterio holds the GIL through some GDAL calls that do HTTP (after opening a /vsicurl/ file GDAL lists the
folder and probes side-car files), and a server thread in the same interpreter then cannot answer.
"""

from __future__ import annotations

import base64
import email.utils
import mimetypes
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, Self
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "tif": "image/tiff"}


class LoggedRequest(NamedTuple):
    """One answered request: what was asked and what was sent back (``sent``: body bytes)."""

    method: str
    path: str  # the request target as sent, query string included
    status: int
    sent: int
    range: str | None  # the Range header, when there was one


class Reply(NamedTuple):
    """What a server decided to answer; ``headers`` may set Content-Length itself (for HEAD)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = {}  # noqa: RUF012 - never mutated, replaced per reply


def error_reply(status: int, headers: dict[str, str] | None = None) -> Reply:
    """A short plain-text error answer with a body, so keep-alive clients know where it ends."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Reply(status, f"{status} {phrase}\n".encode(), {"Content-Type": "text/plain", **(headers or {})})


def blank_png(width: int = 256, height: int | None = None, rgb: tuple[int, int, int] = (255, 255, 255)) -> bytes:
    """A uniform RGB PNG, encoded with zlib + struct only (no imaging library on the QGIS side)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    height = width if height is None else height
    raw = (b"\x00" + bytes(rgb) * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


class _Http(ThreadingHTTPServer):
    """The socket server; reuses the address so a restart can bind the same port again at once."""

    allow_reuse_address = True
    daemon_threads = True
    owner: Backend

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut by ``stop()`` or by a client giving up are expected; stay quiet about them."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hands every GET and HEAD to the owning server; HTTP/1.1 so clients keep their connections."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection is dropped after this
    server: _Http

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is kept by the server, not printed per request."""

    def do_GET(self) -> None:
        self.server.owner._serve(self, "GET")

    def do_HEAD(self) -> None:
        self.server.owner._serve(self, "HEAD")


class Backend:
    """A server's lifecycle, request log and fault knobs; subclasses implement ``answer``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._connections: set[socket.socket] = set()
        self._port = 0
        self._httpd: _Http | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # lifecycle ------------------------------------------------------------------------------------------
    def start(self, port: int | None = None) -> Self:
        """Listen (again) on the same port; a first start with port 0 picks a free one and keeps it."""
        if self._httpd is not None:
            return self
        self._port = self._port if port is None else port
        httpd = _Http((HOST, self._port), _Handler)
        httpd.owner = self
        self._port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"{type(self).__name__}:{self._port}",
        )
        self._httpd = httpd
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections, as a server going down would."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        """The server process is ending: stop (subclasses also remove what they wrote)."""
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self._port}"

    # fault knobs -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to a well-behaved server with an empty log."""
        with self._lock:
            self.delay_s = 0.0
            self._always: tuple[int, frozenset[str] | None] | None = None
            self._fail: tuple[int, int, int | None] = (0, 503, None)
            self._fail_seen: dict[str, int] = {}
            self._basic: str | None = None
            self._log.clear()

    def fail_first(self, n: int, code: int = 503, retry_after: float | None = None) -> None:
        """The first ``n`` requests of each request target answer ``code`` (with Retry-After when given)."""
        with self._lock:
            self._fail = (n, code, None if retry_after is None else round(retry_after))
            self._fail_seen = {}

    def always(self, code: int | None, paths: Iterable[str] | None = None) -> None:
        """Every request (or those whose path, or full target, is in ``paths``) answers ``code``; None: off."""
        with self._lock:
            self._always = None if code is None else (code, frozenset(paths) if paths is not None else None)

    def require_basic(self, user: str | None, password: str = "") -> None:
        """Answer 401 to every request without these HTTP Basic credentials (None: open to all)."""
        with self._lock:
            self._basic = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _fault(self, path: str, target: str, authorization: str | None = None) -> Reply | None:
        with self._lock:
            if self._basic is not None and authorization != self._basic:
                return error_reply(401, {"WWW-Authenticate": 'Basic realm="test"'})
            if self._always is not None:
                code, paths = self._always
                if paths is None or path in paths or target in paths:
                    return error_reply(code)
            n, code, retry_after = self._fail
            seen = self._fail_seen.get(target, 0)
            if seen < n:
                self._fail_seen[target] = seen + 1
                return error_reply(code, {"Retry-After": str(retry_after)} if retry_after is not None else None)
        return None

    # request log -----------------------------------------------------------------------------------------
    def records(self) -> list[LoggedRequest]:
        """Every request answered so far, in order."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # serving ---------------------------------------------------------------------------------------------
    def answer(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> Reply:
        """The normal answer for ``path`` (URL-decoded, no query); subclasses override."""
        return error_reply(404)

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(connection)

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Delay, fault or answer; log before writing, so a client that has its reply sees it logged."""
        target = handler.path
        path = unquote(urlsplit(target).path)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        try:
            fault = self._fault(path, target, handler.headers.get("Authorization"))
            reply = fault or self.answer(handler, method, path)
        except Exception:  # noqa: BLE001 - a broken answer must still reach the client as a 500
            reply = error_reply(500)
        headers = {"Content-Length": str(len(reply.body)), **reply.headers}
        body = b"" if method == "HEAD" else reply.body
        with self._lock:
            self._log.append(LoggedRequest(method, target, reply.status, len(body), handler.headers.get("Range")))
        handler.send_response(reply.status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if body:
            handler.wfile.write(body)


class TileBackend(Backend):
    """XYZ tiles from ``root/{z}/{x}/{y}.{ext}`` at ``/tiles/{z}/{x}/{y}.{ext}``; 404 for a missing tile.

    ``blank = True`` answers every tile with ``root/blank.{ext}`` (a white tile, as written by the tile maker),
    or, for PNG without that file, a white 256-pixel PNG encoded here.
    """

    _TILE = re.compile(r"^/tiles/(\d+)/(\d+)/(\d+)\.(\w+)$")

    def __init__(self, root: str, ext: str = "png") -> None:
        self.root = Path(root)
        self.ext = ext
        self.blank = False
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.blank = False

    def answer(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> Reply:
        match = self._TILE.match(path)
        if match is None or match[4].lower() != self.ext:
            return error_reply(404)
        content_type = {"Content-Type": CONTENT_TYPES.get(self.ext, "application/octet-stream")}
        if self.blank:
            blank = self.root / f"blank.{self.ext}"
            if blank.is_file():
                return Reply(200, blank.read_bytes(), content_type)
            return Reply(200, blank_png(), content_type) if self.ext == "png" else error_reply(500)
        tile = self.root / match[1] / match[2] / f"{match[3]}.{self.ext}"
        if not tile.is_file():
            return error_reply(404)
        return Reply(200, tile.read_bytes(), content_type)


UNSATISFIABLE = (-1, -1)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single ``Range: bytes=...`` header; None for no (or an ignorable) range.

    Multi-range and malformed headers are ignored (the whole file is sent, as RFC 9110 allows);
    ``UNSATISFIABLE`` means the answer is 416.
    """
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header or "")
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # the last n bytes
        n = int(match[2])
        return UNSATISFIABLE if n == 0 or size == 0 else (max(0, size - n), size - 1)
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(match[2]), size - 1) if match[2] else size - 1


class RangeFileBackend(Backend):
    """Files under ``root`` at ``/NAME``, with HEAD and single byte ranges, as a static web server or bucket."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()
        super().__init__()

    def _file(self, path: str) -> Path | None:
        candidate = (self.root / path.lstrip("/")).resolve()
        inside = candidate == self.root or self.root in candidate.parents
        return candidate if inside and candidate.is_file() else None

    def answer(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> Reply:
        """200 with the file, 206 with a range, 416 past its end, 404 for a folder or a missing file."""
        file = self._file(path)
        if file is None:
            return error_reply(404)
        stat = file.stat()
        size = stat.st_size
        headers = {
            "Content-Type": CONTENT_TYPES.get(file.suffix.lstrip(".").lower())
            or mimetypes.guess_type(file.name)[0] or "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
            "ETag": f'"{size:x}-{stat.st_mtime_ns:x}"',
        }
        span = parse_range(handler.headers.get("Range"), size)
        if span == UNSATISFIABLE:
            return error_reply(416, {"Content-Range": f"bytes */{size}"})
        start, end = span if span is not None else (0, size - 1)
        status = 200 if span is None else 206
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if method == "HEAD":
            return Reply(status, b"", {**headers, "Content-Length": str(end - start + 1)})
        with file.open("rb") as stream:
            stream.seek(start)
            return Reply(status, stream.read(end - start + 1), headers)
