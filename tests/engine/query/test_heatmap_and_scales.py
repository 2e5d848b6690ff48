"""Score heatmap (best tile score per location) and multi-scale search, with embedders whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import normalise_rows
from clip_search_plugin.engine.embedding.models import ModelIdentity
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings

from ..conftest import write_geotiff
from ..test_georeference_truth import CASES, ColourEmbedder
from .test_query_shaping import colour_scene


@pytest.fixture
def colour_index(tmp_path: Path) -> object:
    transform, crs = CASES["utm"]
    raster = write_geotiff(tmp_path / "colours.tif", colour_scene(), transform, crs)
    settings = IndexSettings(tiling=TilingSettings(tile_size=128, overlap=0.5, scales=(1.0, 2.0)))
    return open_index(build_index(raster, settings, tmp_path / "ix", embedder=ColourEmbedder()).path)


def brute_force_best(index: object, scores: np.ndarray, cell: float, rows: int, cols: int,
                     cell_h: float | None = None) -> np.ndarray:
    """The best score of the tiles overlapping each cell (``cell`` wide, ``cell_h`` high), tile by tile and
    cell by cell."""
    cell_w, cell_h = cell, cell if cell_h is None else cell_h
    best = np.full((rows, cols), np.nan, dtype=np.float32)
    for (c, r, w, h, _), score in zip(index.tiles, scores, strict=True):  # type: ignore[attr-defined]
        for row in range(rows):
            for col in range(cols):
                overlaps = (c < (col + 1) * cell_w and col * cell_w < c + w
                            and r < (row + 1) * cell_h and row * cell_h < r + h)
                if overlaps and not score <= best[row, col]:
                    best[row, col] = score
    return best


@pytest.mark.parametrize("rerank", [False, True])
def test_heatmap_holds_the_best_tile_score_per_cell(colour_index: object, tmp_path: Path, rerank: bool) -> None:
    path = tmp_path / "heat.tif"
    result = search(colour_index, ColourEmbedder(), "red", top_k=5, templates=None, heatmap=str(path), rerank=rerank)
    assert result.extra["heatmap"] == str(path)
    index = colour_index
    vectors = index.vectors.reconstruct_n(0, index.count)  # type: ignore[attr-defined]
    query = ColourEmbedder().encode_text(["red"])[0]
    scores = vectors @ query
    if rerank:  # the scores the search ranks by: each tile's mean with its look-alikes'
        table = index.look_alikes()  # type: ignore[attr-defined]
        scores = np.array([np.mean([scores[i], *(scores[j] for j in row if j >= 0)]) for i, row in enumerate(table)])
    with rasterio.open(path) as ds:
        assert ds.count == 2 and ds.dtypes == ("float32", "float32")
        assert ds.crs.to_epsg() == 32633
        cell = 128 // 4
        assert ds.transform == index.raster.affine @ Affine.scale(cell)  # type: ignore[attr-defined]
        assert (ds.width, ds.height) == (768 // cell, 256 // cell)
        relative, cosine = ds.read(1), ds.read(2)
        assert "relative" in ds.descriptions[0] and "cosine" in ds.descriptions[1]
        assert ("look-alikes" in ds.descriptions[1]) == rerank
    expected = brute_force_best(index, scores, cell, 256 // cell, 768 // cell)
    np.testing.assert_allclose(cosine, expected, rtol=1e-5, atol=1e-6)
    mean, std = result.extra["score_mean"], result.extra["score_std"]
    np.testing.assert_allclose(relative, (cosine - mean) / std, rtol=1e-4, atol=1e-4)
    assert np.isclose(np.nanmax(cosine), result.regions[0].score, atol=1e-6)
    # the red patch (pixels 64-192 of the west) is hot, the blue patch (576-704 of the east) is not
    assert cosine[2:6, 2:6].min() > 0.9 and cosine[2:6, 18:22].max() < 0.5


def test_heatmap_refuses_bad_paths_and_keeps_an_earlier_file(colour_index: object, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"give a \.tif path"):
        search(colour_index, ColourEmbedder(), "red", templates=None, heatmap=str(tmp_path / "heat.png"))
    with pytest.raises(InputError, match="does not exist"):
        search(colour_index, ColourEmbedder(), "red", templates=None, heatmap=str(tmp_path / "no" / "heat.tif"))
    earlier = tmp_path / "heat.tif"
    earlier.write_bytes(b"an earlier heatmap")
    search(colour_index, ColourEmbedder(), "red", templates=None, heatmap=str(earlier))
    with rasterio.open(earlier) as ds:
        assert ds.count == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch files left


class PoolEmbedder:
    """'pool' matches a tile only when a red square lies wholly inside it, with ground all round, and
    covers 15-70% of it: a pool-sized tile finds a pool, a much smaller or much larger one does not."""

    identity = ModelIdentity("pool-test", "none", random_weights=False)
    dim = 2
    input_size = 64
    device = "cpu"

    def default_batch_size(self) -> int:
        return 16

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        rgb = batch.astype(np.int16)
        red = (rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
        fraction = red.mean(axis=(1, 2))
        edges = (red[:, 0, :], red[:, -1, :], red[:, :, 0], red[:, :, -1])
        border = np.any([e.any(axis=1) for e in edges], axis=0)
        pool = ((fraction >= 0.15) & (fraction <= 0.7) & ~border).astype(np.float32)
        return normalise_rows(np.stack([pool, np.full_like(pool, 0.05)], axis=1))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return normalise_rows(np.array([[1.0, 0.0] if "pool" in t else [0.0, 1.0] for t in texts], dtype=np.float32))


def pools_scene() -> np.ndarray:
    """Ground with a small red square (70 px) in the west and a large one (300 px) in the east."""
    rng = np.random.default_rng(1)
    data = rng.integers(60, 120, size=(3, 768, 1536), dtype=np.uint8)
    data[:, 100:170, 100:170] = np.array([220, 20, 20], dtype=np.uint8)[:, None, None]
    data[:, 300:600, 1050:1350] = np.array([220, 20, 20], dtype=np.uint8)[:, None, None]
    return data


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 4.0)])
def test_a_feature_at_two_sizes_is_found_at_both_with_several_scales(scales: tuple[float, ...], tmp_path: Path) -> None:
    transform, crs = CASES["utm"]
    raster = write_geotiff(tmp_path / "pools.tif", pools_scene(), transform, crs)
    settings = IndexSettings(tiling=TilingSettings(tile_size=128, overlap=0.5, scales=scales))
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=PoolEmbedder()).path)
    found = search(index, PoolEmbedder(), "pool", top_k=50, threshold=0.5, templates=None)
    centres = [~index.raster.affine @ ((r.bounds[0] + r.bounds[2]) / 2, (r.bounds[1] + r.bounds[3]) / 2)
               for r in found.regions]
    small = [c for c in centres if 70 < c[0] < 200 and 70 < c[1] < 200]
    large = [c for c in centres if 1050 < c[0] < 1350 and 300 < c[1] < 600]
    assert len(small) == 1  # the small pool: one region merged from the base tiles around it
    if scales == (1.0,):
        assert large == [] and len(found.regions) == 1  # base tiles alone never see the large pool whole
    else:
        assert len(large) == 1 and len(found.regions) == 2
        assert sorted(sorted({h.scale_index for h in r.members}) for r in found.regions) == [[0], [1]]  # base, 4x


def test_the_heatmap_covers_exactly_the_raster_when_cells_do_not_divide_it(tmp_path: Path) -> None:
    """A raster whose size is no multiple of the cell: the heatmap ends on its right and bottom edges
    (cells a little smaller than a quarter tile), instead of running up to a cell past them."""
    transform, crs = CASES["utm"]
    pixels = np.concatenate([colour_scene(), colour_scene()[:, :, :150]], axis=2)[:, :230, :]  # 918 x 230 px
    raster = write_geotiff(tmp_path / "odd.tif", np.ascontiguousarray(pixels), transform, crs)
    settings = IndexSettings(tiling=TilingSettings(tile_size=128, overlap=0.5))
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=ColourEmbedder()).path)
    path = tmp_path / "heat.tif"
    search(index, ColourEmbedder(), "red", top_k=5, templates=None, heatmap=str(path), rerank=False)
    with rasterio.open(raster) as source, rasterio.open(path) as ds:
        np.testing.assert_allclose(ds.bounds, source.bounds, rtol=0, atol=1e-6)
        assert (ds.width, ds.height) == (-(-918 // 32), -(-230 // 32))  # cells of 31.7 x 28.75 px
        cosine = ds.read(2)
    scores = index.vectors.reconstruct_n(0, index.count) @ ColourEmbedder().encode_text(["red"])[0]
    rows, cols = cosine.shape
    expected = brute_force_best(index, scores, 918 / cols, rows, cols, 230 / rows)
    np.testing.assert_allclose(cosine, expected, rtol=1e-5, atol=1e-6)
