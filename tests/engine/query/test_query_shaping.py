"""Negative text, relevance feedback and relative scores, with an embedder whose answers are known."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from clip_search_plugin.engine import request_values as values
from clip_search_plugin.engine.building.build import build_index, open_index, search
from clip_search_plugin.engine.embedding.embedder import normalise_rows
from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.query.templates import (
    AERIAL_TEMPLATES,
    parse_templates,
    prompt_templates,
    read_templates,
)
from clip_search_plugin.engine.query.vectors import ROCCHIO, embed_query, rocchio, split_negative, with_negative
from clip_search_plugin.engine.requests import SearchRequest
from clip_search_plugin.engine.settings import IndexSettings, TilingSettings

from ..conftest import write_geotiff
from ..test_georeference_truth import CASES, ColourEmbedder


def colour_scene() -> np.ndarray:
    """Ground with a red patch (west), a half-red half-blue patch (middle) and a blue patch (east)."""
    rng = np.random.default_rng(0)
    data = rng.integers(60, 120, size=(3, 256, 768), dtype=np.uint8)
    red, blue = np.array([220, 20, 20], dtype=np.uint8), np.array([20, 20, 220], dtype=np.uint8)
    data[:, 64:192, 64:192] = red[:, None, None]
    data[:, 64:192, 320:384] = red[:, None, None]
    data[:, 64:192, 384:448] = blue[:, None, None]
    data[:, 64:192, 576:704] = blue[:, None, None]
    return data


@pytest.fixture
def index(tmp_path: Path) -> object:
    transform, crs = CASES["utm"]
    raster = write_geotiff(tmp_path / "colours.tif", colour_scene(), transform, crs)
    settings = IndexSettings(tiling=TilingSettings(tile_size=128, overlap=0.5))
    return open_index(build_index(raster, settings, tmp_path / "ix", embedder=ColourEmbedder()).path)


def tile_at(index: object, col: int, row: int) -> int:
    """The id of the base tile whose upper-left pixel is (col, row)."""
    tiles = index.tiles  # type: ignore[attr-defined]
    (found,) = np.flatnonzero((tiles[:, 0] == col) & (tiles[:, 1] == row) & (tiles[:, 4] == 0))
    return int(found)


def test_but_not_is_split_and_pushes_results_away(index: object) -> None:
    assert split_negative("red cars BUT  NOT  trucks") == ("red cars", "trucks")
    assert split_negative("but not this") == ("but not this", None)
    embedder = ColourEmbedder()
    mixed, red = tile_at(index, 320, 64), tile_at(index, 64, 64)  # half red, half blue / all red
    plain = search(index, embedder, "red", top_k=50, threshold=0.5, templates=None)
    assert {mixed, red} <= {h.tile_id for h in plain.hits}
    pushed = search(index, embedder, "red but not blue", top_k=50, threshold=0.5, templates=None)
    assert pushed.query == "red but not blue"
    assert red in {h.tile_id for h in pushed.hits} and mixed not in {h.tile_id for h in pushed.hits}
    explicit = search(index, embedder, "red", negative="blue", top_k=50, threshold=0.5, templates=None)
    assert [(h.tile_id, h.score) for h in explicit.hits] == [(h.tile_id, h.score) for h in pushed.hits]
    with pytest.raises(InputError, match="between 0 and 1"):
        search(index, embedder, "red", negative="blue", negative_weight=2.0, templates=None)


def test_feedback_moves_the_query_and_drops_rejected_tiles(index: object) -> None:
    embedder = ColourEmbedder()
    before = search(index, embedder, "red", top_k=500, templates=None)
    scores_before = {h.tile_id: h.score for h in before.hits}
    blue_tile, mixed = tile_at(index, 576, 64), tile_at(index, 320, 64)
    assert 0.5 < scores_before[mixed] < 0.9  # the half-red half-blue tile is a middling match for red
    rejected = before.hits[0].tile_id
    after = search(index, embedder, "red", top_k=500, templates=None, relevant_ids=[mixed, tile_at(index, 384, 64)],
                   irrelevant_ids=[rejected])
    scores_after = {h.tile_id: h.score for h in after.hits}
    assert rejected not in scores_after  # a tile marked not relevant is not offered again
    assert scores_after[blue_tile] > scores_before[blue_tile] + 0.1  # moved toward the (partly blue) examples
    assert "feedback: 2 relevant, 1 not" in after.query
    with pytest.raises(InputError, match="Tile ids must be between"):
        search(index, embedder, "red", templates=None, relevant_ids=[10**6])


def test_relative_scores_read_the_same_way_and_filter(index: object) -> None:
    embedder = ColourEmbedder()
    result = search(index, embedder, "red", top_k=500, templates=None)
    mean, std = result.extra["score_mean"], result.extra["score_std"]
    for region in result.regions:
        assert region.relative == pytest.approx((region.score - mean) / std)
    assert result.regions[0].relative > 1.0  # the red patch stands out
    strict = search(index, embedder, "red", top_k=500, templates=None, min_relative=1.0)
    assert strict.regions and all(r.relative >= 1.0 - 1e-6 for r in strict.regions)
    assert 0 < len(strict.hits) < len(result.hits)
    assert all(h.score >= mean + 1.0 * std - 1e-6 for h in strict.hits)
    assert result.to_dict()["regions"][0]["relative"] == pytest.approx(result.regions[0].relative)


class WordEmbedder:
    """Text vectors from a fixed random table per distinct prompt: any mix-up of prompts shows."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        return normalise_rows(np.array(rows, dtype=np.float32))


