"""The tower exported for backends computes what the model computes (its rewritten modules are exact), shares the
model's weights, and exports without a convolution (the patch embedding becomes a product the int8 graph quantizes)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from clip_search_plugin.engine.embedding.backends.export import FP32, exported  # noqa: E402
from clip_search_plugin.engine.embedding.backends.lean import LeanSelfAttention, PatchProduct, lean_copy  # noqa: E402
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder  # noqa: E402


def rewritten(module: torch.nn.Module) -> list[str]:
    return [type(m).__name__ for m in module.modules() if isinstance(m, (LeanSelfAttention, PatchProduct))]


def test_the_lean_image_tower_equals_the_model_and_shares_its_weights(tiny: ClipEmbedder) -> None:
    visual = tiny.model.visual
    lean = lean_copy(visual)
    assert sorted(rewritten(lean)) == ["LeanSelfAttention", "LeanSelfAttention", "PatchProduct"]
    assert {id(p) for p in lean.parameters()} == {id(p) for p in visual.parameters()}
    pixels = torch.randn(5, 3, tiny.input_size, tiny.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(lean(pixels), visual(pixels), rtol=0, atol=1e-5)


def test_the_lean_attention_keeps_a_causal_mask_and_hands_cross_attention_to_the_original(tiny: ClipEmbedder) -> None:
    text = tiny.model.transformer  # causal: the mask must be applied
    tokens = torch.randn(2, 9, text.width, generator=torch.Generator().manual_seed(2))
    mask = tiny.model.attn_mask[:9, :9]
    with torch.no_grad():
        torch.testing.assert_close(lean_copy(text)(tokens, attn_mask=mask), text(tokens, attn_mask=mask), rtol=0,
                                   atol=1e-5)
        pooler = open_clip.transformer.AttentionalPooler(d_model=16, context_dim=16, n_head=2, n_queries=3).eval()
        features = torch.randn(2, 7, 16)
        lean_pooler = lean_copy(pooler)
        assert rewritten(lean_pooler) == ["LeanSelfAttention"]
        torch.testing.assert_close(lean_pooler(features), pooler(features), rtol=0, atol=0)


def test_the_export_has_no_convolution(tiny: ClipEmbedder, tmp_path: Path) -> None:
    graph = onnx.load(str(exported(tiny.model, tiny.input_size, tmp_path, FP32))).graph
    operations = [node.op_type for node in graph.node]
    assert "Conv" not in operations
    assert operations.count("Softmax") == 2  # one per layer: the attention is whole


def test_a_patch_embedding_with_a_bias_and_a_partial_last_patch_is_the_convolution() -> None:
    conv = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4, bias=True)
    assert PatchProduct.fits(conv) and not PatchProduct.fits(torch.nn.Conv2d(3, 8, 4, stride=2))
    assert not PatchProduct.fits(torch.nn.Conv2d(3, 8, 1))  # a 1x1 convolution of a ResNet stays as it is
    pixels = torch.randn(2, 3, 18, 14, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(PatchProduct(conv)(pixels), conv(pixels), rtol=0, atol=1e-5)
