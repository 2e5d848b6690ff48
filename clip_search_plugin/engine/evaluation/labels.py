"""Search quality on labelled imagery: ranked results scored against label polygons.

A result region is **relevant** to a query of class C when at least ``min_overlap`` of its area lies on
label polygons of class C and it covers a labelled object of class C that no better-ranked result has
already found (each object is found once; a second result on the same object counts as a false positive,
as a user would see it). With ``n`` labelled objects of class C and ``rel[i]`` = 1 for a relevant result
at rank ``i`` (1-based):

- P@k = (relevant results in the first k) / k
- R@k = (objects found by the first k results) / n
- AP = (sum over relevant ranks i of P@i) / n      (mAP: the mean of AP over queries)
- nDCG@k = DCG@k / IDCG@k with DCG@k = sum rel[i] / log2(i + 1), IDCG@k the same for min(k, n) ones

The random baseline ranks the index's tiles in a random order (seeded, averaged over several orders)
and goes through the same merging and scoring, so it is the figure to beat for that index and labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..index.store import OpenIndex
from ..query.regions import Region

DEFAULT_KS = (5, 10, 20)


# --- metrics on a ranked list of 0/1 relevances --------------------------------------------------------
def precision_at_k(relevant: Sequence[int], k: int) -> float:
    if k <= 0:
        raise InputError("k must be at least 1.")
    return float(sum(relevant[:k])) / k


def recall_at_k(found_objects: Sequence[int], n_objects: int, k: int) -> float:
    """``found_objects[i]`` is 1 when result ``i`` found a new object (the same list as ``relevant``)."""
    return float(sum(found_objects[:k])) / n_objects if n_objects else 0.0


def average_precision(relevant: Sequence[int], n_objects: int) -> float:
    if n_objects == 0:
        return 0.0
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / n_objects


def ndcg_at_k(relevant: Sequence[int], n_objects: int, k: int) -> float:
    dcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(relevant[:k], start=1))
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, n_objects) + 1))
    return dcg / ideal if ideal else 0.0


def precision_recall_curve(relevant: Sequence[int], n_objects: int) -> list[tuple[float, float]]:
    """(recall, precision) after each rank, for the plot."""
    points, hits = [], 0
    for rank, rel in enumerate(relevant, start=1):
        hits += rel
        points.append((hits / n_objects if n_objects else 0.0, hits / rank))
    return points


# --- labels -------------------------------------------------------------------------------------------
@dataclass
class Labels:
    """Label polygons in the raster's CRS, by class."""

    by_class: dict[str, list[Any]]  # class -> shapely geometries

    def classes(self) -> list[str]:
        return sorted(self.by_class)


def read_labels(path: Path, class_field: str, raster_crs_wkt: str | None) -> Labels:
    """Polygons of a vector file (any OGR format) with a class field, reprojected to the raster's CRS."""
    import pyogrio
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.wkb import loads as load_wkb

    if not Path(path).exists():
        raise InputError(f"Label file {path} not found.")
    try:
        fields = [str(f) for f in pyogrio.read_info(str(path))["fields"]]
        if class_field not in fields:
            raise InputError(f"{path} has no field {class_field!r}; its fields are {', '.join(fields) or 'none'}.")
        meta, _, geometries, values = pyogrio.raw.read(str(path), columns=[class_field])
    except InputError:
        raise
    except Exception as exc:  # OGR's own message is the useful part
        raise InputError(f"Cannot read labels from {path}: {exc}") from exc
    fields = list(meta["fields"])
    classes = values[fields.index(class_field)]
    source_crs = meta.get("crs")
    reproject = bool(source_crs and raster_crs_wkt and CRS.from_user_input(source_crs) != CRS.from_wkt(raster_crs_wkt))
    by_class: dict[str, list[Any]] = {}
    for wkb, name in zip(geometries, classes, strict=True):
        if wkb is None or name is None:
            continue
        geometry = load_wkb(bytes(wkb))
        if reproject:
            geometry = shape(transform_geom(source_crs, CRS.from_wkt(raster_crs_wkt), mapping(geometry)))
        if geometry.area > 0:
            by_class.setdefault(str(name), []).append(geometry)
    if not by_class:
        raise InputError(f"{path} has no polygons with a value in {class_field!r}.")
    return Labels(by_class)


# --- scoring a ranking ----------------------------------------------------------------------------------
def relevance(regions: Sequence[Region], objects: Sequence[Any], min_overlap: float = 0.5) -> list[int]:
    """1 for each result that lies mostly (``min_overlap`` of its area) on an object not found before."""
    from shapely.geometry import shape
    from shapely.strtree import STRtree

    tree = STRtree(list(objects))
    found: set[int] = set()
    relevant = []
    for region in regions:
        geometry = shape(region.geometry)
        new = None
        covered = 0.0
        for i in tree.query(geometry):
            overlap = geometry.intersection(objects[int(i)]).area
            covered += overlap
            if overlap > 0 and int(i) not in found and new is None:
                new = int(i)
        is_relevant = geometry.area > 0 and covered / geometry.area >= min_overlap and new is not None
        if is_relevant and new is not None:
            found.add(new)
        relevant.append(int(is_relevant))
    return relevant


