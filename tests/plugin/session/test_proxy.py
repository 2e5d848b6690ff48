"""QGIS's proxy (Settings ▸ Options ▸ Network) reaches the engine's reading of web layers: the rule for the
engine's environment, and a real build through a proxy on 127.0.0.1 (a tile server answering requests in a
proxy's absolute form), with this computer's own addresses always going direct."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qgis.core import QgsSettings

from clip_search_plugin.engine.answers import IndexAnswer
from clip_search_plugin.engine.requests import IndexRequest
from clip_search_plugin.engine.settings import ModelSpec, TilingSettings
from clip_search_plugin.session.environment import proxy_env
from clip_search_plugin.session.session import EngineSession

from ..webdata import RecordingTiles, basic, web_cache, xyz_pyramid  # noqa: F401 - web_cache: a fixture

PROXY = {"proxyEnabled": True, "proxyType": "HttpProxy", "proxyHost": "127.0.0.1", "proxyPort": 3128,
         "proxyUser": "me", "proxyPassword": "p@ss", "proxyExcludedUrls": ["http://intranet.example/wms"]}


@pytest.fixture
def qgis_proxy() -> Iterator[dict[str, Any]]:
    """QGIS's proxy settings, set as the Network options set them (and cleared afterwards)."""
    stored = QgsSettings()
    values: dict[str, Any] = dict(PROXY)

    def save() -> None:
        for key, value in values.items():
            stored.setValue(f"proxy/{key}", value)

    save()
    yield values
    for key in PROXY:
        stored.remove(f"proxy/{key}")


def test_the_engines_environment_follows_qgis_proxy(qgis_proxy: dict[str, Any], engine_settings: Any) -> None:
    env = engine_settings.engine_env()
    assert env["GDAL_HTTP_PROXY"] == "127.0.0.1:3128" and env["GDAL_HTTP_PROXYUSERPWD"] == "me:p@ss"
    assert env["https_proxy"] == "http://me:p%40ss@127.0.0.1:3128"
    assert env["no_proxy"].split(",")[:3] == ["127.0.0.1", "localhost", "::1"]
    assert "intranet.example" in env["no_proxy"].split(",") and env["NO_PROXY"] == env["no_proxy"]
    socks = proxy_env({**PROXY, "proxyType": "Socks5Proxy", "proxyUser": ""}, {"no_proxy": "corp.example"})
    assert socks["GDAL_HTTP_PROXY"] == "socks5h://127.0.0.1:3128" and "GDAL_HTTP_PROXYUSERPWD" not in socks
    assert socks["no_proxy"] == "127.0.0.1,localhost,::1,corp.example,intranet.example"
    for off in ({**PROXY, "proxyEnabled": False}, {**PROXY, "proxyType": "DefaultProxy"}, {}):
        direct = proxy_env(off, {})  # the system's proxy (the environment's own variables) or none
        assert set(direct) == {"no_proxy", "NO_PROXY"} and direct["no_proxy"].startswith("127.0.0.1,localhost")


@pytest.mark.usefixtures("web_cache")
def test_a_web_layer_is_read_through_qgis_proxy(qgis_proxy: dict[str, Any], engine_settings: Any,
                                                tmp_path: Path) -> None:
    info = xyz_pyramid(tmp_path / "xyz")
    with RecordingTiles(tmp_path / "xyz", tmp_path / "heard.jsonl") as proxy:
        qgis_proxy.update(proxyPort=proxy.port)
        for key, value in qgis_proxy.items():
            QgsSettings().setValue(f"proxy/{key}", value)
        source = "type=xyz&url=http://tiles.example/tiles/{z}/{x}/{y}.png&zmax=20&zmin=0"  # a name never resolved
        xmin, ymin, _, _ = info["footprint_3857"]
        area = (xmin + 10, ymin + 10, xmin + 40, ymin + 30)
        request = IndexRequest(source, ModelSpec("tiny-random"), TilingSettings(tile_size=64, area=area),
                               device="cpu")
        session = EngineSession(engine_settings, "cpu")
        try:
            answer = session.run(request)
        finally:
            session.stop()
        assert answer["event"] == "result", answer
        assert IndexAnswer.from_dict(answer["result"]).tiles > 0
        heard = proxy.engine_heard()
        assert heard and all(h["target"].startswith("http://tiles.example/tiles/20/") for h in heard)
        assert {h["proxy_auth"] for h in heard} == {basic("me", "p@ss")}
