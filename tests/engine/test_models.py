"""Model loading: presets, random weights labelled, local checkpoints loaded safely, clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_search_plugin.engine.embedder import ClipEmbedder, load_embedder
from clip_search_plugin.engine.errors import ModelError
from clip_search_plugin.engine.models import TINY_ARCH, create_model, pick_device, resolve_identity
from clip_search_plugin.engine.settings import ModelSpec

from .conftest import REPO, write_geotiff


def test_presets_and_architectures_resolve_to_identities() -> None:
    preset, _ = resolve_identity(ModelSpec("ViT-B-32-openai"))
    assert (preset.arch, preset.weights, preset.quick_gelu) == ("ViT-B-32", "openai", True)
    assert not preset.random_weights
    tagged, _ = resolve_identity(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))
    assert (tagged.arch, tagged.weights) == ("ViT-B-32", "laion2b_s34b_b79k")
    random, _ = resolve_identity(ModelSpec("ViT-B-32", "none"))
    assert random.random_weights and "RANDOM WEIGHTS" in random.label()
    hub, _ = resolve_identity(ModelSpec("hf-hub:org/model"))
    assert hub.arch == "hf-hub:org/model" and not hub.random_weights


def test_unknown_preset_and_missing_checkpoint_say_what_to_do() -> None:
    with pytest.raises(ModelError, match="preset"):
        resolve_identity(ModelSpec("no-such-model"))
    with pytest.raises(ModelError, match="not found"):
        resolve_identity(ModelSpec(TINY_ARCH, "/nowhere/model.pt"))


def test_tiny_random_model_embeds_unit_vectors_deterministically(tiny: ClipEmbedder) -> None:
    tiles = np.random.default_rng(0).integers(0, 255, size=(3, 80, 80, 3), dtype=np.uint8)
    a = tiny.encode_images(tiles)
    assert a.shape == (3, tiny.dim) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    again = load_embedder(ModelSpec("tiny-random"), "cpu")
    assert np.array_equal(again.encode_images(tiles), a)
    assert np.array_equal(again.encode_text(["a pool"]), tiny.encode_text(["a pool"]))


def trained_state(seed: int) -> dict[str, torch.Tensor]:
    """Weights unlike the random preset's: a different seed."""
    import open_clip

    from clip_search_plugin.engine.models import register_configs

    register_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_ARCH, pretrained=None).state_dict()


@pytest.mark.parametrize("layout", ["bare", "nested_ddp"])
def test_local_checkpoint_file_loads_with_its_weights(layout: str, tmp_path: Path) -> None:
    state = trained_state(123)
    path = tmp_path / "model.pt"
    if layout == "bare":
        torch.save(state, path)
    else:
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model, _, identity = create_model(ModelSpec(TINY_ARCH, str(path)), "cpu")
    assert identity.weights.startswith("sha256:") and not identity.random_weights
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_checkpoint_needing_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": trained_state(1), "hook": Path("/etc/passwd")}, path)  # an arbitrary object
    with pytest.raises(ModelError, match="refused for safety"):
        create_model(ModelSpec(TINY_ARCH, str(path)), "cpu")


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    state = trained_state(1)
    state.pop(next(iter(state)))
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="does not fit"):
        create_model(ModelSpec(TINY_ARCH, str(path)), "cpu")


def test_weights_that_cannot_be_downloaded_give_advice(tmp_path: Path) -> None:
    # a fresh process, so that the hub client reads its offline setting (as on a machine with no internet)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = "from clip_search_plugin.engine.cli import main; raise SystemExit(main(['index', 'x.tif']))"
    raster = write_geotiff(tmp_path / "x.tif", np.zeros((3, 40, 40), dtype=np.uint8) + 90)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert raster.exists() and done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "Cannot load model ViT-B-32 (openai)" in line and "--pretrained PATH" in line


def test_device_choice() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cuda", "mps", "cpu")
    with pytest.raises(ModelError, match="Unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            pick_device("cuda")