@dataclass
class QueryScores:
    query: str
    label_class: str
    n_objects: int
    relevant: list[int]
    ks: tuple[int, ...] = DEFAULT_KS
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k in self.ks:
            self.metrics[f"P@{k}"] = precision_at_k(self.relevant, k)
            self.metrics[f"R@{k}"] = recall_at_k(self.relevant, self.n_objects, k)
            self.metrics[f"nDCG@{k}"] = ndcg_at_k(self.relevant, self.n_objects, k)
        self.metrics["AP"] = average_precision(self.relevant, self.n_objects)


def mean_metrics(scores: Sequence[QueryScores]) -> dict[str, float]:
    if not scores:
        return {}
    return {name: float(np.mean([s.metrics[name] for s in scores])) for name in scores[0].metrics}


def random_regions(index: OpenIndex, top_k: int, rng: np.random.Generator, merge: bool = True) -> list[Region]:
    """The ``top_k`` places a search would return if the tiles were ranked at random."""
    from ..query.searching import _regions

    order = rng.permutation(index.count)[: max(64, 50 * top_k)]  # far more tiles than top_k places need
    found = [(int(t), 1.0 - i / max(1, len(order))) for i, t in enumerate(order)]
    return _regions(index, found, merge, top_k)[0]


def random_scores(
    index: OpenIndex, labels: Labels, label_class: str, top_k: int, ks: tuple[int, ...], runs: int = 20,
    seed: int = 0, min_overlap: float = 0.5,
) -> list[QueryScores]:
    """Scores of ``runs`` random rankings of the index's tiles for one class (the random baseline)."""
    rng = np.random.default_rng(seed)
    objects = labels.by_class[label_class]
    return [
        QueryScores("random", label_class, len(objects),
                    relevance(random_regions(index, top_k, rng), objects, min_overlap), ks)
        for _ in range(runs)
    ]


# --- the harness ------------------------------------------------------------------------------------------
def check_classes(labels: Labels, queries: Sequence[tuple[str, str]]) -> None:
    unknown = sorted({c for _, c in queries if c not in labels.by_class})
    if unknown:
        raise InputError(f"No label polygons of class {', '.join(unknown)}; classes: {', '.join(labels.classes())}.")


def evaluate_index(
    index: OpenIndex, embedder: Any, labels: Labels, queries: Sequence[tuple[str, str]], top_k: int = 20,
    ks: tuple[int, ...] = DEFAULT_KS, templates: Sequence[str] | None = None, threshold: float | None = None,
    min_overlap: float = 0.5,
) -> list[QueryScores]:
    """Scores of each (query text, label class) search of ``index``; ``templates`` None means raw text."""
    from ..query.searching import search

    check_classes(labels, queries)
    scores = []
    for text, label_class in queries:
        result = search(index, embedder, text, top_k=top_k, threshold=threshold, templates=templates or None)
        objects = labels.by_class[label_class]
        scores.append(QueryScores(text, label_class, len(objects), relevance(result.regions, objects, min_overlap), ks))
    return scores


