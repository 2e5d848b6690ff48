"""Pipeline API behaviours: cancellation, empty tiles, model mismatch, changed rasters, bands, stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.building.checkpoint import Checkpoint
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import Cancelled, InputError, RasterError
from clip_search_plugin.engine.index.store import default_cache_root
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings
from clip_search_plugin.engine.tiling.raster_io import describe_raster

from ..conftest import write_geotiff
from ..test_georeference_truth import ColourEmbedder

TINY = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"))


def noise(count: int = 3, size: int = 160, dtype: str = "uint8") -> np.ndarray:
    return np.random.default_rng(0).integers(1, 200, size=(count, size, size)).astype(dtype)


def test_cancel_stores_no_index_and_the_next_build_resumes_identically(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise())
    calls: list[tuple[int, int]] = []
    settings = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"), batch_size=4)
    with pytest.raises(Cancelled):
        build_index(raster, settings, tmp_path / "ix", progress=lambda d, t: calls.append((d, t)),
                    is_cancelled=lambda: len(calls) >= 2, embedder=tiny)
    assert len(calls) == 2 and calls[-1][0] <= 8  # stopped after the second batch of 4
    assert not (tmp_path / "ix").exists()  # no index, so nothing can take the partial build for a whole one
    partial = Checkpoint.load(tmp_path / "ix", "another plan", tiny.dim)  # another plan: not used, and replaced
    assert partial.tile_count == 0 and partial.replaces_other  # at its first save (a failed build leaves it)
    partial.save(np.zeros((0, tiny.dim), np.float32), np.zeros(0, np.int64), 0)
    assert not any((tmp_path / ".ix.partial").glob("part-*")) and not (tmp_path / "ix").exists()

    with pytest.raises(Cancelled):
        build_index(raster, settings, tmp_path / "ix", progress=lambda d, t: calls.append((d, t)),
                    is_cancelled=lambda: len(calls) >= 4, embedder=tiny)
    embedded: list[int] = []
    counting = CountingEmbedder(tiny, embedded)
    resumed = build_index(raster, settings, tmp_path / "ix", embedder=counting)
    whole = build_index(raster, settings, tmp_path / "whole", embedder=tiny)
    assert sum(embedded) == whole.tile_count - 8  # the 8 tiles embedded before the cancel were not redone
    a, b = open_index(resumed.path), open_index(whole.path)
    assert np.array_equal(a.tiles, b.tiles)
    assert np.array_equal(a.vectors.reconstruct_n(0, a.count), b.vectors.reconstruct_n(0, b.count))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix", "r.tif", "whole"]  # progress removed once whole


class CountingEmbedder:
    """The tiny model, counting the tiles it embeds."""

    def __init__(self, inner: ClipEmbedder, counts: list[int]) -> None:
        self.inner, self.counts = inner, counts
        self.identity, self.dim, self.input_size, self.device = inner.identity, inner.dim, inner.input_size, "cpu"

    def default_batch_size(self) -> int:
        return self.inner.default_batch_size()

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        self.counts.append(len(batch))
        return self.inner.encode_images(batch)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.inner.encode_text(texts)


def test_default_output_is_the_cache_folder_keyed_by_raster_model_and_tiling(
    tiny: ClipEmbedder, tmp_path: Path
) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise())
    first = build_index(raster, TINY, embedder=tiny).path
    assert first.parent == default_cache_root()
    other = IndexSettings(tiling=TilingSettings(tile_size=48), model=ModelSpec("tiny-random"))
    assert build_index(raster, other, embedder=tiny).path != first
    assert build_index(raster, TINY, embedder=tiny).path == first


def test_search_with_another_model_than_the_index_is_refused(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise())
    index = open_index(build_index(raster, TINY, tmp_path / "ix", embedder=tiny).path)
    with pytest.raises(InputError, match="built with clip-search-tiny"):
        search(index, ColourEmbedder(), "red")  # type: ignore[arg-type]


def test_by_example_box_refuses_a_raster_changed_since_indexing(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise())
    index = open_index(build_index(raster, TINY, tmp_path / "ix", embedder=tiny).path)
    b = index.raster.bounds()
    assert search_similar(index, tiny, bbox=(b[0], b[1], b[0] + 20, b[1] + 20), top_k=3).regions
    write_geotiff(raster, noise()[:, ::-1].copy())
    with pytest.raises(InputError, match="changed since it was indexed"):
        search_similar(index, tiny, bbox=(b[0], b[1], b[0] + 20, b[1] + 20))


def test_all_empty_raster_is_refused_clearly(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", np.zeros((1, 64, 64), dtype="uint16"), nodata=0)
    with pytest.raises(RasterError, match="no valid pixels"):
        build_index(raster, TINY, tmp_path / "ix", embedder=tiny)
    assert not (tmp_path / "ix").exists()


def test_mostly_empty_tiles_are_skipped_above_the_fraction(tiny: ClipEmbedder, tmp_path: Path) -> None:
    data = noise(size=128)
    data[:, :, :96] = 0  # three quarters of the columns are nodata
    raster = write_geotiff(tmp_path / "r.tif", data, nodata=0)
    grid = TilingSettings(tile_size=32, overlap=0.0)
    strict = build_index(raster, IndexSettings(tiling=grid, model=TINY.model), tmp_path / "a", embedder=tiny)
    assert strict.tile_count == 4 and strict.skipped_empty == 12
    loose = TilingSettings(tile_size=64, overlap=0.0, max_empty_fraction=0.5)  # tiles half empty: kept
    assert build_index(raster, IndexSettings(tiling=loose, model=TINY.model), tmp_path / "b",
                       embedder=tiny).tile_count == 2


@pytest.mark.parametrize(
    ("count", "dtype", "bands", "expected"),
    [(1, "uint8", None, (1, 1, 1)), (2, "int16", None, (1, 1, 1)), (4, "uint16", None, (1, 2, 3)),
     (8, "float32", None, (1, 2, 3)), (8, "float32", (5, 4, 3), (5, 4, 3)), (4, "uint8", (2,), (2, 2, 2))],
)
def test_band_choice_and_stretch(count: int, dtype: str, bands: tuple[int, ...] | None,
                                 expected: tuple[int, int, int], tmp_path: Path) -> None:
    data = noise(count, 64, dtype) * (40 if dtype != "uint8" else 1)
    raster = write_geotiff(tmp_path / "r.tif", data)
    info = describe_raster(str(raster), bands)
    assert info.bands == expected
    assert (info.stretch is None) == (dtype == "uint8")
    if info.stretch:
        lo, hi = info.stretch[0]
        values = data[expected[0] - 1].astype(float)
        assert lo == pytest.approx(np.percentile(values, 2), rel=0.05)
        assert hi == pytest.approx(np.percentile(values, 98), rel=0.05)


def test_band_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise(3, 32))
    with pytest.raises(RasterError, match="has 3 band"):
        describe_raster(str(raster), (1, 2, 7))


def test_float_nan_pixels_are_treated_as_empty(tiny: ClipEmbedder, tmp_path: Path) -> None:
    data = noise(3, 64, "float32")
    data[:, :32, :] = np.nan
    raster = write_geotiff(tmp_path / "r.tif", data)
    grid = IndexSettings(tiling=TilingSettings(tile_size=32, overlap=0.0), model=TINY.model)
    result = build_index(raster, grid, tmp_path / "ix", embedder=tiny)
    assert result.tile_count == 2 and result.skipped_empty == 2


def test_raster_without_georeference_is_indexed_in_pixel_coordinates(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise(), transform=Affine.identity(), crs=None)
    index = open_index(build_index(raster, TINY, tmp_path / "ix", embedder=tiny).path)
    assert not index.raster.georeferenced and index.raster.crs_wkt == ""
    found = search(index, tiny, "a house", top_k=3)
    xmin, ymin, xmax, ymax = found.regions[0].bounds
    assert 0 <= xmin < xmax <= 160 and -160 <= ymin < ymax <= 0  # as QGIS shows it: y = -row
    assert found.regions[0].area_units == "px2"
    with pytest.raises(InputError, match="in pixels"):
        build_index(raster, IndexSettings(tiling=TilingSettings(tile_units="m", tile_size=10)), embedder=tiny)


def test_index_restricted_to_polygons_holds_only_tiles_touching_them(tiny: ClipEmbedder, tmp_path: Path) -> None:
    raster = write_geotiff(tmp_path / "r.tif", noise(size=256))  # 0.5 m pixels from (500000, 4000000)
    triangle = {"type": "Polygon", "coordinates": [[[500_010, 3_999_990], [500_030, 3_999_990],
                                                    [500_010, 3_999_970], [500_010, 3_999_990]]]}
    settings = IndexSettings(tiling=TilingSettings(tile_size=32, overlap=0.0, area=[triangle]), model=TINY.model)
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=tiny).path)
    # the triangle spans columns and rows 20-60 (col + row <= 80): 4 of the 64 tiles touch it
    cells = sorted((int(c) // 32, int(r) // 32) for c, r in index.tiles[:, :2])
    assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert index.tiling.area == [triangle]
    outside = TilingSettings(tile_size=32, area=(0.0, 0.0, 10.0, 10.0))
    with pytest.raises(InputError, match="does not overlap the raster"):
        build_index(raster, IndexSettings(tiling=outside, model=TINY.model), tmp_path / "iy", embedder=tiny)
