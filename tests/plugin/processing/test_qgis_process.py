"""The algorithms through a qgis_process subprocess, headless, with the plugin installed from its zip and
enabled in a test profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from qgis.core import QgsRasterLayer, QgsRectangle, QgsVectorLayer

from tests.servers.http import TileServer

from ..conftest import ENGINE_PYTHON, REPO, shared_raster
from ..webdata import web_cache, xyz_pyramid  # noqa: F401 - web_cache: a fixture

# Debian's /usr/bin/qgis_process wrapper adds an option qgis_process 3.22 rejects; call the program itself
QGIS_PROCESS = next((p for p in ("/usr/bin/qgis_process.bin", shutil.which("qgis_process")) if p and Path(p).exists()),
                    None)


@pytest.fixture
def qgis_process(tmp_path: Path) -> tuple[str, dict[str, str]]:
    if QGIS_PROCESS is None:
        pytest.skip("qgis_process is not installed (make qgis-env installs QGIS)")
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    profile = tmp_path / "config" / "profiles" / "default"
    # installed the way a user installs it: the plugin zip unpacked into the profile's plugins folder
    package = tmp_path / "clip_search_plugin.zip"
    subprocess.run([str(ENGINE_PYTHON), str(REPO / "scripts" / "package_plugin.py"), "--output", str(package)],
                   check=True, capture_output=True)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(profile / "python" / "plugins")
    (profile / "QGIS").mkdir(parents=True)
    (profile / "QGIS" / "QGIS3.ini").write_text(
        "[PythonPlugins]\nclip_search_plugin=true\n\n"
        f"[clip_search]\nengine_python={ENGINE_PYTHON}\nmodel=tiny-random\ntile_size=96\ndevice=cpu\n"
        f"cache_folder={tmp_path / 'indexes'}\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "config"))
    return QGIS_PROCESS, env


def call(qgis_process: tuple[str, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    program, env = qgis_process
    return subprocess.run([program, *args], env=env, capture_output=True, text=True, timeout=300)


def test_algorithms_run_through_qgis_process(qgis_process: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    listed = call(qgis_process, "list")
    assert "clipsearch:buildindex\tBuild CLIP index" in listed.stdout, listed.stdout[-2000:] + listed.stderr

    raster = str(shared_raster("drone_rgba_alpha.tif"))
    built = call(qgis_process, "run", "clipsearch:buildindex", "--", f"INPUT={raster}", "SCALES=1 2")
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    index = next(line.split("\t", 1)[1] for line in built.stdout.splitlines() if line.startswith("INDEX:"))
    assert Path(index).parent == tmp_path / "indexes" and (Path(index) / "manifest.json").is_file()

    out = tmp_path / "found.gpkg"
    searched = call(qgis_process, "run", "clipsearch:searchindex", "--", f"RASTER={raster}",
                    "QUERIES=solar panels", "TOP_K=2", f"OUTPUT={out}")
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-2000:]
    layer = QgsVectorLayer(str(out), "found", "ogr")
    assert layer.isValid() and layer.featureCount() > 0
    assert layer.crs() == QgsRasterLayer(raster, "r").crs()
    assert {f["query"] for f in layer.getFeatures()} == {"solar panels"}

    similar_out = tmp_path / "similar.geojson"
    similar = call(qgis_process, "run", "clipsearch:findsimilar", "--", f"INDEX={index}",
                   f"REFERENCE={out}", "TOP_K=5", f"OUTPUT={similar_out}")
    assert similar.returncode == 0, similar.stdout[-2000:] + similar.stderr[-2000:]
    similar_layer = QgsVectorLayer(str(similar_out), "similar", "ogr")
    assert similar_layer.featureCount() > 0
    assert {f["query"] for f in similar_layer.getFeatures()} == {"like found"}  # named after the reference layer

    refused = call(qgis_process, "run", "clipsearch:searchindex", "--", "QUERIES=a car", "OUTPUT=TEMPORARY_OUTPUT")
    assert refused.returncode != 0
    assert "Give a raster layer that has been indexed, or an index folder" in refused.stdout + refused.stderr

    helped = call(qgis_process, "help", "clipsearch:findsimilar")
    assert "Reference features" in helped.stdout and "bounding boxes" in helped.stdout


@pytest.mark.usefixtures("web_cache")
def test_qgis_process_indexes_a_web_layer_over_an_extent(qgis_process: tuple[str, dict[str, str]],
                                                          tmp_path: Path) -> None:
    info = xyz_pyramid(tmp_path / "xyz")
    with TileServer(tmp_path / "xyz") as tiles:
        layer = f"wms://type=xyz&url={tiles.url_template}&zmax=20&zmin=0"  # a layer of QGIS's wms provider
        xmin, ymin, _, _ = info["footprint_3857"]
        extent = f"{xmin + 5},{xmin + 35},{ymin + 5},{ymin + 25} [EPSG:3857]"
        built = call(qgis_process, "run", "clipsearch:buildindex", "--", f"INPUT={layer}", f"EXTENT={extent}",
                     "TILE_SIZE=64")
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        assert tiles.count() > 0
    index = Path(next(line.split("\t", 1)[1] for line in built.stdout.splitlines() if line.startswith("INDEX:")))
    assert (index / "manifest.json").is_file() and "zoom" in (index / "manifest.json").read_text()
    out = tmp_path / "found.gpkg"  # searched as the index of the web layer, in its CRS
    searched = call(qgis_process, "run", "clipsearch:searchindex", "--", f"INDEX={index}", "QUERIES=a roof",
                    "TOP_K=2", f"OUTPUT={out}")
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-2000:]
    found = QgsVectorLayer(str(out), "found", "ogr")
    assert found.isValid() and found.featureCount() > 0 and found.crs().authid() == "EPSG:3857"
    within = QgsRectangle(xmin + 5 - 1, ymin + 5 - 1, xmin + 35 + 1, ymin + 25 + 1)
    assert all(within.contains(f.geometry().boundingBox()) for f in found.getFeatures())
