"""Search quality on published embeddings (no encoder): ``scripts/evaluate.py --embeddings FILE.npz [...]``.

Runs the engine's query path (template ensembles by template key, re-ranking, negatives, simulated feedback,
More like this) on each file and reports the *balanced* and the *rare* protocol together (see
``clip_search_plugin/engine/quality.py``). ``--json OUT`` writes rows {"model", "templates", "method",
"protocol", "mAP", "default"} (and "P@10" for balanced), "default" marking what the dock and the command line
do by default; ``--markdown OUT`` writes the same as tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_search_plugin.engine.errors import InputError
from clip_search_plugin.engine.evaluation.quality import RARE_DRAWS, EmbeddingSet, Pool, load_embedding_set, pools
from clip_search_plugin.engine.evaluation.quality_runs import (
    METHODS,
    PROTOCOLS,
    Method,
    ensemble_score,
    half,
    relative_cuts,
    rows,
    select_templates,
    tune_feedback,
)
from clip_search_plugin.engine.query.templates import DEFAULT_TEMPLATE_KEYS, template_key

BASIC_FOUR = ("a_satellite_image_of_a", "an_aerial_image_of_a", "a_remote_sensing_image_of_a", "a_satellite_photo_of_a")
PUBLISHED_AVERAGE = "averageprompt"
FEEDBACK_GRID = tuple((1.0, beta, gamma) for beta in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
                      for gamma in (0.0, 0.1, 0.25, 0.4))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("published embeddings (no encoder, no raster)")
    group.add_argument("--embeddings", type=Path, nargs="+", metavar="FILE.npz",
                       help="measure on these embeddings files instead of a raster")
    group.add_argument("--template-sets", nargs="+", default=["default", "basic-4", "all"],
                       help="default (the engine's), basic-4, all (every published key), averageprompt, or a "
                       "file of template keys or templates, one per line")
    group.add_argument("--methods", nargs="+", help="methods to run (default: all): " +
                       ", ".join(m.name for m in METHODS))
    group.add_argument("--draws", type=int, default=RARE_DRAWS, help="draws per class of the rare protocol")
    group.add_argument("--tune-feedback", action="store_true",
                       help="also measure the Rocchio weights grid after two rounds of simulated feedback")
    group.add_argument("--select-templates", type=int, metavar="N",
                       help="choose N template keys by greedy forward selection, first on one half of the scenes "
                       "(checked on the other half against basic-4 and all), then on all of them")
    group.add_argument("--selection-draws", type=int, default=2, help="rare-protocol draws while selecting")
    group.add_argument("--json", type=Path, help="write the rows as JSON")
    group.add_argument("--markdown", type=Path, help="write the tables as Markdown")


def template_sets(names: Sequence[str], es: EmbeddingSet) -> list[tuple[str, tuple[str, ...]]]:
    """The template sets by name or file, as keys of ``es``; a set the file lacks keys for is left out (said)."""
    out = []
    for name in names:
        keys = set_keys(name, es)
        missing = [k for k in keys if k not in es.keys]
        if missing:
            print(f"  {es.model}: template set {name} left out: no text vectors for {', '.join(missing[:3])}")
            continue
        out.append((name, keys))
    return out


def set_keys(name: str, es: EmbeddingSet) -> tuple[str, ...]:
    if name == "default":
        return DEFAULT_TEMPLATE_KEYS
    if name == "basic-4":
        return BASIC_FOUR
    if name == "all":
        return tuple(k for k in es.keys if k != PUBLISHED_AVERAGE)
    if name == PUBLISHED_AVERAGE:
        return (PUBLISHED_AVERAGE,)
    path = Path(name)
    if not path.is_file():
        raise InputError(f"--template-sets takes default, basic-4, all, averageprompt or a file; {name} is none.")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the template set {path}: {exc}.") from exc
    keys = tuple(template_key(line) if "{}" in line else line for line in lines if line and not line.startswith("#"))
    if not keys:
        raise InputError(f"The template set {path} is empty; write one template key or template per line.")
    return keys


def chosen_methods(names: Sequence[str] | None) -> list[Method]:
    if not names:
        return list(METHODS)
    known = {m.name: m for m in METHODS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"Unknown method(s) {', '.join(unknown)}; choose from: {', '.join(known)}.")
    return [known[n] for n in names]


def run(args: argparse.Namespace) -> int:
    if args.draws < 1:
        raise InputError("--draws must be at least 1.")
    methods = chosen_methods(args.methods)
    report: list[dict[str, Any]] = []
    tuning_sets = []
    cuts: list[dict[str, Any]] = []
    sets = [load_embedding_set(path) for path in args.embeddings]
    for es in sets:
        started = time.perf_counter()
        model_pools: dict[str, list[Pool]] = {p: list(pools(es, p, args.draws)) for p in PROTOCOLS}
        for name, keys in template_sets(args.template_sets, es):
            report += rows(es, name, keys, methods, model_pools, default_set=keys == DEFAULT_TEMPLATE_KEYS)
            if keys == DEFAULT_TEMPLATE_KEYS:
                tuning_sets.append((es, keys, model_pools))
                cuts += relative_cuts(es, keys, model_pools)
        print_model(es.model, [r for r in report if r["model"] == es.model], time.perf_counter() - started)
    print_cuts(cuts)
    if args.select_templates:
        choose_templates(sets, args.select_templates, args.selection_draws, args.draws)
    if args.tune_feedback and tuning_sets:
        print("Rocchio weights (query, relevant, not relevant), mean AP after 2 rounds, both protocols, all files:")
        best = tune_feedback(tuning_sets, FEEDBACK_GRID)
        print(f"best: {best[0][1]} ({best[0][0]:.4f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report) + "\n".join(cut_table(cuts)) + "\n", encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


def choose_templates(sets: list[EmbeddingSet], size: int, draws: int, check_draws: int) -> list[str]:
    """Template keys chosen by greedy selection: on half 0 of the scenes, checked on half 1, then on all."""
    candidates = [k for k in sets[0].keys if k != PUBLISHED_AVERAGE and all(k in es.keys for es in sets)]
    plain = Method("plain", rerank=False)

    def pooled(selected: list[EmbeddingSet], n: int) -> list[tuple[EmbeddingSet, dict[str, list[Pool]]]]:
        return [(es, {p: list(pools(es, p, n)) for p in PROTOCOLS}) for es in selected]

    print(f"Selecting {size} of {len(candidates)} template keys on half 0 of the scenes:")
    chosen = select_templates(pooled([half(es, 0) for es in sets], draws), candidates, size)
    other = pooled([half(es, 1) for es in sets], check_draws)
    print("Checked on half 1 (mean AP, both protocols, every file):")
    for name, keys in (("chosen on half 0", chosen), ("basic-4", list(BASIC_FOUR)), ("all", candidates)):
        if all(k in candidates for k in keys):
            print(f"  {name}: {ensemble_score(other, keys, plain):.4f}")
    print(f"Selecting {size} on all the scenes:")
    final = select_templates(pooled(sets, draws), candidates, size)
    print("chosen: " + " ".join(final))
    return final


def table(model_rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per template set and method, both protocols side by side."""
    lines = ["| templates | method | balanced mAP | balanced P@10 | rare AP | default |", "|---|---|---|---|---|---|"]
    for row in model_rows:
        if row["protocol"] != "balanced":
            continue
        rare = next(r for r in model_rows if r["protocol"] == "rare" and r["templates"] == row["templates"]
                    and r["method"] == row["method"])
        mark = "**yes**" if row["default"] else ""
        lines.append(f"| {row['templates']} | {row['method']} | {row['mAP']:.3f} | {row['P@10']:.3f} | "
                     f"{rare['mAP']:.3f} | {mark} |")
    return lines


def cut_table(cuts: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: what each minimum relative score keeps of the default search, per model and protocol."""
    if not cuts:
        return []
    lines = ["### Minimum relative score (default search, default templates)", "",
             "| model | protocol | relative ≥ | precision | recall | searches keeping nothing |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['model']} | {c['protocol']} | {c['relative']:g} | {c['precision']:.3f} | {c['recall']:.3f} | "
              f"{100 * c['nothing_kept']:.0f}% |" for c in cuts]
    return lines


def print_cuts(cuts: list[dict[str, Any]]) -> None:
    if cuts:
        print()
        print("\n".join(cut_table(cuts)))


def print_model(model: str, model_rows: list[dict[str, Any]], seconds: float) -> None:
    print(f"\n{model} ({seconds:.0f} s)")
    print("\n".join(table(model_rows)))


def markdown(report: list[dict[str, Any]]) -> str:
    out = []
    for model in dict.fromkeys(r["model"] for r in report):
        out += [f"### {model}", "", *table([r for r in report if r["model"] == model]), ""]
    return "\n".join(out)