@dataclass
class Report:
    """Rows (every query, per-configuration means and the random baseline) and 11-point PR curves."""

    rows: list[Row] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)

    def write(self, folder: Path, title: str) -> dict[str, str]:
        """results.csv, results.md and pr.png in ``folder``; their paths by kind."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"csv": folder / "results.csv", "markdown": folder / "results.md", "plot": folder / "pr.png"}
        write_csv(self.rows, paths["csv"])
        write_markdown(self.rows, paths["markdown"], f"Search quality on {title}")
        write_pr_plot(self.curves, paths["plot"], f"Precision-recall, {title}")
        return {kind: str(path) for kind, path in paths.items()}

    def means(self) -> list[Row]:
        return [r for r in self.rows if r.query in ("mean", "random")]


def evaluate_configurations(
    report: Report, index: OpenIndex, embedder: Any, labels: Labels, queries: Sequence[tuple[str, str]],
    template_sets: Sequence[tuple[str, Sequence[str] | None]], thresholds: Sequence[float | None],
    top_k: int = 20, ks: tuple[int, ...] = DEFAULT_KS, min_overlap: float = 0.5, random_runs: int = 20,
    log: Any = None,
) -> None:
    """Add to ``report`` the random baseline and every (template set x threshold) search of ``index``."""
    check_classes(labels, queries)
    label = embedder.identity.label()
    baseline: list[QueryScores] = []
    for _, label_class in queries:
        baseline += random_scores(index, labels, label_class, top_k, ks, random_runs, min_overlap=min_overlap)
    random_mean = mean_metrics(baseline)  # every class weighs the same: each has `random_runs` rankings
    report.rows.append(Row({"model": label, "templates": "-", "threshold": "-"}, "random", "(all)", random_mean))
    for set_name, templates in template_sets:
        for threshold in thresholds:
            shown = "none" if threshold is None else f"{threshold:g}"
            config = {"model": label, "templates": set_name, "threshold": shown}
            scores = evaluate_index(index, embedder, labels, queries, top_k, ks, templates, threshold, min_overlap)
            report.rows.extend(Row(config, s.query, s.label_class, s.metrics) for s in scores)
            report.rows.append(Row(config, "mean", "(all)", mean_metrics(scores)))
            report.curves[f"{set_name}, t={shown}"] = interpolated_pr(scores)
            if log is not None:
                log(f"  templates={set_name} threshold={shown}: mAP {report.rows[-1].metrics['AP']:.3f} "
                    f"(random {random_mean['AP']:.3f})")
    report.curves[f"random order, {index.identity.arch}"] = interpolated_pr(baseline)


def parse_queries(text: str, source: str = "queries") -> list[tuple[str, str]]:
    """(query text, label class) pairs from lines ``class<TAB>query`` or ``class = query`` (# comments)."""
    queries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label_class, sep, query = line.partition("\t") if "\t" in line else line.partition("=")
        if not sep or not label_class.strip() or not query.strip():
            raise InputError(f"{source}, line {number}: expected 'class<TAB>query' or 'class = query', got {line!r}.")
        queries.append((query.strip(), label_class.strip()))
    if not queries:
        raise InputError(f"{source} holds no queries; write one 'class = query' per line.")
    return queries


def class_queries(classes: Sequence[str]) -> list[tuple[str, str]]:
    """Each class name as its own query: (query text, label class) pairs."""
    return [(c, c) for c in classes]


@dataclass
class Row:
    """One line of the report: a configuration and a query (or "mean" / "random")."""

    config: dict[str, str]
    query: str
    label_class: str
    metrics: dict[str, float]


def write_csv(rows: Sequence[Row], path: Path) -> None:
    import csv

    config_keys = list(rows[0].config) if rows else []
    metric_keys = list(rows[0].metrics) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*config_keys, "query", "class", *metric_keys])
        for row in rows:
            writer.writerow([*(row.config[k] for k in config_keys), row.query, row.label_class,
                             *(f"{row.metrics[k]:.4f}" for k in metric_keys)])


def write_markdown(rows: Sequence[Row], path: Path, title: str = "Search quality") -> None:
    """A table of the mean and random-baseline rows per configuration (the CSV has every query)."""
    summary = [r for r in rows if r.query in ("mean", "random")]
    if not summary:
        path.write_text(f"# {title}\n\nNo results.\n", encoding="utf-8")
        return
    config_keys = list(summary[0].config)
    metric_keys = [k for k in summary[0].metrics if k == "AP" or k.startswith(("P@", "R@", "nDCG@"))]
    header = [*config_keys, "ranking", *("mAP" if k == "AP" else k for k in metric_keys)]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        values = [row.config[k] for k in config_keys] + [row.query] + [f"{row.metrics[k]:.3f}" for k in metric_keys]
        lines.append("| " + " | ".join(values) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def interpolated_pr(scores: Sequence[QueryScores], levels: int = 11) -> list[float]:
    """Mean interpolated precision at recall 0, 0.1, ... 1 (the usual 11-point curve)."""
    curves = []
    for s in scores:
        points = precision_recall_curve(s.relevant, s.n_objects)
        curves.append([max((p for r, p in points if r >= level / (levels - 1) - 1e-9), default=0.0)
                       for level in range(levels)])
    return [float(v) for v in np.mean(curves, axis=0)] if curves else [0.0] * levels


def write_pr_plot(curves: dict[str, list[float]], path: Path, title: str = "Precision-recall") -> None:
    """A small precision-recall chart (PNG) of 11-point curves, one line per configuration."""
    from PIL import Image, ImageDraw

    width, height, margin = 720, 480, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_w, plot_h = width - margin - 200, height - 2 * margin
    draw.rectangle([margin, margin, margin + plot_w, margin + plot_h], outline="black")
    for i in range(11):
        x = margin + plot_w * i / 10
        y = margin + plot_h * (1 - i / 10)
        draw.line([x, margin + plot_h, x, margin + plot_h + 4], fill="black")
        draw.line([margin - 4, y, margin, y], fill="black")
        if i % 2 == 0:
            draw.text((x - 8, margin + plot_h + 8), f"{i / 10:.1f}", fill="black")
            draw.text((margin - 32, y - 6), f"{i / 10:.1f}", fill="black")
    draw.text((margin + plot_w / 2 - 20, height - 24), "recall", fill="black")
    draw.text((8, margin - 24), "precision", fill="black")
    draw.text((margin, 16), title, fill="black")
    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    for n, (name, values) in enumerate(curves.items()):
        colour = "#999999" if name.startswith("random") else colours[n % len(colours)]
        xy = [(margin + plot_w * i / (len(values) - 1), margin + plot_h * (1 - v)) for i, v in enumerate(values)]
        draw.line(xy, fill=colour, width=2)
        y = margin + 18 * n
        draw.line([margin + plot_w + 16, y + 6, margin + plot_w + 36, y + 6], fill=colour, width=3)
        draw.text((margin + plot_w + 42, y), name[:26], fill="black")
    image.save(path)
