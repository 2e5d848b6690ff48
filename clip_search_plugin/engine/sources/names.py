"""What a source string names: a local file or folder, a remote file, a GDAL web description, or a QGIS web layer.

Standard library only: the QGIS side classifies its layers' sources with the same rules. A source is what the
user has: a path, ``/vsicurl/https://…/ortho.tif`` (or a bare ``https://…/ortho.tif``), a GDAL WMS/TMS XML
description (text, or a file holding it), ``WMTS:…`` / ``WMS:…`` dataset names, or QGIS's data-source string of
an XYZ, WMS or WMTS layer (``type=xyz&url=http://host/{z}/{x}/{y}.png&zmax=19``) or of an ArcGIS MapServer layer
(``url='https://host/…/MapServer' layer='0'``).

:func:`public_name` is the one rule for what may be written down: user names, passwords, QGIS authentication
ids, HTTP headers and key-like URL parameters are left out of every manifest, log line, message and layer name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from ..errors import InputError

FILE = "file"  # a local raster file (a VRT too)
FOLDER = "folder"  # a folder of sheets: one collection
REMOTE = "remote"  # a file GDAL reads over the network (/vsicurl/, /vsis3/, ...)
XYZ = "xyz"  # XYZ / TMS tiles
WMS = "wms"
WMTS = "wmts"
ARCGIS = "arcgis"  # ArcGIS MapServer / ImageServer (its REST export)
GDAL_WEB = "gdal-web"  # a GDAL WMS/TMS XML description or a WMS:/WMTS: dataset name
WEB_KINDS = (XYZ, WMS, WMTS, ARCGIS, GDAL_WEB)
REMOTE_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/", "/vsiwebhdfs/")
SECRET_PARAMS = re.compile(
    r"^(password|passwd|pwd|username|user|authcfg|token|access_?token|api_?key|apikey|key|secret|signature|sig|"
    r"x-amz-.*|x-goog-.*|client_secret|auth|http-header:.*|referer)$", re.IGNORECASE)
HIDDEN = "***"


def over_network(kind: str) -> bool:
    """A source of this kind is read over the network (a web layer or a remote file): retried, its server named."""
    return kind not in (FILE, FOLDER)


@dataclass(frozen=True)
class SourceName:
    """A source string, read: its kind, what GDAL is given, and what of it may be shown and stored."""

    kind: str
    text: str  # as given (may hold credentials: never written down)
    url: str = ""  # the service or file URL, credentials included, as GDAL needs it
    params: dict[str, str] = field(default_factory=dict)  # a QGIS data source's keys (layers, crs, zmax, ...)
    user: str = ""
    password: str = ""
    headers: tuple[str, ...] = ()  # "Name: value" lines a QGIS layer asks to send

    @property
    def is_web(self) -> bool:
        """A service without edges of its own: it is read over a bounding box at a chosen resolution."""
        return self.kind in WEB_KINDS

    @property
    def is_local(self) -> bool:
        return self.kind in (FILE, FOLDER)

    def public(self) -> str:
        """The source without credentials: what manifests, logs, messages and layer names may hold."""
        return public_name(self.text)

    def title(self) -> str:
        """A short readable name: the file's, or the service host and layer (for folder names and layers)."""
        if self.is_local:
            return os.path.basename(os.path.normpath(self.text)) or self.text
        parts = urlsplit(self.url or "")
        layer = self.params.get("layers") or self.params.get("layer") or ""
        stem = os.path.basename(parts.path.rstrip("/")) if self.kind == REMOTE else ""
        return " ".join(p for p in (parts.hostname or "", layer.split(",")[0], stem) if p) or self.kind


