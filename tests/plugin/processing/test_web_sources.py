"""Build CLIP index and Search CLIP index on what analysts have besides files on their disk, through
processing.run in real QGIS against real servers on 127.0.0.1: a WMS layer (MapServer) over an extent at a
resolution, a Cloud-Optimised GeoTIFF read by range requests, and several sheets (as layers or a folder) indexed
as one collection whose results say which file each lies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qgis.core import QgsProcessingException, QgsRasterLayer, QgsRectangle, QgsVectorLayer

from tests.servers.http import RangeFileServer
from tests.servers.wms import MapServerWMS

from ..conftest import shared_raster
from ..webdata import make_imagery, web_cache  # noqa: F401 - web_cache: a fixture
from .test_processing import in_project, run


def results_of(output: Any) -> QgsVectorLayer:
    layer = output if isinstance(output, QgsVectorLayer) else QgsVectorLayer(output)
    assert layer.isValid()
    return layer


def extent_text(box: QgsRectangle, authid: str) -> str:
    return f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [{authid}]"


@pytest.mark.usefixtures("web_cache")
def test_a_wms_layer_is_indexed_over_an_extent_at_a_resolution_and_searched(provider: Any) -> None:
    if MapServerWMS.unavailable_reason():
        pytest.skip(MapServerWMS.unavailable_reason())
    path = shared_raster("colorado_rgb_015m.tif")
    raster = QgsRasterLayer(str(path), "colorado")
    box, size = QgsRectangle(raster.extent()), (raster.width(), raster.height())
    del raster  # a layer Python owns must not outlive QGIS
    with MapServerWMS(path, 26913, (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()), size) as wms:
        layer = in_project(QgsRasterLayer(f"crs=EPSG:26913&format=image/png&layers=ortho&styles=&url={wms.url}",
                                          "wms ortho", "wms"))
        with pytest.raises(QgsProcessingException, match="wms ortho is a web layer, which has no edges of its own"):
            run("buildindex", {"INPUT": layer, "MODEL": "tiny-random", "DEVICE": 1})
        with pytest.raises(QgsProcessingException, match="WMS layer, which draws at any scale: give the Resolution"):
            run("buildindex", {"INPUT": layer, "MODEL": "tiny-random", "DEVICE": 1,
                               "EXTENT": extent_text(box, "EPSG:26913")})
        asked_before = wms.count(prefix="/wms")
        inner = QgsRectangle(box)
        inner.scale(0.8)
        built = run("buildindex", {"INPUT": layer, "MODEL": "tiny-random", "TILE_SIZE": 96, "DEVICE": 1,
                                   "EXTENT": extent_text(inner, "EPSG:26913"), "RESOLUTION": 0.15})
        assert built["TILES"] > 0 and wms.count(prefix="/wms") > asked_before  # GetMap requests were made
        found = results_of(run("searchindex", {"RASTER": layer, "QUERIES": "a roof", "TOP_K": 5,
                                               "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"])
        assert found.featureCount() > 0 and found.crs().authid() == "EPSG:26913"
        inner.grow(0.2)
        assert all(inner.contains(f.geometry().boundingBox()) for f in found.getFeatures())
        del found


@pytest.mark.usefixtures("web_cache")
def test_a_cloud_optimised_geotiff_is_indexed_and_searched_by_range_requests(provider: Any, tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    make_imagery("cog", str(shared_raster("colorado_rgb_015m.tif")), str(folder / "ortho.tif"))
    with RangeFileServer(folder) as server:
        layer = in_project(QgsRasterLayer(server.vsicurl("ortho.tif"), "remote ortho", "gdal"))
        built = run("buildindex", {"INPUT": layer, "MODEL": "tiny-random", "TILE_SIZE": 96, "DEVICE": 1})
        assert built["TILES"] > 0
        assert any(r.range for r in server.log), "the file was not read by range requests"
        found = results_of(run("searchindex", {"RASTER": layer, "QUERIES": "a roof", "TOP_K": 5,
                                               "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"])
        assert found.featureCount() > 0 and found.crs() == layer.crs()
        assert all(layer.extent().contains(f.geometry().boundingBox()) for f in found.getFeatures())
        del found


def test_sheets_as_layers_or_as_a_folder_are_one_index_whose_results_name_their_file(
        provider: Any, tmp_path: Path) -> None:
    sheets = make_imagery("sheets", str(shared_raster("colorado_rgb_015m.tif")), str(tmp_path / "sheets"),
                          "--cols", "2", "--rows", "2")["sheets"]
    layers = [in_project(QgsRasterLayer(sheet, Path(sheet).stem)) for sheet in sheets]
    names = {Path(sheet).name for sheet in sheets}
    with pytest.raises(QgsProcessingException, match=r"Give the Rasters \(two or more\) or a Folder of sheets"):
        run("buildcollection", {"LAYERS": layers, "FOLDER": str(tmp_path / "sheets"), "MODEL": "tiny-random"})
    with pytest.raises(QgsProcessingException, match="Give two or more raster layers"):
        run("buildcollection", {"LAYERS": layers[:1], "MODEL": "tiny-random"})
    built = run("buildcollection", {"LAYERS": layers, "MODEL": "tiny-random", "TILE_SIZE": 64, "DEVICE": 1})
    assert built["TILES"] > 0 and built["MOSAIC"].endswith(".vrt")
    found = results_of(run("searchindex", {"INDEX": built["INDEX"], "QUERIES": "a roof", "TOP_K": 8,
                                           "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"])
    files = {f["file"] for f in found.getFeatures()}
    assert found.featureCount() > 0 and files <= names and len(files) > 1, files
    del found
    from_folder = run("buildcollection", {"FOLDER": str(tmp_path / "sheets"), "MODEL": "tiny-random", "TILE_SIZE": 64,
                                     "DEVICE": 1})
    assert from_folder["TILES"] == built["TILES"] and from_folder["INDEX"] != built["INDEX"]


def test_a_folder_of_200_sheets_is_one_index_searched_with_each_result_naming_its_sheet(provider: Any,
                                                                                        tmp_path: Path) -> None:
    sheets = make_imagery("sheets", str(shared_raster("drone_rgba_alpha.tif")), str(tmp_path / "sheets"),
                          "--cols", "20", "--rows", "10")["sheets"]
    assert len(sheets) == 200
    built = run("buildcollection", {"FOLDER": str(tmp_path / "sheets"), "MODEL": "tiny-random", "TILE_SIZE": 64,
                                    "DEVICE": 1})
    manifest = json.loads((Path(built["INDEX"]) / "manifest.json").read_text())
    assert len(manifest["raster"]["source"]["files"]) == 200 and built["TILES"] > 0
    found = results_of(run("searchindex", {"INDEX": built["INDEX"], "QUERIES": "a roof", "TOP_K": 10,
                                           "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"])
    files = {f["file"] for f in found.getFeatures()}
    assert found.featureCount() == 10 and files <= {Path(s).name for s in sheets} and len(files) > 1, files
