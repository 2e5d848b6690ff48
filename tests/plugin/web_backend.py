"""A tile server's backend that also writes down what each request said of itself (standard library only: it runs
in the server's own process, see ``tests.servers.child``): its target, its User-Agent, its Authorization and, when
it is asked as a proxy, its Proxy-Authorization, one JSON line each in ``heard``. With ``login`` ("user:password")
it answers 401 to a request without that login, as a protected service does."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler

from tests.servers.backend import Reply, TileBackend, error_reply


def basic(login: str) -> str:
    """The Authorization header of a Basic login "user:password"."""
    return "Basic " + base64.b64encode(login.encode()).decode()


class RecordingTileBackend(TileBackend):
    def __init__(self, root: str, ext: str, heard: str, login: str | None = None) -> None:
        self.heard = heard
        self.login = login
        self._write = threading.Lock()
        super().__init__(root, ext)

    def answer(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> Reply:
        said = handler.headers.get("Authorization")
        line = json.dumps({"target": handler.path, "agent": handler.headers.get("User-Agent", ""), "auth": said,
                           "proxy_auth": handler.headers.get("Proxy-Authorization")})
        with self._write, open(self.heard, "a", encoding="utf-8") as out:
            out.write(line + "\n")
        if self.login is not None and said != basic(self.login):
            return error_reply(401, {"WWW-Authenticate": 'Basic realm="tiles"'})
        return super().answer(handler, method, path)
