"""Reading over the network politely: GDAL's HTTP settings, credentials kept in memory, retries, clear failures.

GDAL's WMS driver makes one attempt per tile (its retry settings apply to /vsicurl/ only), so a read that fails
with a transient answer (no connection, a timeout, 429, 5xx) is tried again here, after 1, 2, 4 ... seconds;
the tiles GDAL already fetched are in its cache, so a retry asks only for those that failed. A refusal (401, 403)
or a missing remote file (404) is not retried: it gets a message naming the layer and saying what to do (a web
layer's missing tiles are empty: services answer 404 outside their coverage).

Credentials a source needs (a QGIS layer's user and password, or its HTTP headers) are kept in this process's
memory under the source's public name, and given to GDAL only while it reads: they never reach a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..errors import RasterError
from ..paths import user_cache_base
from .names import SourceName, hide_urls

T = TypeVar("T")
RETRY_DELAYS = tuple(float(s) for s in os.environ.get("CLIP_SEARCH_WEB_RETRY_DELAYS", "1 2 4 8 16").split())
TRANSIENT = {0, 408, 425, 429, 500, 502, 503, 504}  # 0: no connection, or no answer in time
USER_AGENT = "clip_search_plugin (QGIS plugin; GDAL)"


class SourceReadError(RasterError):
    """A web or remote source could not be read; ``status``: the HTTP status (0 when no server answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT


class BlankSourceError(SourceReadError):
    """A web source answered with blank tiles (one colour everywhere)."""


@dataclass(frozen=True)
class Credentials:
    user: str = ""
    password: str = ""
    headers: tuple[str, ...] = ()


_credentials: dict[str, Credentials] = {}


def remember(public: str, name: SourceName, auth: Mapping[str, str] | None = None) -> None:
    """Keep what ``name`` (and a request's ``auth``: user, password, header) needs to be read, in memory only."""
    auth = auth or {}
    headers = name.headers + ((auth["header"],) if auth.get("header") else ())
    found = Credentials(auth.get("user") or name.user, auth.get("password") or name.password, headers)
    if found != Credentials():
        _credentials[public] = found


def web_cache_root() -> str:
    """Where downloaded tiles are kept between builds: $CLIP_SEARCH_WEB_CACHE, else the user's cache folder."""
    return os.environ.get("CLIP_SEARCH_WEB_CACHE") or str(user_cache_base() / "web-tiles")


def tile_cache(public: str) -> str:
    """The tile cache folder of one web source (its public name): kept between builds, shared by its areas."""
    return os.path.join(web_cache_root(), hashlib.sha256(public.encode()).hexdigest()[:16])


def forget_tiles(public: str) -> None:
    """Drop what a web source served (blank tiles must not be read from the cache once the service is fixed)."""
    shutil.rmtree(tile_cache(public), ignore_errors=True)


def gdal_options(public: str | None) -> dict[str, str]:
    """GDAL's settings for reading ``public`` (a source's public name; None: a local file, which needs none)."""
    if public is None:
        return {}
    options = {
        "GDAL_HTTP_TIMEOUT": "30", "GDAL_HTTP_CONNECTTIMEOUT": "10", "GDAL_HTTP_USERAGENT": USER_AGENT,
        "GDAL_HTTP_MAX_RETRY": str(len(RETRY_DELAYS)), "GDAL_HTTP_RETRY_DELAY": str(RETRY_DELAYS[0] if RETRY_DELAYS
                                                                                    else 1),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_DEFAULT_WMS_CACHE_PATH": web_cache_root(),
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": "", "VSI_CACHE": "TRUE",
    }
    found = _credentials.get(public)
    if found is not None and found.user:
        options |= {"GDAL_HTTP_USERPWD": f"{found.user}:{found.password}", "GDAL_HTTP_AUTH": "BASIC"}
    if found is not None and found.headers:
        options["GDAL_HTTP_HEADERS"] = "\r\n".join(found.headers)
    return {k: v for k, v in options.items() if v}


@contextlib.contextmanager
def reading(public: str | None, **more: object) -> Iterator[None]:
    """GDAL configured for reading ``public`` (and ``more`` settings) for the duration of the block."""
    import rasterio

    with rasterio.Env(**gdal_options(public), **more):
        yield


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the failures behind it, outermost first (GDAL's own words come last)."""
    chain = [exc]
    while (cause := chain[-1].__cause__) is not None and len(chain) < 8:
        chain.append(cause)
    return chain


def http_status(exc: BaseException) -> int | None:
    """The HTTP status GDAL reported in the failure behind ``exc`` (0: no server answered), or None."""
    text = " ".join(str(e) for e in _chain(exc))
    found = re.search(r"HTTP (?:status|response|error) code ?: ?(\d+)", text, re.IGNORECASE)
    if found:
        return int(found.group(1))
    if re.search(r"could not connect|couldn't connect|failed to connect|timed out|timeout", text, re.IGNORECASE):
        return 0
    return None


def read_failure(title: str, exc: BaseException, where: str) -> SourceReadError:
    """One message for a failed read of a web or remote source: which layer, what the server said, what to do."""
    status = http_status(exc)
    if status in (401, 403):
        advice = (f"the server refused access (HTTP {status}). Check the layer's user name and password or its "
                  "authentication in QGIS, and that your account may use this service")
    elif status == 404:
        advice = ("the server has no imagery there (HTTP 404). Check the layer's address and zoom levels, and "
                  "choose an area the service covers")
    elif status in TRANSIENT:
        said = "did not answer" if status == 0 else f"answered HTTP {status}"
        advice = (f"the server {said} after {len(RETRY_DELAYS) + 1} tries. Check your connection or try later: "
                  "the tiles embedded so far are saved and the downloaded imagery is kept, so the same build "
                  "resumes where it stopped")
    else:
        worded = [e for e in _chain(exc) if "See previous exception" not in str(e)]
        advice = f"GDAL said: {gdal_words(worded[-1] if worded else exc)}"
    return SourceReadError(f"Cannot read {title} ({where}): {advice}.", status)


def gdal_words(exc: BaseException) -> str:
    """GDAL's message on one line, without credentials or the XML of a web description it may quote."""
    text = re.sub(r"<(VRTDataset|GDAL_WMS)\b.*?</\1>", "the source", str(exc), flags=re.DOTALL)
    return hide_urls(re.sub(r"\s+", " ", text)).strip()[:200]


def attempt(read: Callable[[], T], remote: bool, title: str, where: str,
            errors: tuple[type[BaseException], ...]) -> T:
    """``read()``; for a ``remote`` source tried again while it fails transiently (:func:`with_retries`), its
    failure worded by :func:`read_failure` (``title``: the source's name for people; ``where``: what was read)."""
    if not remote:
        return read()
    return with_retries(read, lambda e: read_failure(title, e, where), errors)


def with_retries(read: Callable[[], T], fail: Callable[[BaseException], SourceReadError],
                 errors: tuple[type[BaseException], ...], sleep: Callable[[float], None] = time.sleep) -> T:
    """``read()``, tried again after each of :data:`RETRY_DELAYS` while it fails transiently."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return read()
        except errors as exc:
            failure = fail(exc)
            if not failure.transient or delay is None:
                raise failure from exc
            sleep(delay)
    raise AssertionError("unreachable")
