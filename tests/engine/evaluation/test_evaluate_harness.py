"""The evaluation harness end to end: a labelled mosaic of real scene photos, the tiny random model, and
the CSV / Markdown / plot it writes (figures near the random baseline, as random weights must give)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from ..conftest import REPO, SHARED_DATA

sys.path.insert(0, str(REPO / "scripts"))

SCENES = SHARED_DATA / "aerial_scenes"
CLASSES = ("pond", "football field", "parking")


@pytest.fixture
def mosaic(tmp_path: Path) -> tuple[Path, Path]:
    if not SCENES.is_dir():
        pytest.skip(f"scene photos not found at {SCENES} (shared test data)")
    from make_labeled_mosaic import make_labeled_mosaic

    raster = tmp_path / "mosaic.tif"
    labels = make_labeled_mosaic(raster, SCENES, list(CLASSES), per_class=2, scales=[0.25, 0.5], gap=40, width=800)
    return raster, labels


def test_labeled_mosaic_places_scenes_where_its_labels_say(mosaic: tuple[Path, Path]) -> None:
    raster, labels = mosaic
    features = json.loads(labels.read_text())["features"]
    assert sorted(f["properties"]["class"] for f in features) == sorted(c for c in CLASSES for _ in range(2))
    assert {f["properties"]["scale"] for f in features} == {0.25, 0.5}
    with rasterio.open(raster) as ds:
        data = ds.read()
        ground = np.median(data[:, :10, :10].reshape(3, -1), axis=1)
        for feature in features:
            ring = feature["geometry"]["coordinates"][0]
            (c0, r0), (c1, r1) = (~ds.transform @ tuple(ring[0]), ~ds.transform @ tuple(ring[2]))
            assert abs((c1 - c0) - 600 * feature["properties"]["scale"]) < 1 and abs(r1 - r0 - (c1 - c0)) < 1e-6
            inside = data[:, round(r0):round(r1), round(c0):round(c1)].reshape(3, -1)
            # a photo, not the plain ground around it
            assert np.abs(inside.astype(float).mean(axis=1) - ground).max() > 3 or inside.std() > 20


def test_harness_scores_the_tiny_model_near_random_and_writes_its_reports(
    mosaic: tuple[Path, Path], tmp_path: Path
) -> None:
    import evaluate

    raster, labels = mosaic
    out = tmp_path / "eval"
    code = evaluate.main([str(raster), "--labels", str(labels), "--models", "tiny-random", "--templates", "aerial",
                          "raw", "--tile-size", "96", "--scales", "1", "2", "--top-k", "10", "--ks", "1", "5", "10",
                          "--output", str(out)])
    assert code == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["templates"] for r in rows} == {"-", "aerial", "raw"}
    for templates in ("aerial", "raw"):
        per_query = [r for r in rows if r["templates"] == templates and r["query"] not in ("mean", "random")]
        assert sorted(r["class"] for r in per_query) == sorted(CLASSES)
        (mean,) = [r for r in rows if r["templates"] == templates and r["query"] == "mean"]
        for metric in ("P@5", "R@10", "nDCG@10", "AP"):  # the mean row is the mean of the queries
            assert float(mean[metric]) == pytest.approx(np.mean([float(r[metric]) for r in per_query]), abs=1e-4)
        for r in per_query:
            values = {k: float(v) for k, v in r.items() if k[:1] in "PRnA"}
            assert all(0.0 <= v <= 1.0 for v in values.values())
            assert values["R@1"] <= values["R@5"] <= values["R@10"]
    (random_row,) = [r for r in rows if r["query"] == "random"]
    random_ap = float(random_row["AP"])
    assert 0.02 < random_ap < 0.6  # 6 labelled photos among a few hundred tiles
    for templates in ("aerial", "raw"):
        (mean,) = [r for r in rows if r["templates"] == templates and r["query"] == "mean"]
        assert abs(float(mean["AP"]) - random_ap) < 0.4  # random weights: no better than chance, roughly

    report = (out / "results.md").read_text()
    assert "| mAP |" in report and report.count("\n| clip-search-tiny") == 3
    with Image.open(out / "pr.png") as plot:
        assert plot.size == (720, 480)
        colours = np.unique(np.asarray(plot.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 5  # axes, text and curves were drawn


def test_harness_refuses_unknown_classes_and_bad_templates(mosaic: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import evaluate

    raster, labels = mosaic
    queries = tmp_path / "queries.tsv"
    queries.write_text("airport\tan airport\n")
    args = [str(raster), "--labels", str(labels), "--models", "tiny-random", "--tile-size", "96",
            "--output", str(tmp_path / "eval")]
    assert evaluate.main([*args, "--queries", str(queries)]) == 2
    assert "No label polygons of class airport" in capsys.readouterr().err
    bad = tmp_path / "templates.txt"
    bad.write_text("a photo of\n")
    assert evaluate.main([*args, "--templates", str(bad)]) == 2
    assert "line 1 ('a photo of') must contain {} exactly once" in capsys.readouterr().err
    assert evaluate.main([*args, "--class-field", "kind"]) == 2
    assert "no field 'kind'" in capsys.readouterr().err


def test_engine_evaluate_request_scores_an_existing_index(mosaic: tuple[Path, Path], tmp_path: Path) -> None:
    from clip_search_plugin.engine.errors import InputError
    from clip_search_plugin.engine.serve.service import Service

    raster, labels = mosaic
    service = Service("cpu")
    never = lambda: False  # noqa: E731
    quiet = lambda done, total: None  # noqa: E731
    built = service.handle("index", {"raster": str(raster), "model": {"name": "tiny-random"},
                                     "tiling": {"tile_size": 96}, "output": str(tmp_path / "ix")}, quiet, never)
    params = {"index": built["path"], "labels": str(labels), "output": str(tmp_path / "report"),
              "template_sets": ["aerial", "raw"], "queries": "pond = a pond\nparking\tcar park", "top_k": 10,
              "ks": [5, 10]}
    answer = service.handle("evaluate", params, quiet, never)
    assert answer["queries"] == 2 and answer["random_weights"] is True
    assert [(m["templates"], m["ranking"]) for m in answer["means"]] == [("-", "random"), ("aerial", "mean"),
                                                                          ("raw", "mean")]
    for mean in answer["means"]:
        assert 0 <= mean["AP"] <= 1 and set(mean) >= {"P@5", "R@10", "nDCG@10"}
    with open(answer["files"]["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["query"] for r in rows} == {"a pond", "car park", "mean", "random"}
    assert Image.open(answer["files"]["plot"]).size == (720, 480)
    assert "| random |" in Path(answer["files"]["markdown"]).read_text(encoding="utf-8")
    for bad, message in ((dict(params, template_sets=["fancy"]), "template_sets"),
                         (dict(params, ks=[0]), "ks must be"), (dict(params, top_k=3), "at least the largest k"),
                         (dict(params, queries="pond a pond"), "line 1"),
                         (dict(params, queries="airport = an airport"), "No label polygons of class airport"),
                         (dict(params, class_field="kind"), "no field 'kind'"),
                         (dict(params, min_overlap=0), "min_overlap")):
        with pytest.raises(InputError, match=message):
            service.handle("evaluate", bad, quiet, never)
