"""Strange inputs from the robustness list that other tests do not cover: each indexes correctly or is
refused with a message that says what to do, and nothing already stored is touched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import InputError, RasterError
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from .conftest import shared_raster, write_geotiff

TINY = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"))


def noise(count: int, height: int, width: int, dtype: str = "uint8") -> np.ndarray:
    return np.random.default_rng(0).integers(1, 200, size=(count, height, width)).astype(dtype)


@pytest.fixture
def index(tiny: ClipEmbedder, tmp_path: Path) -> object:
    raster = write_geotiff(tmp_path / "r.tif", noise(3, 128, 128))
    return open_index(build_index(raster, TINY, tmp_path / "ix", embedder=tiny).path)


@pytest.mark.parametrize("query", ["游泳池", "بركة سباحة", "Schwimmbecken mit Überdachung", "🏊 pool", "a" * 900])
def test_non_latin_and_long_queries_search(query: str, index: object, tiny: ClipEmbedder) -> None:
    found = search(index, tiny, query, top_k=3)  # type: ignore[arg-type]
    assert found.regions and found.query == query


def test_a_query_of_ten_thousand_characters_is_refused_with_the_limit(index: object, tiny: ClipEmbedder) -> None:
    with pytest.raises(InputError, match="keep it under 1000"):
        search(index, tiny, "pool " * 2000, top_k=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_k", [0, -5])
def test_top_k_of_zero_or_below_is_refused(top_k: int, index: object, tiny: ClipEmbedder) -> None:
    with pytest.raises(InputError, match="at least 1"):
        search(index, tiny, "pool", top_k=top_k)  # type: ignore[arg-type]


@pytest.mark.parametrize(("height", "width"), [(8, 3000), (3000, 8)])
def test_very_wide_and_very_tall_rasters_index(height: int, width: int, tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "strip.tif", noise(3, height, width))
    built = build_index(raster, TINY, tmp_path / "ix", embedder=tiny)
    index = open_index(built.path)
    assert built.tile_count > 50
    assert (index.tiles[:, 0] + index.tiles[:, 2]).max() <= width
    assert (index.tiles[:, 1] + index.tiles[:, 3]).max() <= height


@pytest.mark.parametrize("bands", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_band_counts_and_types(bands: int, dtype: str, tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "b.tif", noise(bands, 96, 96, dtype))
    assert build_index(raster, TINY, tmp_path / "ix", embedder=tiny).tile_count > 0


def test_sheared_transform_indexes_with_footprints_on_the_map(tiny: ClipEmbedder, tmp_path: Path) -> None:
    sheared = Affine(0.5, 0.2, 500_000, 0.1, -0.5, 4_000_000)
    raster = write_geotiff(tmp_path / "s.tif", noise(3, 128, 128), sheared, "EPSG:32633")
    found = search(open_index(build_index(raster, TINY, tmp_path / "ix", embedder=tiny).path), tiny, "roof", top_k=1)
    corners = [sheared @ (c, r) for c in (0, 128) for r in (0, 128)]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    x0, y0, x1, y1 = found.regions[0].bounds
    assert min(xs) - 1e-6 <= x0 and x1 <= max(xs) + 1e-6 and min(ys) - 1e-6 <= y0 and y1 <= max(ys) + 1e-6


def test_a_geographic_raster_crossing_the_antimeridian(tiny: ClipEmbedder, tmp_path: Path) -> None:
    # 179.96 E to 180.04 E (= -179.96): longitudes past 180 as GDAL writes such a raster; 1,600 one-pixel tiles
    transform = Affine(0.002, 0, 179.96, 0, -0.002, -16.0)
    raster = write_geotiff(tmp_path / "fiji.tif", noise(3, 40, 40), transform, "EPSG:4326")
    settings = IndexSettings(tiling=TilingSettings(tile_size=50, tile_units="m"), model=ModelSpec("tiny-random"))
    found = search(open_index(build_index(raster, settings, tmp_path / "ix", embedder=tiny).path), tiny, "reef",
                   top_k=5)
    for region in found.regions:
        x0, _, x1, _ = region.bounds
        assert 179.96 - 1e-9 <= x0 < x1 <= 180.04 + 1e-9  # one piece, not wrapped round the world
        assert 0 < region.area < 5e5  # square metres of a few tiles, not of a band round the earth


@pytest.mark.parametrize("name", ["räster mit leerzeichen.tif", "地图 影像.tif"])
def test_paths_with_spaces_and_non_ascii_characters(name: str, tiny: ClipEmbedder, tmp_path: Path) -> None:
    folder = tmp_path / "Ordner für Bilder"
    folder.mkdir()
    raster = write_geotiff(folder / name, noise(3, 96, 96))
    built = build_index(raster, TINY, folder / "índice", embedder=tiny)
    assert open_index(built.path).raster.path == str(raster)


def test_a_read_only_raster_folder_is_fine_the_index_goes_elsewhere(tiny: ClipEmbedder, tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    raster = write_geotiff(folder / "r.tif", noise(3, 96, 96))
    before = sorted(p.name for p in folder.iterdir())
    folder.chmod(0o555)  # (root may still write there: the check below holds for every user)
    try:
        built = build_index(raster, TINY, embedder=tiny)  # the user cache folder (private per test)
        assert folder not in built.path.parents
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written beside the raster
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_truncated_or_corrupt_tiffs_are_refused_and_keep_the_earlier_index(
    damage: str, tiny: ClipEmbedder, tmp_path: Path
) -> None:
    raster = shutil.copy(shared_raster("colorado_rgb_015m.tif"), tmp_path / "c.tif")
    built = build_index(raster, TINY, tmp_path / "ix", embedder=tiny)
    before = {p.name: p.read_bytes() for p in built.path.iterdir()}
    data = Path(raster).read_bytes()
    Path(raster).write_bytes({"truncated": data[: len(data) // 3], "garbage": b"II*\x00" + os.urandom(5000),
                              "empty": b""}[damage])
    with pytest.raises((RasterError, InputError)) as caught:
        build_index(raster, TINY, tmp_path / "ix", embedder=tiny)
    message = str(caught.value)
    assert "c.tif" in message and ("QGIS" in message or "gdalinfo" in message or "complete" in message), message
    assert {p.name: p.read_bytes() for p in built.path.iterdir()} == before  # the earlier index is intact
