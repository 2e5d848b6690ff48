"""End to end, with a deterministic colour embedder: a red patch placed at known map coordinates must be
found exactly there, whatever the CRS, and nothing far from it is returned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box, shape

from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.embedding.embedder import normalise_rows
from clip_search_plugin.engine.embedding.models import ModelIdentity
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings

from .conftest import write_geotiff

COLOURS = ("red", "green", "blue")


class ColourEmbedder:
    """Image vector: the fraction of strongly red / green / blue pixels (plus a small constant); text
    vector: the colour word it contains. Deterministic, so where the match lands is known exactly."""

    identity = ModelIdentity("colour-test", "none", random_weights=False)
    dim = 4
    input_size = 32
    device = "cpu"

    def default_batch_size(self) -> int:
        return 16

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        rgb = batch.astype(np.int16)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        for c in range(3):
            others = np.delete(rgb, c, axis=3).max(axis=3)
            out[:, c] = ((rgb[..., c] > 150) & (others < 80)).mean(axis=(1, 2))
        out[:, 3] = 0.05
        return normalise_rows(out)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for c, word in enumerate(COLOURS):
                out[i, c] = float(word in text)
        return normalise_rows(out)


def scene(*patches: tuple[int, int, int], width: int = 640, height: int = 480) -> np.ndarray:
    """Dull noisy ground with red square patches (column, row, size)."""
    rng = np.random.default_rng(0)
    data = rng.integers(60, 120, size=(3, height, width), dtype=np.uint8)
    for col, row, size in patches:
        data[:, row:row + size, col:col + size] = np.array([220, 20, 20], dtype=np.uint8)[:, None, None]
    return data


CASES = {
    "utm": (Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000), "EPSG:32633"),
    "degrees": (Affine(0.0001, 0, 12.0, 0, -0.0001, 45.0), "EPSG:4326"),
    "rotated_90": (Affine(0, -0.5, 300_000, 0.5, 0, 6_000_000), "EPSG:32750"),
}


@pytest.mark.parametrize("case", CASES)
def test_query_finds_the_patch_where_it_is_on_the_map(case: str, tmp_path: Path) -> None:
    transform, crs = CASES[case]
    col, row, size = 410, 300, 24
    raster = write_geotiff(tmp_path / "scene.tif", scene((col, row, size)), transform, crs)
    patch_on_map = box(*_map_bounds(transform, col, row, size, size))
    embedder = ColourEmbedder()
    settings = IndexSettings(tiling=TilingSettings(tile_size=64, overlap=0.5))
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=embedder).path)
    found = search(index, embedder, "red", top_k=50, threshold=0.2, templates=None)

    assert len(found.regions) == 1
    region = shape(found.regions[0].geometry)
    assert region.contains(patch_on_map)
    # nothing far: the region stays within one tile (64 px) of the patch
    pixel = abs(transform.a) + abs(transform.b)
    assert patch_on_map.buffer(64 * pixel * 1.01, join_style="mitre").contains(region)
    assert found.regions[0].score > 0.9
    # the other colours are nowhere
    assert search(index, embedder, "blue", top_k=50, threshold=0.2, templates=None).regions == []


def test_search_limited_to_an_area_and_by_example(tmp_path: Path) -> None:
    transform, crs = CASES["utm"]
    east, west = (410, 300, 24), (100, 60, 24)
    raster = write_geotiff(tmp_path / "scene.tif", scene(east, west), transform, crs)
    embedder = ColourEmbedder()
    settings = IndexSettings(tiling=TilingSettings(tile_size=64, overlap=0.5))
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=embedder).path)
    east_box, west_box = (box(*_map_bounds(transform, *p[:2], p[2], p[2])) for p in (east, west))
    everywhere = search(index, embedder, "red", top_k=50, threshold=0.2, templates=None)
    assert len(everywhere.regions) == 2

    east_half = (500_160.0, 3_999_760.0, 500_320.0, 4_000_000.0)
    (only,) = search(index, embedder, "red", top_k=50, threshold=0.2, templates=None, area=east_half).regions
    assert shape(only.geometry).contains(east_box)

    # by example box around the east patch: the west patch is found, tiles touching the example are left out
    by_box = search_similar(index, embedder, bbox=_map_bounds(transform, 400, 290, 44, 44), top_k=50, threshold=0.5)
    (match,) = by_box.regions
    assert shape(match.geometry).contains(west_box) and not shape(match.geometry).intersects(east_box)

    # by several example boxes (averaged): tiles touching any example are left out, unless asked for
    both = [_map_bounds(transform, 400, 290, 44, 44), _map_bounds(transform, *west[:2], west[2], west[2])]
    assert not search_similar(index, embedder, bbox=both, top_k=50, threshold=0.5).regions
    kept = search_similar(index, embedder, bbox=both, top_k=50, threshold=0.5, exclude_examples=False)
    assert kept.query == "similar to 2 example boxes" and len(kept.regions) == 2
    with pytest.raises(InputError, match="xmin < xmax"):
        search_similar(index, embedder, bbox=[both[0], (1.0, 2.0, 0.0, 3.0)])

    # by example tile: the best east tile finds the west patch; the example itself is not returned
    best = search(index, embedder, "red", top_k=1, templates=None, area=east_half).hits[0]
    similar = search_similar(index, tile_ids=[best.tile_id], top_k=50, threshold=0.5)
    assert best.tile_id not in {h.tile_id for h in similar.hits}
    assert any(shape(r.geometry).contains(west_box) for r in similar.regions)


def _map_bounds(transform: Affine, col: int, row: int, w: int, h: int) -> tuple[float, float, float, float]:
    xs, ys = zip(*(transform @ (c, r) for c in (col, col + w) for r in (row, row + h)), strict=True)
    return (min(xs), min(ys), max(xs), max(ys))
