"""Model loading: presets, random weights labelled, local checkpoints loaded safely, clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_search_plugin.engine.embedding.embedder import ClipEmbedder, load_embedder
from clip_search_plugin.engine.embedding.models import (
    DEFAULT_PRESET,
    PRESETS,
    TINY_ARCH,
    Download,
    Preset,
    create_model,
    pick_device,
    resolve_identity,
)
from clip_search_plugin.engine.errors import ModelError
from clip_search_plugin.engine.settings import ModelSpec

from ..conftest import REPO, write_geotiff


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
    a = tiny.encode_with(None, tiles)  # the model itself (a build may have left this shared one on a backend)
    assert a.shape == (3, tiny.dim) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    again = load_embedder(ModelSpec("tiny-random"), "cpu")  # a new one embeds with the model itself
    assert np.array_equal(again.encode_images(tiles), a)
    assert np.array_equal(again.encode_text(["a pool"]), tiny.encode_text(["a pool"]))


def trained_state(seed: int) -> dict[str, torch.Tensor]:
    """Weights unlike the random preset's: a different seed."""
    import open_clip

    from clip_search_plugin.engine.embedding.models import register_configs

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
    with pytest.raises(ModelError, match=r"lacks 1 weight.*Choose the architecture"):
        create_model(ModelSpec(TINY_ARCH, str(path)), "cpu")


def test_weights_that_cannot_be_downloaded_give_advice(tmp_path: Path) -> None:
    # a fresh process, so that the hub client reads its offline setting (as on a machine with no internet)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = "from clip_search_plugin.engine.serve.cli import main; raise SystemExit(main(['index', 'x.tif']))"
    raster = write_geotiff(tmp_path / "x.tif", np.zeros((3, 40, 40), dtype=np.uint8) + 90)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert raster.exists() and done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    # the default preset's weights are a file on the Hub: the message names it and how to use it by hand
    assert f"Cannot get the weights of {DEFAULT_PRESET}" in line
    assert "https://huggingface.co/chendelong/RemoteCLIP/resolve/bf1d8a3c" in line
    assert "/RemoteCLIP-ViT-B-32.pt" in line
    assert f"--model {DEFAULT_PRESET} --pretrained FILE" in line
    code = code.replace("'x.tif']", "'x.tif', '--model', 'ViT-B-32-openai']")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Cannot load model ViT-B-32 (openai)" in line and "--pretrained PATH" in line


