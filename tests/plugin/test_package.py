"""`make package`'s zip, unpacked and held to each upload rule of the QGIS plugins site."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ENGINE_PYTHON, REPO

REQUIRED = ("name", "description", "about", "version", "qgisMinimumVersion", "author", "email", "tracker",
            "repository")
FORBIDDEN_SUFFIXES = (".pyc", ".sh", ".so", ".dll", ".exe")
FORBIDDEN_PARTS = ("__pycache__", ".git", "__MACOSX")
PLACEHOLDER_HOSTS = ("example.com", "example.org", "localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "clip_search_plugin.zip"
    python = str(ENGINE_PYTHON) if ENGINE_PYTHON.exists() else sys.executable
    subprocess.run([python, str(REPO / "scripts" / "package_plugin.py"), "--output", str(out)], check=True)
    return out


def test_zip_follows_the_plugins_site_rules(package: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        archive.extractall(tmp_path)
    assert package.stat().st_size < 25 * 1024 * 1024

    # one top-level entry: the plugin folder, named as a Python identifier
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"clip_search_plugin"} and "clip_search_plugin".isidentifier()
    folder = tmp_path / "clip_search_plugin"
    assert all(name.startswith("clip_search_plugin/") for name in names)

    # nothing compiled, cached, hidden from version control or executable
    for name in names:
        assert not name.endswith(FORBIDDEN_SUFFIXES), name
        assert not set(name.split("/")) & set(FORBIDDEN_PARTS), name

    # __init__.py with classFactory, a LICENSE, the icon, and the metadata
    assert "def classFactory(" in (folder / "__init__.py").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in (folder / "LICENSE").read_text()
    metadata = configparser.ConfigParser()
    metadata.read(folder / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    for field in REQUIRED:
        assert general.get(field, "").strip(), f"metadata.txt lacks {field}"
    assert (folder / general["icon"]).is_file()
    assert general["hasProcessingProvider"] == "yes" and general["qgisMinimumVersion"] == "3.22"
    assert "@" in general["email"]
    for field in ("tracker", "repository", "homepage"):
        url = general[field]
        assert url.startswith("https://") and not any(host in url for host in PLACEHOLDER_HOSTS), url
    # the version in the zip is the repository's: one source
    top = configparser.ConfigParser()
    top.read(REPO / "metadata.txt", encoding="utf-8")
    assert dict(top["general"]) == dict(general)
    # the engine environment can be made from the zip alone
    assert "open_clip_torch" in (folder / "requirements-engine.txt").read_text()


def test_zip_has_no_tests_or_development_files(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        names = archive.namelist()
    assert not [n for n in names if "/tests/" in n or n.endswith((".md", ".toml", "Makefile"))]
    assert "clip_search_plugin/engine/embedding/model_configs/clip-search-tiny.json" in names


def test_bandit_finds_nothing_of_medium_or_high_severity() -> None:
    bandit = ENGINE_PYTHON.parent / "bandit"
    if not bandit.exists():
        pytest.skip("bandit is not installed (make env installs it)")
    result = subprocess.run([str(bandit), "-q", "-ll", "-r", str(REPO / "clip_search_plugin")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
