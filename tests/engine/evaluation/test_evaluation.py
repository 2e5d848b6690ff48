"""Evaluation metrics against hand-computed values, and result-to-label matching."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from shapely.geometry import box, mapping

from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.evaluation.labels import (
    QueryScores,
    average_precision,
    mean_metrics,
    ndcg_at_k,
    precision_at_k,
    precision_recall_curve,
    read_labels,
    recall_at_k,
    relevance,
)
from clip_search_plugin.engine.query.regions import Region


def test_metrics_match_hand_computed_values() -> None:
    ranked = [1, 0, 1, 0, 0]  # 3 labelled objects, two of them found, at ranks 1 and 3
    assert precision_at_k(ranked, 1) == 1.0
    assert precision_at_k(ranked, 3) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, 5) == pytest.approx(0.4)
    assert precision_at_k(ranked, 10) == pytest.approx(0.2)  # fewer results than k count as misses
    assert recall_at_k(ranked, 3, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, 3, 5) == pytest.approx(2 / 3)
    assert average_precision(ranked, 3) == pytest.approx((1 / 1 + 2 / 3) / 3)  # 5/9
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, 3, 5) == pytest.approx(dcg / ideal)  # 0.70392
    assert ndcg_at_k(ranked, 3, 1) == 1.0
    assert ndcg_at_k([0, 1], 1, 2) == pytest.approx((1 / math.log2(3)) / 1.0)
    assert precision_recall_curve(ranked, 3)[:3] == [(pytest.approx(1 / 3), 1.0), (pytest.approx(1 / 3), 0.5),
                                                     (pytest.approx(2 / 3), pytest.approx(2 / 3))]
    # a perfect ranking and an empty one
    assert average_precision([1, 1], 2) == 1.0 and ndcg_at_k([1, 1], 2, 5) == 1.0
    assert average_precision([0, 0, 0], 2) == 0.0 and average_precision([], 0) == 0.0
    with pytest.raises(InputError):
        precision_at_k(ranked, 0)


def test_query_scores_and_their_mean() -> None:
    a = QueryScores("pool", "pool", 2, [1, 1], ks=(1, 2))
    b = QueryScores("road", "road", 4, [0, 1], ks=(1, 2))
    assert a.metrics == {"P@1": 1.0, "R@1": 0.5, "nDCG@1": 1.0, "P@2": 1.0, "R@2": 1.0, "nDCG@2": 1.0, "AP": 1.0}
    assert b.metrics["AP"] == pytest.approx(0.5 / 4)
    mean = mean_metrics([a, b])
    assert mean["P@1"] == 0.5 and mean["R@2"] == pytest.approx((1.0 + 0.25) / 2)


def region(rank: int, geometry: object) -> Region:
    return Region(rank, 1.0 - rank / 10, mapping(geometry), geometry.bounds, geometry.area, "m2")  # type: ignore[attr-defined]


def test_a_result_counts_once_per_object_and_only_when_mostly_on_it() -> None:
    objects = [box(0, 0, 10, 10), box(40, 40, 50, 50)]
    ranked = [
        region(1, box(0, 0, 10, 10)),  # finds object 1
        region(2, box(1, 1, 9, 9)),  # the same object again: a false positive
        region(3, box(20, 20, 30, 30)),  # nothing there
        region(4, box(38, 40, 48, 50)),  # 80% on object 2: found
        region(5, box(8, 0, 18, 10)),  # 20% on object 1: not enough
    ]
    assert relevance(ranked, objects) == [1, 0, 0, 1, 0]
    assert relevance(ranked, objects, min_overlap=0.1)[4] == 0  # object 1 is already found
    assert relevance(ranked[4:], objects, min_overlap=0.1) == [1]


def test_labels_are_read_by_class_and_reprojected(tmp_path: Path) -> None:
    utm = 'PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","32633"]]'  # noqa: E501
    features = [
        {"type": "Feature", "properties": {"class": "pond"}, "geometry": mapping(box(15.0, 48.0, 15.001, 48.001))},
        {"type": "Feature", "properties": {"class": "pond"}, "geometry": mapping(box(15.01, 48.0, 15.011, 48.001))},
        {"type": "Feature", "properties": {"class": "park"}, "geometry": mapping(box(15.02, 48.0, 15.021, 48.001))},
        {"type": "Feature", "properties": {"class": None}, "geometry": mapping(box(15.03, 48.0, 15.031, 48.001))},
    ]
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    labels = read_labels(path, "class", utm)
    assert labels.classes() == ["park", "pond"] and len(labels.by_class["pond"]) == 2
    x0, y0, x1, y1 = labels.by_class["pond"][0].bounds
    assert 499_000 < x0 < 501_000 and 5_316_000 < y0 < 5_318_000  # metres now, not degrees
    assert 60 < x1 - x0 < 90 and 100 < y1 - y0 < 120
    with pytest.raises(InputError, match="no field 'label'; its fields are class"):
        read_labels(path, "label", utm)
    with pytest.raises(InputError, match="not found"):
        read_labels(tmp_path / "missing.gpkg", "class", utm)
