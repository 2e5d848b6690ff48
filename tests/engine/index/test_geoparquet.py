"""GeoParquet embeddings: export read back by DuckDB and GeoPandas, import to the same search results, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import geopandas
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from affine import Affine
from pyproj import CRS

from clip_search_plugin.engine.building.build import build_index, open_index, search, search_similar
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.index import compact
from clip_search_plugin.engine.index.geoparquet import PROJECT_KEY, export_geoparquet
from clip_search_plugin.engine.index.geoparquet_import import import_geoparquet
from clip_search_plugin.engine.index.store import MANIFEST
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings

from ..conftest import REPO, shared_raster, write_geotiff

SETTINGS = IndexSettings(tiling=TilingSettings(tile_size=40, overlap=0.5, scales=(1.0, 2.0)),
                         model=ModelSpec("tiny-random"))
QUERIES = ("a swimming pool", "trees", "a road")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny: ClipEmbedder) -> tuple[Path, Path]:
    """(index folder, its GeoParquet export) of a shared raster, indexed at two scales with the tiny model."""
    raster = shared_raster("colorado_rgb_015m.tif")
    folder = tmp_path_factory.mktemp("geoparquet")
    index = build_index(raster, SETTINGS, folder / "ix", embedder=tiny).path
    return index, export_geoparquet(index, folder / "tiles.parquet").path


def rewrite(source: Path, target: Path, table: Callable[[pa.Table], pa.Table] = lambda t: t,
            metadata: Callable[[dict[bytes, bytes]], None] = lambda m: None) -> Path:
    """A copy of an exported file with its table and metadata changed (as another tool might)."""
    original = pq.read_table(source)
    changed = dict(original.schema.metadata)
    metadata(changed)
    pq.write_table(table(original).replace_schema_metadata(changed), target)
    return target


def test_duckdb_reads_one_row_per_tile_with_its_window_scale_vector_and_the_metadata(
        exported: tuple[Path, Path]) -> None:
    folder, file = exported
    index = open_index(folder)
    con = duckdb.connect()
    rows = con.sql(f"SELECT id, col_off, row_off, width, height, scale_index, scale, embedding "
                   f"FROM read_parquet('{file}') ORDER BY id").fetchall()
    assert len(rows) == index.count > 100
    assert [r[0] for r in rows] == list(range(index.count))
    assert np.array_equal(np.array([r[1:6] for r in rows]), index.tiles)
    assert [r[6] for r in rows] == [SETTINGS.tiling.scales[s] for s in index.tiles[:, 4]]
    assert {1, 0} <= set(index.tiles[:, 4].tolist())  # both scales are in the file
    assert con.sql(f"SELECT DISTINCT len(embedding) FROM read_parquet('{file}')").fetchall() == [(index.dim,)]
    vectors = np.array([r[7] for r in rows], dtype=np.float32)
    assert np.array_equal(vectors, index.vectors.reconstruct_n(0, index.count))
    meta = dict(con.sql(f"SELECT key, value FROM parquet_kv_metadata('{file}')").fetchall())
    geo = json.loads(meta[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert CRS.from_json_dict(column["crs"]) == CRS.from_wkt(index.raster.crs_wkt)
    project = json.loads(meta[PROJECT_KEY])
    for key in ("model", "model_label", "model_spec", "dim", "input_size", "tiling", "base_tile_px", "raster"):
        assert project[key] == index.manifest[key], key


def test_geopandas_reads_the_rasters_crs_and_each_tiles_footprint(exported: tuple[Path, Path]) -> None:
    folder, file = exported
    index = open_index(folder)
    frame = geopandas.read_parquet(file)
    assert frame.crs == CRS.from_wkt(index.raster.crs_wkt)
    assert set(frame.geom_type) == {"Polygon"} and len(frame) == index.count
    # the truth, independently: each window's corners through the raster's transform (the affine package)
    corners = [[index.raster.affine @ (c + dc, r + dr) for dc in (0, w) for dr in (0, h)]
               for c, r, w, h, _ in index.tiles.tolist()]
    truth = np.array([[*np.min(points, axis=0), *np.max(points, axis=0)] for points in corners])
    bounds = frame.sort_values("id").geometry.bounds.to_numpy()
    assert np.allclose(bounds, truth, rtol=0, atol=1e-6)
    assert np.allclose(json.loads(pq.read_schema(file).metadata[b"geo"])["columns"]["geometry"]["bbox"],
                       [*truth[:, :2].min(axis=0), *truth[:, 2:].max(axis=0)], rtol=0, atol=1e-6)


def regions(result: Any) -> list[tuple[Any, ...]]:
    """What a search shows: per region, its members' ids and scores, its score and its bounds."""
    return [(tuple((m.tile_id, round(m.score, 6)) for m in r.members), round(r.score, 6),
             tuple(round(v, 6) for v in r.bounds)) for r in result.regions]


