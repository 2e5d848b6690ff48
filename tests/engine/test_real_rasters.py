"""The shared real rasters through the whole pipeline with the tiny random-weight CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import box, shape

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import RasterError
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from .conftest import shared_raster

TINY = ModelSpec("tiny-random")


def index_and_search(path: Path, tiny: ClipEmbedder, out: Path, **tiling: object):  # type: ignore[no-untyped-def]
    settings = IndexSettings(tiling=TilingSettings(**tiling), model=TINY)  # type: ignore[arg-type]
    result = build_index(path, settings, out, embedder=tiny)
    index = open_index(result.path)
    return result, index, search(index, tiny, "buildings", top_k=10)


@pytest.mark.parametrize(
    "name", ["colorado_rgb_015m.tif", "drone_rgba_alpha.tif", "int16_2band_epsg4326.tif"]
)
def test_each_raster_indexes_and_regions_lie_within_its_bounds(name: str, tiny: ClipEmbedder, tmp_path: Path) -> None:
    path = shared_raster(name)
    result, index, found = index_and_search(path, tiny, tmp_path / "ix", scales=(1.0, 2.0))
    assert result.tile_count == index.count > 0
    with rasterio.open(path) as ds:
        extent = box(*ds.bounds)
        assert index.raster.crs_wkt == ds.crs.to_wkt()
    assert found.regions, "a search over a non-empty index returns regions"
    for region in found.regions:
        geom = shape(region.geometry)
        assert geom.is_valid and geom.area > 0
        assert extent.buffer(1e-9).contains(geom)
    assert found.random_weights and "RANDOM WEIGHTS" in found.model


def test_tiny_raster_smaller_than_two_tiles(tiny: ClipEmbedder, tmp_path: Path) -> None:
    path = shared_raster("colorado_rgb_015m.tif")  # 383 x 232
    _, index, _ = index_and_search(path, tiny, tmp_path / "ix", scales=(1.0, 2.0, 4.0))
    windows = {(index.window(i), index.scale_index(i)) for i in range(index.count)}
    # base scale: 3 columns x 2 rows of 224 px; the 448 and 896 px scales: one tile, the whole raster
    assert sum(1 for _, s in windows if s == 0) == 6
    coarse = sorted((s, w.col_off, w.row_off, w.width, w.height) for w, s in windows if s > 0)
    assert coarse == [(1, 0, 0, 383, 232), (2, 0, 0, 383, 232)]


def valid_fraction(path: Path, col: int, row: int, w: int, h: int) -> float:
    with rasterio.open(path) as ds:
        masks = ds.read_masks(window=rasterio.windows.Window(col, row, w, h))
    return float(np.all(masks > 0, axis=0).mean())


@pytest.mark.parametrize(("name", "tile"), [("drone_rgba_alpha.tif", 24), ("int16_2band_epsg4326.tif", 6)])
def test_alpha_and_nodata_borders_produce_no_tiles(name: str, tile: int, tiny: ClipEmbedder, tmp_path: Path) -> None:
    path = shared_raster(name)
    settings = IndexSettings(tiling=TilingSettings(tile_size=tile, overlap=0.0, max_empty_fraction=0.5), model=TINY)
    result = build_index(path, settings, tmp_path / "ix", embedder=tiny)
    index = open_index(result.path)
    assert result.skipped_empty > 0, "the border holds wholly empty tiles at this tile size"
    kept = {tuple(int(v) for v in row[:4]) for row in index.tiles}
    with rasterio.open(path) as ds:
        width, height = ds.width, ds.height
    for col in range(0, width - tile + 1, tile):
        for row in range(0, height - tile + 1, tile):
            fraction = valid_fraction(path, col, row, tile, tile)
            if fraction == 0.0:
                assert (col, row, tile, tile) not in kept
            if fraction >= 0.6:
                assert (col, row, tile, tile) in kept


def test_int16_geographic_raster_has_footprints_in_degrees(tiny: ClipEmbedder, tmp_path: Path) -> None:
    path = shared_raster("int16_2band_epsg4326.tif")
    _, index, found = index_and_search(path, tiny, tmp_path / "ix", tile_size=5000, tile_units="m")
    assert index.raster.is_geographic and index.raster.stretch is not None
    # 5 km at about 37.4 N with 0.0044 degree pixels (about 437 m x 489 m): about 11 pixels
    assert 9 <= index.manifest["base_tile_px"] <= 13
    t = index.raster.affine
    for i in range(index.count):
        w = index.window(i)
        x0, y0 = t @ (w.col_off, w.row_off)
        assert 126.7 <= x0 <= 128.0 and 36.9 <= y0 <= 38.0
    biggest = max(shapely.area(shape(r.geometry)) for r in found.regions)
    assert biggest < 1.0  # square degrees: footprints are in degrees, not metres
    assert all(r.area_units == "m2" and r.area > 1e6 for r in found.regions)


def test_gcp_only_raster_is_refused_with_the_fix(tiny: ClipEmbedder, tmp_path: Path) -> None:
    path = shared_raster("gcps_only.tif")
    with pytest.raises(RasterError, match="gdalwarp"):
        build_index(path, IndexSettings(model=TINY), tmp_path / "ix", embedder=tiny)
    assert not (tmp_path / "ix").exists()
