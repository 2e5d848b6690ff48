"""Measure search quality on labelled imagery: P@k, R@k, mAP, nDCG@k per query and overall, with a random
baseline, for several models x prompt-template sets x thresholds.

    python scripts/evaluate.py RASTER --labels LABELS [--class-field class] [--queries QUERIES.tsv]
        [--models ViT-B-32-openai ...] [--templates aerial raw] [--thresholds none 0.2]
        [--top-k 20] [--ks 5 10 20] [--tile-size 224] [--overlap 0.5] [--scales 1 2] --output DIR

RASTER is indexed once per model (into DIR/indexes). LABELS is any vector file with
polygons and a class field (e.g. the labels ``scripts/make_labeled_mosaic.py`` writes). Queries are the
class names unless ``--queries`` gives a file of ``class<TAB>query`` lines. ``--templates`` takes
``aerial`` (the built-in aerial prompt ensemble), ``raw`` (the query alone) or a file with one template
per line containing ``{}``. Writes DIR/results.csv (every query), DIR/results.md (means and random
baselines) and DIR/pr.png (11-point precision-recall curves).

    python scripts/evaluate.py --embeddings FILE.npz [FILE.npz ...] [--template-sets default basic-4 all]
        [--methods ...] [--draws 20] [--tune-feedback] [--json OUT.json] [--markdown OUT.md]

measures instead on published embeddings of labelled scenes, with no encoder and no raster: the engine's query
path after the encoders, on the balanced and the rare protocol (see ``scripts/evaluate_embeddings.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import evaluate_embeddings

from clip_search_plugin.engine.building.build import build_index, open_index
from clip_search_plugin.engine.embedding.embedder import load_embedder
from clip_search_plugin.engine.embedding.models import DEFAULT_PRESET
from clip_search_plugin.engine.errors import ClipSearchError, InputError
from clip_search_plugin.engine.evaluation.labels import (
    Report,
    class_queries,
    evaluate_configurations,
    parse_queries,
    read_labels,
)
from clip_search_plugin.engine.query.templates import TEMPLATE_SETS, read_templates
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings


def template_set(name: str) -> tuple[str, tuple[str, ...] | None]:
    if name in TEMPLATE_SETS:
        return name, TEMPLATE_SETS[name]
    path = Path(name)
    if not path.is_file():
        raise InputError(f"--templates takes aerial, raw or a file of templates; {name} is none of these.")
    return path.stem, read_templates(path)


def read_queries(path: Path | None, classes: list[str]) -> list[tuple[str, str]]:
    if path is None:
        return class_queries(classes)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the queries file {path}: {exc}.") from exc
    return parse_queries(text, str(path))


def parse_model(text: str) -> ModelSpec:
    """``NAME`` or ``NAME:WEIGHTS`` (e.g. ``ViT-B-32:none`` for random weights)."""
    name, _, pretrained = text.partition(":")
    return ModelSpec(name, pretrained or None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("raster", type=Path, nargs="?")
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--class-field", default="class")
    parser.add_argument("--queries", type=Path)
    parser.add_argument("--models", nargs="+", default=[DEFAULT_PRESET])
    parser.add_argument("--templates", nargs="+", default=["aerial"])
    parser.add_argument("--thresholds", nargs="+", default=["none"])
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--tile-size", type=float, default=224)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--min-overlap", type=float, default=0.5,
                        help="share of a result's area that must lie on a label of the query's class")
    parser.add_argument("--random-runs", type=int, default=20)
    parser.add_argument("--output", type=Path)
    evaluate_embeddings.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.embeddings is None and (args.raster is None or args.labels is None or args.output is None):
        parser.error("give a RASTER with --labels and --output, or --embeddings FILE.npz")
    try:
        return evaluate_embeddings.run(args) if args.embeddings else run(args)
    except ClipSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    args.output.mkdir(parents=True, exist_ok=True)
    ks = tuple(args.ks)
    templates = [template_set(t) for t in args.templates]
    thresholds = [None if t.lower() == "none" else float(t) for t in args.thresholds]
    tiling = TilingSettings(tile_size=args.tile_size, overlap=args.overlap, scales=tuple(args.scales))
    report = Report()
    for model_text in args.models:
        spec = parse_model(model_text)
        embedder = load_embedder(spec)
        built = build_index(args.raster, IndexSettings(tiling=tiling, model=spec),
                            args.output / "indexes" / f"{embedder.identity.key()}-{tiling.key()}", embedder=embedder)
        index = open_index(built.path)
        labels = read_labels(args.labels, args.class_field, index.raster.crs_wkt)
        queries = read_queries(args.queries, labels.classes())
        print(f"{embedder.identity.label()}: {built.tile_count} tiles, {len(queries)} queries")
        evaluate_configurations(report, index, embedder, labels, queries, templates, thresholds, args.top_k, ks,
                                args.min_overlap, args.random_runs, print)
    report.write(args.output, args.raster.name)
    print(f"wrote {args.output / 'results.csv'}, results.md and pr.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
