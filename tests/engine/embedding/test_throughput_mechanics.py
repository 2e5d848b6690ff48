"""The mechanics behind indexing speed: chunks read ahead in threads, in order; batches halved when the
GPU runs out of memory. (The speed itself is measured by scripts/bench_index.py, not by tests.)"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_search_plugin.engine.building.build import build_index, open_index, plan_tiles
from clip_search_plugin.engine.building.reading import chunks_of, cut_tiles, read_chunks
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import ModelError, RasterError
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings
from clip_search_plugin.engine.tiling.raster_io import describe_raster, open_dataset

from ..conftest import write_geotiff


def scene(tmp_path: Path, size: int = 1200) -> Path:
    data = np.random.default_rng(3).integers(0, 255, size=(3, size, size), dtype=np.uint8)
    return write_geotiff(tmp_path / "scene.tif", data, tiled=True, blockxsize=256, blockysize=256)


@pytest.mark.parametrize("workers", [1, 3])
def test_chunks_read_in_threads_come_back_in_order_and_equal_to_a_plain_read(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("clip_search_plugin.engine.building.reading.CHUNK_SOURCE_PIXELS", 256)  # many small chunks
    raster = scene(tmp_path)
    info = describe_raster(str(raster))
    tiling = TilingSettings(tile_size=100, overlap=0.5, scales=(1.0, 3.0))
    base, tiles = plan_tiles(info, tiling)
    jobs = list(chunks_of(tiles, base, tiling.scales))
    assert len(jobs) > 2 * workers  # enough chunks for the threads to read ahead
    got, readers = [], set()
    for cuts in read_chunks(info, jobs, 50, workers):
        got.append(cuts)
        readers |= {t.name for t in threading.enumerate() if t.name.startswith("clip-search-read")}
    assert 1 <= len(readers) <= workers  # read in the reader threads, no more of them than asked
    with open_dataset(info.path) as ds:
        expected = [list(cut_tiles(ds, info, group, size, 50)) for size, group in jobs]
    assert [[t for t, _, _ in cuts] for cuts in got] == [[t for t, _, _ in cuts] for cuts in expected]
    for cuts, plain in zip(got, expected, strict=True):
        for (_, pixels, empty), (_, want, want_empty) in zip(cuts, plain, strict=True):
            assert np.array_equal(pixels, want) and empty == want_empty
    assert not [t for t in threading.enumerate() if t.name.startswith("clip-search-read")]  # all ended


def test_a_read_error_in_a_reader_thread_reaches_the_caller(tmp_path: Path) -> None:
    raster = scene(tmp_path, 600)
    info = describe_raster(str(raster))
    base, tiles = plan_tiles(info, TilingSettings(tile_size=100))
    jobs = list(chunks_of(tiles, base, (1.0,)))
    raster.write_bytes(b"no longer a raster")  # the file breaks after it was described
    with pytest.raises(RasterError, match="Cannot read"):
        list(read_chunks(info, jobs, 50, 2))
    assert not [t for t in threading.enumerate() if t.name.startswith("clip-search-read")]


def test_index_is_the_same_whatever_the_number_of_readers(tiny: ClipEmbedder, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clip_search_plugin.engine.building.reading.CHUNK_SOURCE_PIXELS", 256)
    raster = scene(tmp_path, 700)
    settings = IndexSettings(tiling=TilingSettings(tile_size=96, scales=(1.0, 2.0)), model=ModelSpec("tiny-random"))
    one = open_index(build_index(raster, settings, tmp_path / "one", embedder=tiny).path)
    monkeypatch.setattr("clip_search_plugin.engine.building.build.reader_threads", lambda device: 4)
    four = open_index(build_index(raster, settings, tmp_path / "four", embedder=tiny).path)
    assert np.array_equal(one.tiles, four.tiles)
    assert np.array_equal(one.vectors.reconstruct_n(0, one.count), four.vectors.reconstruct_n(0, four.count))


class TightGpu(ClipEmbedder):
    """The tiny model, as on a GPU that has room for at most ``room`` tiles per batch."""

    room = 3
    seen: list[int]

    def _encode_images(self, batch: np.ndarray) -> np.ndarray:
        self.seen.append(len(batch))
        if len(batch) > self.room:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return super()._encode_images(batch)


def test_batches_halve_when_the_gpu_runs_out_of_memory(tiny: ClipEmbedder) -> None:
    tight = TightGpu(tiny.model, tiny.tokenizer, tiny.identity, "cpu")
    tight.seen = []
    tiles = np.random.default_rng(0).integers(0, 255, size=(10, 64, 64, 3), dtype=np.uint8)
    vectors = tight.encode_images(tiles)
    np.testing.assert_allclose(vectors, tiny.encode_images(tiles), atol=1e-5)  # every tile, in order
    assert tight.seen[:3] == [10, 5, 2] and tight.max_batch == 2  # halved until it fits, then kept
    tight.seen = []
    tight.encode_images(tiles[:4])
    assert tight.seen == [2, 2]
    tight.room = 0
    with pytest.raises(ModelError, match="out of memory for a single tile"):
        tight.encode_images(tiles[:2])


def test_search_on_a_device_matrix_finds_what_faiss_finds(tiny: ClipEmbedder, tmp_path: Path) -> None:
    """The GPU search path (a torch matrix product and top-k), run here on the CPU, against Faiss."""
    from clip_search_plugin.engine.building.build import search, search_similar

    raster = scene(tmp_path, 700)
    settings = IndexSettings(tiling=TilingSettings(tile_size=64, scales=(1.0, 2.0)), model=ModelSpec("tiny-random"))
    path = build_index(raster, settings, tmp_path / "ix", embedder=tiny).path
    on_faiss, on_matrix = open_index(path), open_index(path)
    on_matrix.to_device("cpu")
    assert on_matrix.device_matrix is not None and tuple(on_matrix.device_matrix.shape) == (on_matrix.count, tiny.dim)
    box = on_faiss.raster.bounds()
    half = (box[0], box[1], (box[0] + box[2]) / 2, box[3])
    cases = [dict(top_k=15), dict(top_k=10, area=half), dict(top_k=on_faiss.count + 5), dict(top_k=30, threshold=0.0),
             dict(top_k=10, min_relative=1.0), dict(top_k=10, threshold=0.999)]
    for case in cases:
        a = search(on_faiss, tiny, "a red roof", templates=None, **case)  # type: ignore[arg-type]
        b = search(on_matrix, tiny, "a red roof", templates=None, **case)  # type: ignore[arg-type]
        assert [h.tile_id for h in a.hits] == [h.tile_id for h in b.hits], case
        np.testing.assert_allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=1e-5)
    a = search_similar(on_faiss, tile_ids=[3, 4], top_k=12)
    b = search_similar(on_matrix, tile_ids=[3, 4], top_k=12)
    assert [h.tile_id for h in a.hits] == [h.tile_id for h in b.hits] and not {3, 4} & {h.tile_id for h in b.hits}
