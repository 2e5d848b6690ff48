"""Search quality on a real model's published embeddings, through ``scripts/evaluate.py --embeddings``: the
default search (the measured template set with look-alike re-ranking) against the plain prompt ensemble, on
the balanced and the rare protocol; and the harness on any file of the same schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clip_search_plugin.engine.evaluation.quality import RARE_KEEP, load_embedding_set, pools
from clip_search_plugin.engine.query.templates import (
    AERIAL_TEMPLATES,
    DEFAULT_TEMPLATE_KEYS,
    key_template,
    template_key,
)

from ..conftest import REPO, SHARED_DATA

EMBEDDINGS = SHARED_DATA / "whurs19_embeddings"
MODELS = ("RemoteCLIP_ViT-B-32", "CLIP_ViT-B-32", "CLIP_ViT-L-14", "GeoRSCLIP_ViT-B-32", "SkyCLIP50_ViT-B-32")


def embeddings(model: str) -> Path:
    path = EMBEDDINGS / f"{model}.npz"
    if not path.is_file():
        pytest.skip(f"published embeddings not found at {path} (shared test data)")
    return path


def evaluate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), *args], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)


def measured(tmp_path: Path, files: list[Path], *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "rows.json"
    done = evaluate(tmp_path, "--embeddings", *map(str, files), "--json", str(out), *args)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(out.read_text())
    return rows


def pick(rows: list[dict[str, Any]], model: str, templates: str, method: str, protocol: str) -> float:
    found = [r for r in rows if (r["model"], r["templates"], r["method"], r["protocol"]) ==
             (model, templates, method, protocol)]
    assert len(found) == 1, (model, templates, method, protocol)
    return float(found[0]["mAP"])


def test_the_default_search_beats_the_plain_ensemble_on_both_protocols_for_remoteclip(tmp_path: Path) -> None:
    model = "RemoteCLIP_ViT-B-32"
    rows = measured(tmp_path, [embeddings(model)], "--template-sets", "default", "basic-4",
                    "--methods", "plain", "look-alikes")
    assert set(rows[0]) >= {"model", "templates", "method", "protocol", "mAP", "default"}
    defaults = [r for r in rows if r["default"]]
    assert {(r["templates"], r["method"]) for r in defaults} == {("default", "look-alikes")}
    assert {r["protocol"] for r in defaults} == {"balanced", "rare"}
    for protocol, target in (("balanced", 0.95), ("rare", 0.75)):
        default = pick(rows, model, "default", "look-alikes", protocol)
        plain = pick(rows, model, "basic-4", "plain", protocol)
        assert default > plain and default > pick(rows, model, "default", "plain", protocol)
        assert default >= target, (protocol, default)


def test_neither_protocol_falls_below_the_plain_ensemble_for_any_of_the_five_models(tmp_path: Path) -> None:
    files = [embeddings(m) for m in MODELS]
    rows = measured(tmp_path, files, "--template-sets", "default", "basic-4", "--methods", "plain", "look-alikes",
                    "--draws", "5")
    for model in MODELS:
        for protocol in ("balanced", "rare"):
            default = pick(rows, model, "default", "look-alikes", protocol)
            assert default >= pick(rows, model, "basic-4", "plain", protocol), (model, protocol)
            assert default >= pick(rows, model, "default", "plain", protocol), (model, protocol)


def test_the_default_templates_are_the_published_keys_the_engine_uses() -> None:
    assert tuple(template_key(t) for t in AERIAL_TEMPLATES) == DEFAULT_TEMPLATE_KEYS
    assert all(key_template(template_key(t)) == t for t in AERIAL_TEMPLATES)
    es = load_embedding_set(embeddings("RemoteCLIP_ViT-B-32"))
    assert set(DEFAULT_TEMPLATE_KEYS) <= set(es.keys)


def synthetic_file(path: Path, scenes: int = 60, classes: int = 4, dim: int = 16) -> Path:
    """A file of the same schema with its own classes and template keys: image vectors near their class's text."""
    rng = np.random.default_rng(3)
    names = np.array([f"thing {c}" for c in range(classes)])
    keys = np.array(["a_photo_of_a", "an_overhead_view_of_the"])
    texts = rng.normal(size=(len(keys), classes, dim))
    labels = np.arange(scenes) % classes
    images = texts.mean(axis=0)[labels] + 0.8 * rng.normal(size=(scenes, dim))
    np.savez(path, images=images.astype(np.float16), labels=labels.astype(np.int16), classes=names,
             templates=keys, texts=texts.astype(np.float16))
    return path


def test_the_harness_runs_on_any_file_of_the_schema(tmp_path: Path) -> None:
    path = synthetic_file(tmp_path / "mine.npz")
    out = tmp_path / "rows.json"
    done = evaluate(tmp_path, "--embeddings", str(path), "--json", str(out), "--markdown", str(tmp_path / "t.md"))
    assert done.returncode == 0, done.stderr
    assert "template set default left out" in done.stdout  # its keys are not the published ones
    rows = json.loads(out.read_text())
    assert {r["templates"] for r in rows} == {"all"} and {r["protocol"] for r in rows} == {"balanced", "rare"}
    assert all(0.0 <= r["mAP"] <= 1.0 for r in rows)
    assert pick(rows, "mine", "all", "plain", "balanced") > 0.5  # far above chance (0.25): the ranking is real
    assert "| all | look-alikes |" in (tmp_path / "t.md").read_text()


def test_the_rare_protocol_keeps_three_of_a_class_and_everything_else(tmp_path: Path) -> None:
    es = load_embedding_set(synthetic_file(tmp_path / "mine.npz"))
    rare = list(pools(es, "rare", draws=4))
    assert len(rare) == 4 * len(es.classes)
    for pool in rare:
        assert int(pool.relevant.sum()) == RARE_KEEP
        assert pool.index.count == RARE_KEEP + int((es.labels != pool.class_index).sum())
    firsts = [p.index.read_vectors(np.flatnonzero(p.relevant)) for p in rare if p.class_index == 0]
    assert not all(np.array_equal(firsts[0], f) for f in firsts[1:])  # the draws differ


@pytest.mark.parametrize("content, says", [
    (b"not a zip file", "Cannot read"),
    (None, "lacks the array"),
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, images=np.zeros((3, 4)))
    else:
        path.write_bytes(content)
    done = evaluate(tmp_path, "--embeddings", str(path))
    assert done.returncode == 2 and says in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
