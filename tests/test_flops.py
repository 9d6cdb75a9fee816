"""The analytic prefill cost model (vistoken.flops) and ``vistoken flops``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import run
from transformers import LlavaOnevisionConfig, Qwen2Config

from vistoken.flops import PRESETS, prefill_flops, resolve

OV7B = "llava-onevision-7b"
VISUAL = 32 * 196  # LLaVA-OneVision-7B, 32 frames
TEXT = 100
# REFERENCE.md section 4: published TFLOPs of LLaVA-OneVision-7B (FastV's formula)
PUBLISHED = {1.0: 41.4, 0.1: 4.0, 0.05: 2.2}


def tiny() -> Qwen2Config:
    return Qwen2Config(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=10,
    )


@pytest.mark.parametrize("retention", sorted(PUBLISHED))
def test_published_llava_onevision_figures(retention):
    tflops = prefill_flops(OV7B, VISUAL, TEXT, retention) / 1e12
    assert tflops == pytest.approx(PUBLISHED[retention], rel=0.03)


def test_fastv_formula_by_hand_on_the_preset():
    d, m, layers = 3584, 18944, 28
    n = TEXT + math.ceil(0.1 * VISUAL)  # 728
    expected = layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    assert prefill_flops(OV7B, VISUAL, TEXT, 0.1) == expected


def test_tiny_config_fastv_formula_exactly():
    # n = 3 text + ceil(0.5 * 10) = 8; per layer 4*8*64 + 2*64*8 + 2*8*8*16 = 5120
    assert prefill_flops(tiny(), 10, 3, 0.5) == 2 * 5120


def test_tiny_config_exact_formula_exactly():
    # H*h = 8, G*h = 4: q,o 2*8*8*8 = 1024; k,v 2*8*8*4 = 512; causal pairs 8*9/2 = 36:
    # 2*36*8 = 576; gated MLP 3*8*8*16 = 3072 -> 5184 per layer; lm_head 8*10 once
    assert prefill_flops(tiny(), 10, 3, 0.5, "exact") == 2 * 5184 + 80


def test_tiny_config_fastv_in_llm_exactly():
    # layer 0 sees 13 tokens: 4*13*64 + 2*169*8 + 2*13*8*16 = 9360; layer 1 sees 8: 5120
    assert prefill_flops(tiny(), 10, 3, 0.5, method="fastv", layer=1) == 9360 + 5120


def test_exact_counts_gqa_gated_mlp_and_causal_half():
    full_square = prefill_flops(OV7B, VISUAL, TEXT, formula="fastv")
    exact = prefill_flops(OV7B, VISUAL, TEXT, formula="exact")
    assert exact > full_square  # the third MLP matrix outweighs GQA and the causal half
    assert prefill_flops(OV7B, 0, 1, formula="exact") > 0


@pytest.mark.parametrize("formula", ["fastv", "exact"])
@pytest.mark.parametrize("retention", [0.5, 0.1])
def test_fastv_in_llm_between_full_and_pre_llm(formula, retention):
    full = prefill_flops(OV7B, VISUAL, TEXT, 1.0, formula)
    pre = prefill_flops(OV7B, VISUAL, TEXT, retention, formula)
    inside = prefill_flops(OV7B, VISUAL, TEXT, retention, formula, "fastv")
    assert pre < inside < full
    # K=0 prunes before the first layer: the same as pre-LLM; K=L never prunes
    assert prefill_flops(OV7B, VISUAL, TEXT, retention, formula, "fastv", layer=0) == pre
    assert prefill_flops(OV7B, VISUAL, TEXT, retention, formula, "fastv", layer=28) == full


def test_pre_llm_method_names_match_none():
    assert prefill_flops(OV7B, VISUAL, TEXT, 0.1, method="scc") == prefill_flops(
        OV7B, VISUAL, TEXT, 0.1
    )


def test_cost_grows_with_retention():
    costs = [prefill_flops(OV7B, VISUAL, TEXT, r) for r in (0.05, 0.1, 0.25, 0.5, 1.0)]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)


@pytest.mark.parametrize("formula", ["fastv", "exact"])
def test_config_object_and_preset_agree(formula):
    qwen2_7b = Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
    )
    vlm = LlavaOnevisionConfig(text_config=qwen2_7b.to_dict())
    want = prefill_flops(OV7B, VISUAL, TEXT, 0.1, formula)
    assert prefill_flops(qwen2_7b, VISUAL, TEXT, 0.1, formula) == want
    assert prefill_flops(vlm, VISUAL, TEXT, 0.1, formula) == want


def test_presets_resolve_and_document_tokens_per_frame():
    assert resolve(OV7B).tokens_per_frame == 196
    assert resolve("llava-video-7b").tokens_per_frame == 196
    for name, preset in PRESETS.items():
        assert resolve(name) is preset
        assert preset.tokens_per_frame > 0 and preset.tokens_per_frame_note
        assert prefill_flops(name, 32 * preset.tokens_per_frame, TEXT) > 0
    llm = resolve("internvl2-8b").llm
    assert (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers) == (4096, 14336, 32)
    small = resolve("llava-onevision-0.5b").llm
    assert (small.hidden_size, small.num_key_value_heads) == (896, 2)


def test_vision_tower_adds_a_retention_independent_cost():
    base = prefill_flops(OV7B, VISUAL, TEXT, 0.1)
    with_vision = prefill_flops(OV7B, VISUAL, TEXT, 0.1, vision=True, frames=32)
    full_vision = prefill_flops(OV7B, VISUAL, TEXT, 1.0, vision=True, frames=32)
    tower = with_vision - base
    # SigLIP-so400m, 26 layers run, 729 patches, plus the 2-layer projector, per frame
    p, e, f = 729, 1152, 4304
    siglip = 26 * (4 * p * e * e + 2 * p * p * e + 2 * p * e * f)
    projector = p * (1152 * 3584 + 3584 * 3584)
    assert tower == 32 * (siglip + projector)
    assert full_vision - prefill_flops(OV7B, VISUAL, TEXT, 1.0) == tower


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"model": "llava-9000"},
            r"unknown model preset 'llava-9000'; known presets: .*qwen2-vl-7b",
        ),
        ({"visual_tokens": -1}, "visual_tokens must be an integer >= 0"),
        ({"text_tokens": -5}, "text_tokens must be an integer >= 0"),
        ({"visual_tokens": 1.5}, "visual_tokens must be an integer"),
        ({"retention": 0.0}, r"retention must be in \(0, 1\]"),
        ({"retention": 1.5}, r"retention must be in \(0, 1\]"),
        ({"retention": float("nan")}, r"retention must be in \(0, 1\]"),
        ({"formula": "flash"}, "unknown formula 'flash'; known formulas: fastv, exact"),
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"method": "scc", "layer": 2}, "give it with method='fastv'"),
        ({"method": "fastv", "layer": 29}, r"layer must be an integer in \[0, 28\]"),
        ({"vision": True}, "vision=True needs frames"),
        ({"model": "qwen2-vl-7b", "vision": True, "frames": 4}, "no vision tower"),
        ({"model": object()}, "has no hidden_size"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = {"model": OV7B, "visual_tokens": VISUAL, "text_tokens": TEXT, **kwargs}
    with pytest.raises(ValueError, match=match):
        prefill_flops(**args)


def test_retention_follows_the_library_scalar_rule():
    # the same rule as vt.compress: a string or a bool is a TypeError, and a float32 0.1
    # (NumPy or tensor) is the decimal 0.1, not 0.10000000149
    for bad in ("0.1", True):
        with pytest.raises(TypeError, match="retention must be a real number"):
            prefill_flops(OV7B, VISUAL, TEXT, bad)
    want = prefill_flops(OV7B, 6270, TEXT, 0.1)
    for r in (np.float32(0.1), torch.tensor(0.1), np.float64(0.1)):
        assert prefill_flops(OV7B, 6270, TEXT, r) == want


# --------------------------------------------------------------------------------------------
# the command line


def test_cli_table_prints_the_published_figures(capsys):
    code, out, err = run(capsys, "flops", "--model", OV7B, "--frames", 32, "--retention", 0.1)
    assert code == 0, err
    assert "32 frames x 196 = 6272 visual tokens, 100 text tokens" in out
    full = next(ln for ln in out.splitlines() if ln.split()[:1] == ["full"])
    comp = next(ln for ln in out.splitlines() if ln.split()[:1] == ["compressed"])
    assert full.split()[1:3] == ["6372", "41.54"]
    assert comp.split()[1:3] == ["728", "3.92"]
    assert "9.44%" in out


def test_cli_json(capsys):
    code, out, err = run(
        capsys, "flops", "--retention", 0.05, "--text-tokens", 100, "--formula", "exact", "--json"
    )
    assert code == 0, err
    s = json.loads(out)
    assert s["model"] == OV7B and s["formula"] == "exact"
    assert s["visual_tokens"] == 6272 and s["kept_visual_tokens"] == 314
    assert s["tokens_compressed"] == 414
    assert s["flops_full"] == prefill_flops(OV7B, 6272, 100, 1.0, "exact")
    assert s["flops_compressed"] == prefill_flops(OV7B, 6272, 100, 0.05, "exact")
    assert s["ratio"] == pytest.approx(s["flops_compressed"] / s["flops_full"])


def test_cli_fastv_method_and_tokens_per_frame(capsys):
    code, out, err = run(
        capsys, "flops", "--method", "fastv", "--layer", 3, "--retention", 0.5,
        "--tokens-per-frame", 169, "--frames", 64, "--model", "llava-video-7b", "--json",
    )  # fmt: skip
    assert code == 0, err
    s = json.loads(out)
    assert s["visual_tokens"] == 64 * 169 and s["layer"] == 3
    want = prefill_flops("llava-video-7b", 64 * 169, 100, 0.5, method="fastv", layer=3)
    assert s["flops_compressed"] == want


def test_cli_vision(capsys):
    code, out, err = run(capsys, "flops", "--vision", "--frames", 8, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["flops_full"] == prefill_flops(OV7B, 8 * 196, 100, vision=True, frames=8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "gpt-5"], "unknown model preset 'gpt-5'; known presets: llava-onevision-7b"),
        (["--retention", "0"], "argument --retention"),
        (["--retention", "1.5"], "argument --retention"),
        (["--text-tokens", "-1"], "argument --text-tokens: must be >= 0"),
        (["--frames", "0"], "argument --frames"),
        (["--formula", "magic"], "argument --formula: invalid choice"),
        (["--layer", "2"], "argument --layer: only with --method fastv"),
        (["--method", "fastv", "--layer", "40"], "argument --layer: must be in [0, 28]"),
        (["--method", "nope"], "argument --method: unknown method 'nope'"),
        (["--model", "qwen2-vl-7b", "--vision"], "argument --vision: no vision tower"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "flops", *argv)
    assert code == 2
    assert out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vistoken: error: "), err
    assert message in lines[0]


def test_qwen3_vl_8b_preset_is_its_published_config():
    llm = resolve("qwen3-vl-8b").llm
    shape = (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers)
    assert shape == (4096, 12288, 36)
    assert (llm.num_attention_heads, llm.num_key_value_heads, llm.head_dim) == (32, 8, 128)
    assert llm.layer_types == () and resolve("qwen3-vl-8b").tokens_per_frame == 98


def _qwen3_5_tiny():
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        vocab_size=10,
        linear_num_key_heads=1,
        linear_num_value_heads=2,
        linear_key_head_dim=2,
        linear_value_head_dim=3,
    )


def test_hybrid_linear_attention_layers_by_hand():
    """Qwen3.5's default layout: 3 Gated DeltaNet layers, then one full-attention layer.
    n = 3 + ceil(0.5 * 10) = 8, d = 8, m = 16; linear: Hk*dk = 2, Hv*dv = 6, Hv = 2."""
    cfg = _qwen3_5_tiny()
    assert list(cfg.layer_types) == ["linear_attention"] * 3 + ["full_attention"]
    n, d, m = 8, 8, 16
    linear = n * d * (2 * 2 + 6) + 2 * n * d * 6 + 2 * n * d * 2 + 3 * n * 2 * 2 * 3
    full_fastv = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    assert prefill_flops(cfg, 10, 3, 0.5) == 3 * (linear + 2 * n * d * m) + full_fastv
    # exact: gated q (3 * n*d*H*h), k/v, causal pairs, gated MLP; lm_head once
    full_exact = 3 * n * d * 8 + 2 * n * d * 4 + 2 * (n * (n + 1) // 2) * 8 + 3 * n * d * m
    want = 3 * (linear + 3 * n * d * m) + full_exact + d * 10
    assert prefill_flops(cfg, 10, 3, 0.5, "exact") == want


def test_linear_attention_layers_cost_grows_linearly():
    """Doubling the tokens doubles a linear-attention layer's cost (no n^2 term)."""
    from vistoken.flops import LLM, LinearAttention

    hybrid = LLM("h", 8, 16, 1, 2, 1, 4, 10, ("linear_attention",), LinearAttention(1, 2, 2, 3))
    one, two = (prefill_flops(hybrid, v, 0, formula="exact") - 80 for v in (10, 20))
    assert two == 2 * one