def test_an_imported_export_searches_exactly_as_the_original(exported: tuple[Path, Path], tiny: ClipEmbedder,
                                                             tmp_path: Path) -> None:
    folder, file = exported
    original = open_index(folder)
    made = import_geoparquet(file, tmp_path / "imported")
    imported = open_index(made.path)
    assert made.tiles == original.count and made.search == "exact"
    assert imported.manifest["imported"]["rows"] == original.count
    assert not imported.manifest["imported"]["renumbered"]
    assert imported.identity == original.identity and imported.tiling == original.tiling
    assert np.array_equal(imported.tiles, original.tiles)
    assert np.array_equal(imported.look_alikes(), original.look_alikes())
    for query in QUERIES:
        for merge in (True, False):
            assert regions(search(imported, tiny, query, top_k=5, merge=merge)) == \
                regions(search(original, tiny, query, top_k=5, merge=merge)), (query, merge)
    assert regions(search_similar(imported, tiny, tile_ids=[7], top_k=5)) == \
        regions(search_similar(original, tiny, tile_ids=[7], top_k=5))
    b = original.raster.bounds()
    box = (b[0], b[1], b[0] + 6, b[1] + 6)
    assert regions(search_similar(imported, tiny, bbox=box, top_k=3)) == \
        regions(search_similar(original, tiny, bbox=box, top_k=3))


def test_a_file_filtered_elsewhere_imports_as_a_smaller_index(exported: tuple[Path, Path], tmp_path: Path) -> None:
    folder, file = exported
    original = open_index(folder)
    half = rewrite(file, tmp_path / "half.parquet", lambda t: t.filter(pa.compute.equal(
        pa.compute.bit_wise_and(t.column("id"), 1), 1)))
    imported = open_index(import_geoparquet(half, tmp_path / "half").path)
    assert imported.count == original.count // 2 and imported.manifest["imported"]["renumbered"]
    assert np.array_equal(imported.tiles, original.tiles[1::2])
    assert np.array_equal(imported.vectors.reconstruct_n(0, imported.count),
                          original.vectors.reconstruct_n(0, original.count)[1::2])


def test_a_large_import_with_its_model_is_searched_approximately(exported: tuple[Path, Path], tiny: ClipEmbedder,
                                                                tmp_path: Path) -> None:
    _, file = exported
    made = import_geoparquet(file, tmp_path / "ivf", embedder=tiny, approximate_from=100)
    index = open_index(made.path)
    assert made.search == "ivf" and index.manifest["search"]["kind"] == "ivf"
    assert index.manifest["search"]["recall_text"] >= 0.99
    assert search(index, tiny, "trees", top_k=3).regions