def test_device_choice() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cuda", "mps", "cpu")
    with pytest.raises(ModelError, match="Unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            pick_device("cuda")


def test_every_preset_names_a_real_architecture_and_says_where_its_weights_come_from() -> None:
    import open_clip

    from clip_search_plugin.engine.embedding.models import register_configs

    register_configs()
    architectures = set(open_clip.list_models())
    tags = set(open_clip.list_pretrained())
    assert DEFAULT_PRESET in PRESETS and PRESETS[DEFAULT_PRESET].download is not None
    for preset in PRESETS.values():
        assert preset.arch in architectures, preset.name
        assert preset.licence and preset.source and preset.description, preset.name
        if preset.download is None and preset.pretrained != "none":
            assert (preset.arch, preset.pretrained) in tags, preset.name  # open_clip can fetch it by tag
        if preset.download is not None:
            assert not preset.pretrained and preset.download.url.startswith("https://"), preset.name
            if preset.family == "RemoteCLIP":  # the default's family: pinned to the commit of its one upload
                revision = preset.download.revision
                assert len(revision) == 40 and int(revision, 16) and f"/resolve/{revision}/" in preset.download.url
            assert preset.download.url.endswith(preset.download.hub_file or ".zip"), preset.name
        identity, checkpoint = resolve_identity(ModelSpec(preset.name))  # nothing is downloaded
        assert checkpoint is None and identity.arch == preset.arch and identity.quick_gelu == preset.quick_gelu
        assert preset.name in preset.details() and preset.licence in preset.details()
    families = {p.family for p in PRESETS.values()}
    assert {"RemoteCLIP", "GeoRSCLIP", "SkyCLIP", "OpenAI CLIP", "OpenCLIP"} <= families


def test_a_preset_with_a_local_file_keeps_its_architecture_and_activation(tmp_path: Path) -> None:
    path = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    torch.save(trained_state(5), path)
    identity, checkpoint = resolve_identity(ModelSpec("RemoteCLIP-ViT-B-32", str(path)))
    assert (identity.arch, identity.quick_gelu, checkpoint) == ("ViT-B-32", True, str(path))
    assert identity.weights.startswith("sha256:")


def test_preset_weights_from_a_hub_file_load_from_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub

    # the Hub's own cache layout, as a download of a file pinned to a commit leaves it
    state = trained_state(7)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--test-org--test-model"
    snapshot = repo / "snapshots" / commit / "ckpt"
    snapshot.mkdir(parents=True)
    torch.save(state, snapshot / "model.pt")  # a plain state dict, as RemoteCLIP and GeoRSCLIP publish them
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    download = Download(f"https://huggingface.co/test-org/test-model/resolve/{commit}/ckpt/model.pt",
                        hub_repo="test-org/test-model", hub_file="ckpt/model.pt", revision=commit)
    monkeypatch.setitem(PRESETS, "hub-test", Preset("hub-test", TINY_ARCH, "", "test", family="T", download=download))
    model, _, identity = create_model(ModelSpec("hub-test"), "cpu")
    assert identity.weights == "T:model.pt" and not identity.random_weights
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    monkeypatch.setitem(PRESETS, "hub-missing", Preset("hub-missing", TINY_ARCH, "", "test", family="T",
                                                       download=Download(download.url + "x", "test-org/test-model",
                                                                         "ckpt/model.ptx", revision=commit)))
    with pytest.raises(ModelError, match=r"Download https://huggingface.co/\S+ on a machine with internet access"):
        create_model(ModelSpec("hub-missing"), "cpu")


def test_preset_weights_in_a_zip_are_extracted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    state = trained_state(11)
    # an open_clip training checkpoint, as SkyCLIP publishes it: epoch, run name, DDP-prefixed weights, optimiser
    checkpoint = {"epoch": 20, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "params": [0, 1]}]}}
    torch.save(checkpoint, tmp_path / "epoch_20.pt")
    archive = tmp_path / "published.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tmp_path / "epoch_20.pt", "SkyCLIP_test/epoch_20.pt")
    monkeypatch.setenv("CLIP_SEARCH_WEIGHTS", str(tmp_path / "weights"))
    preset = Preset("zip-test", TINY_ARCH, "", "test", family="Z",
                    download=Download(archive.as_uri(), zip_member="epoch_20.pt"))
    monkeypatch.setitem(PRESETS, "zip-test", preset)
    model, _, identity = create_model(ModelSpec("zip-test"), "cpu")
    assert identity.weights == "Z:epoch_20.pt"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    kept = tmp_path / "weights" / "zip-test" / "epoch_20.pt"
    assert kept.is_file() and [p.name for p in kept.parent.iterdir()] == ["epoch_20.pt"]  # no scratch left
    archive.unlink()  # the second load needs no download
    again, _, _ = create_model(ModelSpec("zip-test"), "cpu")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
    monkeypatch.setitem(PRESETS, "zip-test", Preset("zip-test", TINY_ARCH, "", "test", family="Z",
                                                    download=Download(archive.as_uri(), zip_member="other.pt")))
    kept.unlink()
    with pytest.raises(ModelError, match=r"on a machine with internet access, take other\.pt out of the zip"):
        create_model(ModelSpec("zip-test"), "cpu")
    assert not any((tmp_path / "weights" / "zip-test").iterdir())


def test_checkpoint_with_extra_entries_loads_and_one_missing_weights_is_refused(tmp_path: Path) -> None:
    state = trained_state(3)
    path = tmp_path / "extra.pt"
    torch.save(dict(state, **{"text.position_ids": torch.arange(4)}), path)  # saved by some training code
    model, _, _ = create_model(ModelSpec(TINY_ARCH, str(path)), "cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    missing = dict(state)
    missing.pop("logit_scale")
    torch.save(missing, path)
    with pytest.raises(ModelError, match="lacks 1 weight"):
        create_model(ModelSpec(TINY_ARCH, str(path)), "cpu")


@pytest.mark.parametrize("arch", [TINY_ARCH, "ViT-B-32"])
def test_short_prompts_skip_the_padding_with_identical_vectors(arch: str) -> None:
    import torch.nn.functional as F

    embedder = load_embedder(ModelSpec(arch, "none"), "cpu")
    prompts = ["a pool", "an aerial photo of a swimming pool next to a house with a red roof.",
               " ".join(["field"] * 100)]  # the last one fills the whole context (77 tokens)
    for batch in (prompts[:1], prompts[:2], prompts):
        tokens = embedder.tokenizer(batch)
        with torch.inference_mode():
            full = F.normalize(embedder.model.encode_text(tokens).float(), dim=-1).numpy()
        np.testing.assert_allclose(embedder.encode_text(batch), full, atol=2e-6)
    first = embedder.encode_text(prompts[:2])
    first[:] = 0  # a caller changing its copy does not change the remembered vectors
    assert np.abs(embedder.encode_text(prompts[:2])).sum() > 0