def read_source(text: str) -> SourceName:
    """Classify ``text`` (see the module's docstring); a string that is none of them is taken as a local path."""
    text = text.strip()
    if text.startswith("<GDAL_WMS") or text.startswith(("WMS:", "WMTS:", "AGS:")):
        return SourceName(GDAL_WEB, text, url=_first_url(text))
    if text.startswith(REMOTE_PREFIXES):
        return SourceName(REMOTE, text, url=text.split("/", 2)[2] if text.startswith("/vsicurl/") else text)
    if re.match(r"^https?://", text, re.IGNORECASE):
        return SourceName(REMOTE, "/vsicurl/" + text, url=text)
    if "url=" in text and not os.path.exists(text):
        return _qgis_web(text)
    if text.lower().endswith(".xml") and os.path.isfile(text) and _holds_gdal_web(text):
        return SourceName(GDAL_WEB, text, url=_first_url(_head(text)))
    return SourceName(FOLDER if os.path.isdir(text) else FILE, text)


def _qgis_web(text: str) -> SourceName:
    """A QGIS data-source string: "k=v&k=v" (XYZ, WMS, WMTS) or "k='v' k='v'" (ArcGIS MapServer)."""
    if re.match(r"^\s*\w+='", text):
        params = {k.lower(): v for k, v in re.findall(r"(\S+?)='([^']*)'", text)}
        kind = ARCGIS
    else:
        params = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            params.setdefault(key if key.startswith("http-header:") else key.lower(), value)
        kind = XYZ if params.get("type", "").lower() == "xyz" else WMTS if "tilematrixset" in params else WMS
    url = params.get("url", "")
    if not re.match(r"^https?://", url, re.IGNORECASE):
        raise InputError(f"The web layer's address is not an http(s) URL ({public_name(url) or 'none'}); "
                         "check the layer's source in its properties.")
    headers = tuple(f"{k.split(':', 1)[1]}: {v}" for k, v in params.items() if k.startswith("http-header:") and v)
    if params.get("referer"):
        headers += (f"Referer: {params['referer']}",)
    return SourceName(kind, text, url=url, params=params, user=params.get("username", ""),
                      password=params.get("password", ""), headers=headers)


def _head(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(65536)


def _holds_gdal_web(path: str) -> bool:
    return _head(path).lstrip().startswith(("<GDAL_WMS", "<GDAL_WMTS"))


def _first_url(text: str) -> str:
    found = re.search(r"https?://[^\s<>\"',]+", text)
    return unquote(found.group(0)) if found else ""


def public_url(url: str) -> str:
    """``url`` without a user name or password and with key-like query parameters hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "&".join(f"{k}={HIDDEN if SECRET_PARAMS.match(k) else quote(v, safe='{}/:,-')}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    public = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    return public + "?" if url.endswith("?") and not public.endswith("?") else public


def public_name(text: str) -> str:
    """A source string (path, URL, QGIS data source, GDAL description) with every credential left out."""
    text = re.sub(r"(<(UserPwd|Password|UserName)>)[^<]*(</)", rf"\1{HIDDEN}\3", text)
    if re.match(r"^\s*\w+='", text) and "url=" in text:  # ArcGIS: k='v' pairs
        return re.sub(r"(\S+?)='([^']*)'", lambda m: f"{m.group(1)}='{_public_value(m.group(1), m.group(2))}'", text)
    if "url=" in text and "&" in text and not os.path.exists(text):
        pairs = parse_qsl(text, keep_blank_values=True)
        return "&".join(f"{k}={_public_value(k, v)}" for k, v in pairs if not SECRET_PARAMS.match(k) or k == "url")
    return re.sub(r"https?://[^\s<>\"',]+", lambda m: public_url(m.group(0)), text)


def _public_value(key: str, value: str) -> str:
    if key.lower() == "url":
        return public_url(value)
    return HIDDEN if SECRET_PARAMS.match(key) else value


def hide_urls(message: str) -> str:
    """A message (GDAL's words among them) with the credentials of any URL in it hidden."""
    return re.sub(r"https?://[^\s<>\"']+", lambda m: public_url(m.group(0).rstrip(".,;)")), message)