def test_an_import_past_the_compact_threshold_is_stored_compactly(
        exported: tuple[Path, Path], tiny: ClipEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, file = exported
    original = open_index(folder)
    monkeypatch.setattr(compact, "COMPACT_FROM", 200)
    assert original.count >= 200
    plain = import_geoparquet(file, tmp_path / "plain", approximate_from=100)  # no model: stored vectors only
    with_model = import_geoparquet(file, tmp_path / "model", embedder=tiny, approximate_from=100)
    for made in (plain, with_model):
        index = open_index(made.path)
        assert made.search == "compact" and index.manifest["search"]["kind"] == "compact"
        assert isinstance(index.vectors, compact.CompactIndex) and index.manifest["search"]["recall_image"] >= 0.95
        found, expected = (search_similar(i, tiny, tile_ids=[7], top_k=5).regions for i in (index, original))
        assert [[m.tile_id for m in r.members] for r in found] == [[m.tile_id for m in r.members] for r in expected]
        np.testing.assert_allclose([r.score for r in found], [r.score for r in expected], atol=1e-3)  # float16 rows
    assert "recall_text" not in open_index(plain.path).manifest["search"]
    assert open_index(with_model.path).manifest["search"]["recall_text"] >= 0.95


def _wrong_dimension(table: pa.Table) -> pa.Table:
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)[:, :-1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    return table.set_column(table.schema.get_field_index("embedding"), "embedding", column)


def _without_crs(metadata: dict[bytes, bytes]) -> None:
    geo = json.loads(metadata[b"geo"])
    del geo["columns"]["geometry"]["crs"]
    metadata[b"geo"] = json.dumps(geo).encode()


BAD_FILES: dict[str, tuple[dict[str, Any], str]] = {
    "no model identity": ({"metadata": lambda m: m.pop(PROJECT_KEY)}, "no model identity"),
    "model identity without its model": (
        {"metadata": lambda m: m.update({PROJECT_KEY: json.dumps({"dim": 64}).encode()})}, "no model identity"),
    "wrong dimension": ({"table": _wrong_dimension}, r"have 63 values, but its model .* makes 64"),
    "missing column": ({"table": lambda t: t.drop_columns(["col_off"])}, "lacks the column.* col_off"),
    "no CRS": ({"metadata": _without_crs}, "has no CRS"),
    "not GeoParquet": ({"metadata": lambda m: m.pop(b"geo")}, "not GeoParquet"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_refused_and_nothing_is_written(case: str, exported: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    folder, file = exported
    changes, message = BAD_FILES[case]
    bad = rewrite(file, tmp_path / "bad.parquet", **changes)
    with pytest.raises(InputError, match=message):
        import_geoparquet(bad, tmp_path / "new")
    earlier = shutil.copytree(folder, tmp_path / "earlier")  # an index already there is kept as it was
    before = (earlier / MANIFEST).read_bytes()
    with pytest.raises(InputError, match=message):
        import_geoparquet(bad, earlier)
    assert (earlier / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "earlier"]


def test_a_text_file_named_parquet_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.parquet"
    text.write_text("id,vector\n1,0.5\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        import_geoparquet(text, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_an_export_replaces_only_a_parquet_file(exported: tuple[Path, Path], tmp_path: Path) -> None:
    folder, file = exported
    text = tmp_path / "notes.parquet"
    text.write_text("keep me", encoding="utf-8")
    with pytest.raises(InputError, match="not a Parquet file"):
        export_geoparquet(folder, text)
    assert text.read_text(encoding="utf-8") == "keep me"
    with pytest.raises(InputError, match=r"end in \.parquet"):
        export_geoparquet(folder, tmp_path / "tiles.csv")
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(InputError, match="not a plain file"):
        export_geoparquet(folder, tmp_path / "folder.parquet")
    again = shutil.copy(file, tmp_path / "again.parquet")
    os.truncate(again, 100)  # a damaged earlier export is still a Parquet file of ours: replaced
    assert export_geoparquet(folder, again).rows == pq.read_metadata(again).num_rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.parquet", "folder.parquet", "notes.parquet"]


def test_an_index_of_a_raster_without_georeference_is_not_exported(tiny: ClipEmbedder, tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(1, 200, size=(3, 64, 64)).astype("uint8")
    raster = write_geotiff(tmp_path / "plain.tif", pixels, transform=Affine.identity(), crs=None)
    index = build_index(raster, IndexSettings(tiling=TilingSettings(tile_size=32), model=SETTINGS.model),
                        tmp_path / "ix", embedder=tiny).path
    with pytest.raises(InputError, match="without georeference"):
        export_geoparquet(index, tmp_path / "plain.parquet")
    assert not (tmp_path / "plain.parquet").exists()


def engine(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clip_search_plugin.engine", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_the_command_line_exports_imports_and_refuses_a_bad_file_in_one_line(exported: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    folder, _ = exported
    done = engine("export", folder, "--format", "geoparquet", "-o", tmp_path / "cli.parquet")
    assert done.returncode == 0, done.stderr
    assert pq.read_metadata(tmp_path / "cli.parquet").num_rows == open_index(folder).count
    done = engine("import", tmp_path / "cli.parquet", "--output", tmp_path / "cli index")
    assert done.returncode == 0, done.stderr
    assert open_index(tmp_path / "cli index").count == open_index(folder).count
    bad = rewrite(tmp_path / "cli.parquet", tmp_path / "bad.parquet", metadata=lambda m: m.pop(PROJECT_KEY))
    for args in (("import", bad, "--output", tmp_path / "nothing"),
                 ("export", folder, "-o", tmp_path / "cli index" / MANIFEST)):
        done = engine(*args)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "nothing").exists()
