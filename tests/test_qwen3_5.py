"""vt.apply on Qwen3.5: the Qwen3-VL layout on a hybrid LLM (Gated DeltaNet linear
attention between full-attention layers). Pre-LLM methods hand every layer the shortened
sequence; FastV scores at a full-attention layer and prunes the linear-attention layers
after it. Cached generation is compared with full recomputes as logits."""

from __future__ import annotations

import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from model_helpers import lengths_seen, logits
from qwen3_helpers import (
    ATOL,
    ATOL_BATCH,
    batch,
    generate,
    image,
    pinned_fastv_recompute,
    recompute,
    recording,
    singles,
    video,
)

import vistoken as vt
from vistoken import testing

PRE_LLM = vt.methods(stage="tokens")


@pytest.fixture(scope="module")
def model():
    m = testing.tiny_qwen3_5()
    assert m.config.text_config.layer_types == list(testing.QWEN3_5_LAYERS)
    return m


@pytest.mark.parametrize("kind", ["video", "image"])
def test_retention_one_gives_identical_logits(model, kind):
    x = video(model) if kind == "video" else image(model)
    ref = logits(model, x)
    for method in [*PRE_LLM, "fastv"]:
        with vt.apply(model, method, retention=1.0):
            assert torch.equal(logits(model, x), ref), method


@pytest.mark.parametrize("method", ["tome", "uniform", "vidcom2"])
def test_compression_shortens_the_prefill(model, method):
    x = video(model)
    length = x["input_ids"].shape[1]
    seen, hook = lengths_seen(model)
    try:
        with vt.apply(model, method, retention=0.25) as h:
            logits(model, x)
    finally:
        hook.remove()
    assert h.stats["kept_tokens"] == 16 and seen == [length - 48]


@pytest.mark.parametrize("method,padding", [("tome", "left"), ("evs", "none")])
def test_cached_generation_equals_a_full_recompute(model, method, padding):
    """The linear-attention layers' recurrent and convolution states after the prefill
    are those of the shortened sequence: cached decoding equals one uncached forward."""
    items = singles(model)
    x = batch(items) if padding == "left" else items[0]
    with vt.apply(model, method, retention=0.3) as h, recording(model) as calls:
        out = generate(model, x)
    prefill = calls[0]
    assert prefill["embeds"].shape[1] == h.stats["sequence_after"] < h.stats["sequence_before"]
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(got, recompute(model, prefill, out.sequences), atol=ATOL, rtol=0)
    if padding == "left":
        for i, s in enumerate(items):
            with vt.apply(model, method, retention=0.3):
                alone = torch.stack(generate(model, s).logits, dim=1)[0]
            torch.testing.assert_close(got[i], alone, atol=ATOL_BATCH, rtol=0)


@pytest.mark.parametrize("requested,layer,score", [(1, 2, 1), (2, 2, 1), (3, 4, 3), (4, 4, 3)])
def test_fastv_scores_at_a_full_attention_layer(model, requested, layer, score):
    """Layers: linear, full, linear, full, linear, linear. The scores come from the first
    full-attention layer at or after layer - 1; handle.stats says which."""
    x = video(model)
    length = x["input_ids"].shape[1]
    layers = model.model.language_model.layers
    seen = {layer - 1: [], layer: []}

    def record(i):
        def hook(mod, args, kw):
            seen[i].append((args[0] if args else kw["hidden_states"]).shape[1])

        return hook

    with vt.apply(model, "fastv", retention=0.25, layer=requested) as h:
        # registered after FastV's own hooks: they see what the layers get
        hooks = [layers[i].register_forward_pre_hook(record(i), with_kwargs=True) for i in seen]
        try:
            logits(model, x)
        finally:
            for hk in hooks:
                hk.remove()
    assert h.stats["layer"] == layer and h.stats["score_layer"] == score
    assert h.stats["requested_layer"] == requested
    assert seen == {layer - 1: [length], layer: [length - 48]}