def test_qwen3_5_27b_preset_and_fastv_layer():
    llm = resolve("qwen3.5-27b").llm
    kinds = llm.kinds()
    assert len(kinds) == 64 and kinds.count("full_attention") == 16 and kinds[3] == "full_attention"
    assert (llm.hidden_size, llm.num_hidden_layers, llm.head_dim) == (5120, 64, 256)
    assert llm.linear.num_value_heads == 48 and llm.gated_attention
    full = prefill_flops("qwen3.5-27b", 32 * 98, 100)
    pre = prefill_flops("qwen3.5-27b", 32 * 98, 100, 0.1)
    fastv = prefill_flops("qwen3.5-27b", 32 * 98, 100, 0.1, method="fastv", layer=4)
    assert pre < fastv < full
    with pytest.raises(ValueError, match="layer_types"):
        from vistoken.flops import LLM

        LLM("bad", 8, 16, 2, 2, 1, 4, 10, ("full_attention",))


def _matmuls_of_the_real_layers(model, n):
    """Exact-formula FLOPs of a Gemma 4 LLM on n tokens, read off its modules: every Linear
    the layer has (shared-KV layers have no k/v projections), the attention pairs each layer
    meets (sliding layers at most ``sliding_window`` keys) and the last token's lm_head."""
    text = model.config.text_config
    total = 0
    for layer in model.model.language_model.layers:
        attn = layer.self_attn
        total += sum(n * m.in_features * m.out_features for m in layer.modules()
                     if isinstance(m, torch.nn.Linear))
        w = text.sliding_window if attn.is_sliding else n
        pairs = sum(min(i + 1, w) for i in range(n))
        total += 2 * pairs * attn.q_proj.out_features  # scores and the weighted sum
    return total + text.hidden_size * text.vocab_size


@pytest.mark.parametrize("n_visual", [10, 40])  # inside and beyond the 16-token window
def test_gemma4_layers_counted_each_with_its_own_shape(n_visual):
    from vistoken import testing

    model = testing.tiny_gemma4()
    llm = resolve(model.config).llm
    # the full-attention layers are wider, the last two reuse earlier layers' keys/values
    assert {h for _, _, h in llm.layer_heads} == {16, 32} and llm.kv_shared_layers == 2
    got = prefill_flops(model.config, n_visual, 6, formula="exact")
    assert got == _matmuls_of_the_real_layers(model, n_visual + 6)
    # the paper's formula needs only the width: defined, and unchanged by the layer shapes
    d, m = llm.hidden_size, llm.intermediate_size
    n = n_visual + 6
    assert prefill_flops(model.config, n_visual, 6) == 6 * (4 * n * d * d + 2 * n * n * d
                                                            + 2 * n * d * m)
