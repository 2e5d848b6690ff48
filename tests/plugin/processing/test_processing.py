"""The Processing algorithms through processing.run in real QGIS, with no iface (as under qgis_process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsGraduatedSymbolRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)

from clip_search_plugin.processing.run import BUILD_WEIGHT

from ..conftest import shared_raster

PREFER_FILE_NAME = "Processing/Configuration/PREFER_FILENAME_AS_LAYER_NAME"  # QGIS's "name outputs after files"
RESULT_FIELDS = ["rank", "score", "relative", "query", "tile_count", "area", "area_units"]


def in_project(layer: Any) -> Any:
    """Layers given to algorithms belong to the project, as in QGIS (one owned by Python that outlives
    the QGIS application, kept alive by an exception's traceback, crashes the test process at exit)."""
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def run(algorithm: str, parameters: dict[str, Any], feedback: QgsProcessingFeedback | None = None) -> dict[str, Any]:
    import processing  # QGIS's own Processing plugin

    return dict(processing.run(f"clipsearch:{algorithm}", parameters, feedback=feedback))


def run_and_load(algorithm: str, parameters: dict[str, Any]) -> tuple[list[Any], list[float]]:
    """Run as the Processing dialog and the Python console's runAndLoadResults do: the outputs are loaded into
    the project when the run ends. The layers it added, and the progress it reported meanwhile."""
    import processing

    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    before = set(QgsProject.instance().mapLayers())
    processing.runAndLoadResults(f"clipsearch:{algorithm}", parameters, feedback=feedback, context=context)
    added = [layer for lid, layer in QgsProject.instance().mapLayers().items() if lid not in before]
    return added, progress


def check_styled_like_the_dock(layer: QgsVectorLayer) -> None:
    """A score-graded fill over the layer's scores and the rank as a label, as the dock's results layer."""
    renderer = layer.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "score"
    scores = [f["score"] for f in layer.getFeatures()]
    assert scores and renderer.ranges()[0].lowerValue() == min(scores)
    assert renderer.ranges()[-1].upperValue() == max(scores)
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"


def moved(progress: list[float]) -> bool:
    """The progress bar moved during the run (not only 100 at the end) and ended full."""
    return len(set(progress)) > 1 and progress[-1] == 100


def check_results(path: str, raster: QgsRasterLayer) -> list[QgsFeature]:
    layer = QgsVectorLayer(path, "results", "ogr")
    assert layer.isValid(), path
    assert [f.name() for f in layer.fields() if f.name() != "fid"] == RESULT_FIELDS
    assert layer.crs() == raster.crs()
    extent = QgsGeometry.fromRect(raster.extent()).buffer(1e-6, 1)
    features = list(layer.getFeatures())
    for feature in features:
        assert extent.contains(feature.geometry()), feature.geometry().asWkt()
        assert feature["tile_count"] >= 1 and -1.0 <= feature["score"] <= 1.0
    return features


def test_build_search_and_find_similar(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    path = shared_raster("drone_rgba_alpha.tif")
    raster = in_project(QgsRasterLayer(str(path), "drone"))
    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    built = run("buildindex", {
        "INPUT": str(path), "MODEL": "tiny-random", "TILE_SIZE": 96, "TILE_UNITS": 0, "OVERLAP": 0.5,
        "SCALES": "1 2", "DEVICE": 1, "BACKEND": 2, "OUTPUT": str(tmp_path / "index"),
    }, feedback)
    assert Path(built["INDEX"]) == tmp_path / "index" and built["TILES"] > 0
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["backend"]["name"] == manifest["backend"]["requested"] == "onnx"  # verified, then used
    assert manifest["tile_count"] == built["TILES"] and manifest["tiling"]["scales"] == [1.0, 2.0]
    assert progress and max(progress) == 100

    out = str(tmp_path / "found.gpkg")
    searched = run("searchindex", {
        "INDEX": built["INDEX"], "QUERIES": "a roof\n\n  a road  \n", "TOP_K": 6, "MERGE": True, "OUTPUT": out,
    })
    features = check_results(searched["OUTPUT"], raster)
    assert {f["query"] for f in features} == {"a roof", "a road"}
    for query in ("a roof", "a road"):
        ranks = sorted(f["rank"] for f in features if f["query"] == query)
        assert ranks == list(range(1, len(ranks) + 1))
        assert len(ranks) == 6  # the number of results asked for

    unmerged = run("searchindex", {"INDEX": built["INDEX"], "QUERIES": "a roof", "TOP_K": 6, "MERGE": False,
                                   "THRESHOLD": -1.0, "OUTPUT": str(tmp_path / "tiles.geojson")})
    assert len(check_results(unmerged["OUTPUT"], raster)) == 6

    # reference features in another CRS (WGS 84), one of them selected
    reference = in_project(QgsVectorLayer("Polygon?crs=EPSG:4326", "reference", "memory"))
    to_wgs84 = QgsCoordinateTransform(raster.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    e = raster.extent()
    corner = QgsRectangle(e.xMinimum(), e.yMinimum(), e.xMinimum() + e.width() / 5, e.yMinimum() + e.height() / 5)
    example = QgsFeature()
    example.setGeometry(QgsGeometry.fromRect(to_wgs84.transformBoundingBox(corner)))
    reference.dataProvider().addFeatures([example])
    similar = run("findsimilar", {"INDEX": built["INDEX"], "REFERENCE": reference, "TOP_K": 5,
                                  "OUTPUT": str(tmp_path / "similar.gpkg")})
    found = check_results(similar["OUTPUT"], raster)
    assert found and {f["query"] for f in found} == {"like reference"}
    assert not any(f.geometry().intersects(QgsGeometry.fromRect(corner).buffer(-1e-3, 1)) for f in found)


def test_prompts_heatmap_and_evaluation(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    import csv

    path = shared_raster("drone_rgba_alpha.tif")
    raster = in_project(QgsRasterLayer(str(path), "drone"))
    built = run("buildindex", {"INPUT": str(path), "MODEL": "tiny-random", "TILE_SIZE": 96, "DEVICE": 1,
                               "OUTPUT": str(tmp_path / "index")})

    def scores(**extra: Any) -> list[float]:
        found = run("searchindex", {"INDEX": built["INDEX"], "QUERIES": "a roof", "TOP_K": 5, "MERGE": False,
                                    "OUTPUT": str(tmp_path / f"s{len(list(tmp_path.iterdir()))}.gpkg"), **extra})
        return sorted(round(f["score"], 6) for f in check_results(found["OUTPUT"], raster))

    aerial, typed = scores(PROMPTS=0), scores(PROMPTS=1)
    engine_settings.templates = "a {} seen from a plane\n{} on the ground"
    engine_settings.save()
    own = scores(PROMPTS=0)
    assert aerial != typed and own != aerial and own != typed  # each prompt choice gives its own query vector
    assert scores(PROMPTS=1, MIN_RELATIVE=50.0) == []  # nothing is 50 standard deviations above the rest

    heat = run("scoreheatmap", {"INDEX": built["INDEX"], "QUERY": "a roof", "OUTPUT": str(tmp_path / "heat.tif")})
    heatmap = in_project(QgsRasterLayer(heat["OUTPUT"], "heat"))  # owned by the project (see in_project)
    assert heatmap.bandCount() == 2 and heatmap.crs() == raster.crs()
    assert heatmap.extent().intersects(raster.extent())
    with pytest.raises(QgsProcessingException, match=r"choose a \.tif file"):
        run("scoreheatmap", {"INDEX": built["INDEX"], "QUERY": "a roof", "OUTPUT": str(tmp_path / "heat.png")})

    # labels in another CRS, in a memory layer (handed to the engine as a file by Processing)
    labels = in_project(QgsVectorLayer("Polygon?crs=EPSG:4326&field=kind:string", "labels", "memory"))
    to_wgs84 = QgsCoordinateTransform(raster.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    e = raster.extent()
    for n, kind in enumerate(("roof", "road", "roof")):
        x = e.xMinimum() + e.width() * (0.1 + 0.3 * n)
        box = QgsRectangle(x, e.yMinimum() + e.height() * 0.3, x + e.width() * 0.2, e.yMinimum() + e.height() * 0.6)
        feature = QgsFeature(labels.fields())
        feature.setGeometry(QgsGeometry.fromRect(to_wgs84.transformBoundingBox(box)))
        feature.setAttributes([kind])
        labels.dataProvider().addFeatures([feature])
    report = run("evaluate", {"INDEX": built["INDEX"], "LABELS": labels, "CLASS_FIELD": "kind", "TOP_K": 10,
                              "QUERIES": "roof = a roof\nroad = a road", "OUTPUT_FOLDER": str(tmp_path / "report")})
    assert 0.0 <= report["MAP"] <= 1.0 and 0.0 <= report["RANDOM_MAP"] <= 1.0
    assert Path(report["PLOT"]).stat().st_size > 1000 and "| random |" in Path(report["MARKDOWN"]).read_text()
    with open(report["CSV"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {(r["templates"], r["query"]) for r in rows} >= {("aerial", "a roof"), ("raw", "a road"), ("-", "random")}
    with pytest.raises(QgsProcessingException, match="No label polygons of class bridge"):
        run("evaluate", {"INDEX": built["INDEX"], "LABELS": labels, "CLASS_FIELD": "kind",
                         "QUERIES": "bridge = a bridge", "OUTPUT_FOLDER": str(tmp_path / "report2")})


def test_look_alike_reranking_can_be_switched_off(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    """Re-rank with look-alikes reaches the engine for text searches and searches by example: the log says how
    the engine ranked, and the scores differ (a tile's own score, or the mean over it and its look-alikes)."""
    path = shared_raster("drone_rgba_alpha.tif")
    raster = in_project(QgsRasterLayer(str(path), "drone"))
    built = run("buildindex", {"INPUT": str(path), "MODEL": "tiny-random", "TILE_SIZE": 96, "DEVICE": 1,
                               "OUTPUT": str(tmp_path / "index")})
    reference = in_project(QgsVectorLayer(f"Polygon?crs={raster.crs().authid()}", "reference", "memory"))
    example = QgsFeature()
    e = raster.extent()
    example.setGeometry(QgsGeometry.fromRect(QgsRectangle(e.center(), e.center()).buffered(e.width() / 10)))
    reference.dataProvider().addFeatures([example])
    for algorithm, given in (("searchindex", {"QUERIES": "a roof"}), ("findsimilar", {"REFERENCE": reference})):
        scores, logs = {}, {}
        for rerank in (None, True, False):  # None: left out, as in a model saved before the switch existed
            feedback = QgsProcessingFeedback()
            switch = {} if rerank is None else {"RERANK": rerank}
            found = run(algorithm, {"INDEX": built["INDEX"], "TOP_K": 5, "MERGE": False, **given, **switch,
                                    "OUTPUT": str(tmp_path / f"{algorithm}{rerank}.gpkg")}, feedback)
            scores[rerank] = [round(f["score"], 6) for f in check_results(found["OUTPUT"], raster)]
            logs[rerank] = feedback.textLog()
        assert "re-ranked with look-alikes" in logs[None] and "re-ranked with look-alikes" in logs[True]
        assert "ranked by each tile's own score" in logs[False] and "re-ranked" not in logs[False]
        assert scores[None] == scores[True] != scores[False]


def test_search_by_raster_layer_uses_its_index(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    path = shared_raster("colorado_rgb_015m.tif")
    raster = in_project(QgsRasterLayer(str(path), "colorado"))
    with pytest.raises(QgsProcessingException, match="has no CLIP index yet; run Build CLIP index"):
        run("searchindex", {"RASTER": raster, "QUERIES": "a car", "OUTPUT": "TEMPORARY_OUTPUT"})
    # built into the index folder of the settings, where the dock looks too
    built = run("buildindex", {"INPUT": raster, "MODEL": "tiny-random", "TILE_SIZE": 96, "DEVICE": 1})
    assert Path(built["INDEX"]).parent == Path(engine_settings.cache_folder)
    result = run("searchindex", {"RASTER": raster, "QUERIES": "a car", "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = result["OUTPUT"]
    layer = layer if isinstance(layer, QgsVectorLayer) else QgsVectorLayer(layer)
    assert layer.featureCount() > 0 and layer.crs() == raster.crs()
    del layer, result  # a temporary layer must not outlive QGIS (deleting it at interpreter exit crashes)


def test_bad_input_is_refused_with_what_to_do(provider: Any, tmp_path: Path) -> None:
    path = str(shared_raster("drone_rgba_alpha.tif"))
    with pytest.raises(QgsProcessingException, match="Give a raster layer that has been indexed, or an index"):
        run("searchindex", {"QUERIES": "a car", "OUTPUT": "TEMPORARY_OUTPUT"})
    with pytest.raises(QgsProcessingException, match="at least one query"):
        run("searchindex", {"INDEX": str(tmp_path), "QUERIES": " \n ", "OUTPUT": "TEMPORARY_OUTPUT"})
    with pytest.raises(QgsProcessingException, match=r"build the index again|not a CLIP Search index"):
        run("searchindex", {"INDEX": str(tmp_path), "QUERIES": "a car", "OUTPUT": "TEMPORARY_OUTPUT"})
    with pytest.raises(QgsProcessingException, match="Scales must be numbers"):
        run("buildindex", {"INPUT": path, "MODEL": "tiny-random", "SCALES": "1 big"})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(QgsProcessingException, match="not a CLIP Search index; choose an empty or new"):
        run("buildindex", {"INPUT": path, "MODEL": "tiny-random", "DEVICE": 1, "OUTPUT": str(tmp_path)})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_requests_refusal_is_the_runs_error_before_an_engine_starts(provider: Any, engine_settings: Any,
                                                                      tmp_path: Path) -> None:
    """The algorithms make the dock's typed requests from their parameters; a value a request refuses is the run's
    error in the request's own words, said before an engine is started (here none could be)."""
    engine_settings.engine_python = str(tmp_path / "no-engine" / "bin" / "python")
    engine_settings.save()
    with pytest.raises(QgsProcessingException, match="The query is 1249 characters long; keep it under 1000"):
        run("searchindex", {"INDEX": str(tmp_path), "QUERIES": "roof " * 250, "OUTPUT": "TEMPORARY_OUTPUT"})
    with pytest.raises(QgsProcessingException, match="The query is empty; describe what to find"):
        run("scoreheatmap", {"INDEX": str(tmp_path), "QUERY": "   ", "OUTPUT": str(tmp_path / "heat.tif")})
    with pytest.raises(QgsProcessingException, match=r"Scales must be positive numbers, e\.g\. 1 2 4; got \[0\.0\]"):
        run("buildindex", {"INPUT": str(shared_raster("drone_rgba_alpha.tif")), "MODEL": "tiny-random", "SCALES": "0",
                           "OUTPUT": str(tmp_path / "index")})
    with pytest.raises(QgsProcessingException, match="no-engine/bin/python does not exist"):  # had it been started
        run("searchindex", {"INDEX": str(tmp_path), "QUERIES": "a roof", "OUTPUT": "TEMPORARY_OUTPUT"})


def test_cancelling_a_build_stores_no_index(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    path = str(shared_raster("drone_rgba_alpha.tif"))
    feedback = QgsProcessingFeedback()
    engine_started = 100.0 / (1 + BUILD_WEIGHT)  # the bar's share of starting the engine; beyond it, tiles
    feedback.progressChanged.connect(lambda percent: percent > engine_started and feedback.cancel())
    with pytest.raises(QgsProcessingException, match=r"[Cc]ancelled"):
        run("buildindex", {"INPUT": path, "MODEL": "tiny-random", "TILE_SIZE": 20, "DEVICE": 1,
                           "OUTPUT": str(tmp_path / "index")}, feedback)
    assert not (tmp_path / "index" / "manifest.json").exists()
    # only the progress a later build resumes from, in a hidden folder that is not an index
    assert not [p for p in tmp_path.iterdir() if p.name not in ("index", ".index.partial") or
                (p.name == "index" and any(p.iterdir()))]
    assert not (tmp_path / ".index.partial" / "manifest.json").exists()


def test_every_algorithm_and_parameter_has_help(provider: Any) -> None:
    registry = QgsApplication.processingRegistry()
    algorithms = registry.providerById("clipsearch").algorithms()
    assert sorted(a.id() for a in algorithms) == ["clipsearch:buildcollection", "clipsearch:buildindex",
                                                  "clipsearch:evaluate",
                                                  "clipsearch:findsimilar", "clipsearch:scoreheatmap",
                                                  "clipsearch:searchindex"]
    for algorithm in algorithms:
        text = algorithm.shortHelpString()
        assert len(text) > 200
        for parameter in algorithm.parameterDefinitions():
            assert parameter.help(), f"{algorithm.id()}: {parameter.name()} has no help"
            assert f"<b>{parameter.description()}</b>" in text


def test_a_model_builds_then_searches(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    """The Model Builder recipe of the README: the search's index folder is the build's output."""
    from qgis.core import (
        QgsProcessingContext,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterString,
    )

    model = QgsProcessingModelAlgorithm("index and search", "", "")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "Raster"),
                            QgsProcessingModelParameter("raster"))
    model.addModelParameter(QgsProcessingParameterString("queries", "Queries", multiLine=True),
                            QgsProcessingModelParameter("queries"))
    build = QgsProcessingModelChildAlgorithm("clipsearch:buildindex")
    build.setChildId("build")
    build.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("raster")])
    build.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue("tiny-random")])
    build.addParameterSources("TILE_SIZE", [QgsProcessingModelChildParameterSource.fromStaticValue(96)])
    build.addParameterSources("DEVICE", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    model.addChildAlgorithm(build)
    search = QgsProcessingModelChildAlgorithm("clipsearch:searchindex")
    search.setChildId("search")
    search.addParameterSources("INDEX", [QgsProcessingModelChildParameterSource.fromChildOutput("build", "INDEX")])
    search.addParameterSources("QUERIES", [QgsProcessingModelChildParameterSource.fromModelParameter("queries")])
    search.addParameterSources("TOP_K", [QgsProcessingModelChildParameterSource.fromStaticValue(4)])
    output = QgsProcessingModelOutput("results", "Results")
    output.setChildOutputName("OUTPUT")
    output.setChildId("search")
    search.setModelOutputs({"results": output})
    model.addChildAlgorithm(search)
    # what Model Builder offers for the search's index folder: the build's output
    offered = model.availableSourcesForChild("search", [], ["outputFolder"], [])
    assert ("build", "INDEX") in [(s.outputChildId(), s.outputName()) for s in offered]

    path = shared_raster("drone_rgba_alpha.tif")
    context = QgsProcessingContext()
    results, ok = model.run({"raster": str(path), "queries": "a roof", "search:results": str(tmp_path / "out.gpkg")},
                            context, QgsProcessingFeedback())
    assert ok
    features = check_results(results["search:results"], in_project(QgsRasterLayer(str(path), "drone")))
    assert features and {f["query"] for f in features} == {"a roof"}


def test_loaded_outputs_look_and_read_like_the_docks(provider: Any, engine_settings: Any, tmp_path: Path) -> None:
    """Outputs loaded when a run ends are named after what was searched and styled as the dock styles its
    results, and the progress bar moves during builds and searches, query by query."""
    path = shared_raster("drone_rgba_alpha.tif")
    in_project(QgsRasterLayer(str(path), "drone"))
    _, progress = run_and_load("buildindex", {"INPUT": str(path), "MODEL": "tiny-random", "TILE_SIZE": 96,
                                                  "DEVICE": 1, "OUTPUT": str(tmp_path / "index")})
    assert moved(progress) and 0 < min(progress) < 50, progress
    index = str(tmp_path / "index")

    (layer,), progress = run_and_load("searchindex", {"INDEX": index, "QUERIES": "swimming pool", "TOP_K": 6,
                                                      "OUTPUT": "TEMPORARY_OUTPUT"})
    assert layer.name() == "CLIP: swimming pool [random weights]"
    check_styled_like_the_dock(layer)
    assert moved(progress), progress  # one query: the engine started, the index opened, the search done

    reference = in_project(QgsVectorLayer("Polygon?crs=EPSG:32750", "reference", "memory"))
    example = QgsFeature()
    example.setGeometry(QgsGeometry.fromRect(QgsRectangle(layer.extent().center(), layer.extent().center())
                                             .buffered(20)))
    reference.dataProvider().addFeatures([example])
    (similar,), progress = run_and_load("findsimilar", {"INDEX": index, "REFERENCE": reference, "TOP_K": 5,
                                                        "OUTPUT": "TEMPORARY_OUTPUT"})
    assert similar.name() == "CLIP: like reference [random weights]"
    assert {f["query"] for f in similar.getFeatures()} == {"like reference"}
    check_styled_like_the_dock(similar)
    assert moved(progress), progress

    # into a file: the dock's fields, styled the same; named after the queries unless QGIS is set to name
    # outputs after their files (QGIS 3.22 does not apply that setting to outputs named by the algorithm)
    settings = QgsSettings()
    settings.setValue(PREFER_FILE_NAME, False)
    queries = ["swimming pool", "a road", "a roof"]
    try:
        (written,), progress = run_and_load("searchindex", {
            "INDEX": index, "QUERIES": "\n".join(queries), "TOP_K": 6, "OUTPUT": str(tmp_path / "found.gpkg")})
    finally:
        settings.remove(PREFER_FILE_NAME)
    assert written.source().startswith(str(tmp_path / "found.gpkg"))
    assert written.name() == "CLIP: swimming pool; a road; a roof [random weights]"
    assert [f.name() for f in written.fields() if f.name() != "fid"] == RESULT_FIELDS
    check_styled_like_the_dock(written)
    assert len({round(p) for p in progress if 0 < p < 100}) >= len(queries), progress  # a step per query

    (heatmap,), progress = run_and_load("scoreheatmap", {"INDEX": index, "QUERY": "a roof",
                                                         "OUTPUT": "TEMPORARY_OUTPUT"})
    assert heatmap.name() == "heatmap: a roof"
    assert isinstance(heatmap.renderer(), QgsSingleBandPseudoColorRenderer) and heatmap.renderer().band() == 1
    assert moved(progress), progress