def test_fastv_without_a_full_attention_layer_left_is_refused(model):
    with pytest.raises(ValueError, match=r"full-attention layers are \[1, 3\]"):
        vt.apply(model, "fastv", retention=0.5, layer=5)
    with vt.apply(model, "fastv", retention=0.5, layer=4):  # nothing was left applied
        pass


def test_fastv_scores_equal_the_models_own_attention():
    """The gated query (q_proj gives query and gate) and the partial rotary of Qwen3.5's
    attention: FastV's recomputed scores equal the eager attention weights of the
    scoring layer's last query (mean over heads)."""
    model = testing.tiny_qwen3_5(attn="eager")
    x = video(model)
    seen = []
    attn = model.model.language_model.layers[1].self_attn
    hook = attn.register_forward_hook(lambda mod, args, out: seen.append(out[1]))
    try:
        with vt.apply(model, "fastv", retention=0.25, layer=2) as h:
            logits(model, x)
            scores = h._parts[0].last_scores
    finally:
        hook.remove()
    weights = seen[0][:, :, -1].float().mean(dim=1)  # (B, L)
    torch.testing.assert_close(scores, weights, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer,padding", [(1, "left"), (3, "none")])
def test_fastv_cached_generation_equals_a_pinned_recompute(model, layer, padding):
    """From the pruning layer on, linear-attention layers run their recurrence over the
    kept positions: decoding from their cached states equals an uncached forward of prompt
    and generated tokens with the same selection."""
    items = singles(model)
    x = batch(items) if padding == "left" else items[0]
    with vt.apply(model, "fastv", retention=0.25, layer=layer) as h:
        out = generate(model, x)
        keep = h._parts[0].last_keep.clone()
        ref = pinned_fastv_recompute(model, h, x, out.sequences, keep)
        got = torch.stack(out.logits, dim=1)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
        if padding == "left":
            for i, s in enumerate(items):
                alone = torch.stack(generate(model, s).logits, dim=1)[0]
                torch.testing.assert_close(got[i], alone, atol=ATOL_BATCH, rtol=0)


@pytest.mark.parametrize("method", ["tome", "fastv"])
def test_remove_restores_bit_identical_outputs(model, method):
    x = video(model)
    before = logits(model, x)
    gen_before = generate(model, x)
    h = vt.apply(model, method, retention=0.3)
    assert logits(model, x).shape[1] < before.shape[1]
    generate(model, x)
    h.remove()
    assert torch.equal(logits(model, x), before)
    gen_after = generate(model, x)
    assert torch.equal(gen_after.sequences, gen_before.sequences)
    assert all(torch.equal(a, b) for a, b in zip(gen_after.logits, gen_before.logits, strict=True))


@pytest.mark.parametrize("kind", ["video", "image"])
def test_real_processor_outputs_pass_unchanged(model, kind):
    proc = testing.tiny_qwen3_processor()
    gen = torch.Generator().manual_seed(1)
    if kind == "video":
        media = {
            "videos": [
                torch.randint(0, 256, (8, 48, 40, 3), generator=gen, dtype=torch.uint8).numpy()
            ]
        }
    else:
        media = {
            "images": [torch.randint(0, 256, (30, 60, 3), generator=gen, dtype=torch.uint8).numpy()]
        }
    msgs = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "Why?"}]}]
    x = proc(
        text=[proc.apply_chat_template(msgs, add_generation_prompt=True)],
        return_tensors="pt",
        **media,
    )
    ref = logits(model, x)
    with vt.apply(model, "pool", retention=1.0):
        assert torch.equal(logits(model, x), ref)
    with vt.apply(model, "pool", retention=0.3) as h, recording(model) as calls:
        out = generate(model, x)
    assert h.stats["sequence_after"] < h.stats["sequence_before"] == x["input_ids"].shape[1]
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(got, recompute(model, calls[0], out.sequences), atol=ATOL, rtol=0)