def test_query_vectors_are_built_as_specified() -> None:
    embedder = WordEmbedder()
    templates = ("an aerial photo of {}.", "{} seen from above.")
    ensemble = embed_query(embedder, "  solar   panels ", templates)  # type: ignore[arg-type]
    assert embedder.seen == ["an aerial photo of solar panels.", "solar panels seen from above."]
    each = embedder.encode_text(embedder.seen[:2])
    mean = each.mean(axis=0)
    np.testing.assert_allclose(ensemble, mean / np.linalg.norm(mean), rtol=1e-6)  # mean of unit vectors, renormed
    raw = embed_query(embedder, "solar panels", None)  # type: ignore[arg-type]
    np.testing.assert_allclose(raw, embedder.encode_text(["solar panels"])[0], rtol=1e-6)
    negative = embedder.encode_text(["trees"])[0]
    pushed = with_negative(raw, negative, 0.5)
    np.testing.assert_allclose(pushed, (raw - 0.5 * negative) / np.linalg.norm(raw - 0.5 * negative), rtol=1e-6)
    good, bad = embedder.encode_text(["a", "b"]), embedder.encode_text(["c"])
    moved = rocchio(raw, good, bad)
    alpha, beta, gamma = ROCCHIO
    expected = alpha * raw + beta * good.mean(axis=0) - gamma * bad[0]
    np.testing.assert_allclose(moved, expected / np.linalg.norm(expected), rtol=1e-6)
    assert float(moved @ good.mean(axis=0)) > float(raw @ good.mean(axis=0))
    assert float(moved @ bad[0]) < float(raw @ bad[0])


def test_user_templates_are_checked_line_by_line(tmp_path: Path) -> None:
    text = "# my set\nan orthophoto of {}\n\n  {} from a drone  \n"
    assert parse_templates(text) == ("an orthophoto of {}", "{} from a drone")
    for bad, line in (("a photo of\n", 1), ("ok {}\nboth {} and {}\n", 2), ("a {0} photo\n", 1), ("{} }\n", 1)):
        with pytest.raises(InputError, match=f"line {line}"):
            parse_templates(bad)
    with pytest.raises(InputError, match="No prompt templates"):
        parse_templates("# only a comment\n\n")
    path = tmp_path / "t.txt"
    path.write_text("a view of {} from above\n", encoding="utf-8")
    assert read_templates(path) == ("a view of {} from above",)
    with pytest.raises(InputError, match="Cannot read"):
        read_templates(tmp_path / "missing.txt")
    assert prompt_templates(values.templates(["a {} roof"])) == ("a {} roof",)
    assert prompt_templates(values.templates("raw")) is None
    assert prompt_templates(values.templates("default")) == AERIAL_TEMPLATES
    assert all(t.count("{}") == 1 for t in AERIAL_TEMPLATES)
    with pytest.raises(InputError, match="line 1"):
        values.templates(["no placeholder"])
    with pytest.raises(InputError, match="line 1"):  # as a search request names them
        SearchRequest(index="ix", query="pool", templates=("no placeholder",))
