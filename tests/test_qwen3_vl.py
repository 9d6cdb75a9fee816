"""vt.apply on Qwen3-VL (dense and MoE): per-block videos with timestamps, DeepStack,
interleaved M-RoPE, cached generation against full recomputes, batches, FastV, remove()
and the real processor. Every comparison is on logits or exact tensors."""

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
from vistoken.models import supported_models
from vistoken.models.qwen3 import Qwen3VLFamily

BUILD = {"qwen3-vl": testing.tiny_qwen3_vl, "qwen3-vl-moe": testing.tiny_qwen3_vl_moe}
PRE_LLM = vt.methods(stage="tokens")


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name="qwen3-vl", attn="sdpa"):
        if (name, attn) not in cache:
            cache[name, attn] = BUILD[name](attn=attn)
        return cache[name, attn]

    return get


@pytest.mark.parametrize("kind", ["video", "image"])
@pytest.mark.parametrize("name", list(BUILD))
def test_retention_one_gives_identical_logits(models, name, kind):
    model = models(name)
    x = video(model) if kind == "video" else image(model)
    ref = logits(model, x)
    for method in [*PRE_LLM, "fastv"]:
        with vt.apply(model, method, retention=1.0) as h:
            got = logits(model, x)
        assert torch.equal(got, ref), method
        assert h.stats["kept_tokens"] == h.stats["visual_tokens"] == (64 if kind == "video" else 16)


def test_deepstack_reaches_the_llm(models):
    """The tiny model's DeepStack levels change its logits, so the identity above (and
    every comparison below) would fail if vt.apply lost them."""
    model = models()
    x = video(model)
    with vt.apply(model, "tome", retention=0.5), recording(model) as calls:
        with_ds = logits(model, x)
    call = calls[0]
    assert call["visual"] is not None and len(call["deepstack"]) == 2
    with torch.no_grad():
        out = model.model.language_model(
            inputs_embeds=call["embeds"], attention_mask=call["mask"], position_ids=call["pos"]
        )
        without = model.lm_head(out.last_hidden_state)
    assert (with_ds - without).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["tome", "uniform", "scc", "dycoke", "fastv"])
def test_compression_shortens_the_prefill(models, method):
    model = models()
    x = video(model)
    length = x["input_ids"].shape[1]
    seen, hook = lengths_seen(model)
    try:
        with vt.apply(model, method, retention=0.25) as h:
            out = logits(model, x)
    finally:
        hook.remove()
    assert h.stats["visual_tokens"] == 64 and h.stats["kept_tokens"] == 16
    if method == "fastv":  # the first layers see everything, the logits only the kept
        assert seen == [length] and out.shape[1] == length - 48
    else:
        assert seen == [length - 48] == [h.stats["sequence_after"]]


def test_video_blocks_keep_timestamps_delimiters_and_order(models):
    """uniform keeps 3 of 64 tokens: one block keeps none. The LLM gets exactly the
    uncompressed prompt's text (timestamps, <vision_start>/<vision_end> of every block,
    the empty block's included) with each kept token in its anchor's slot, in order, at
    its anchor's (t, h, w) position; the DeepStack mask marks exactly the kept tokens."""
    model = models()
    x = video(model)
    ids = x["input_ids"][0]
    with vt.apply(model, "uniform", retention=3 / 64) as h, recording(model) as calls:
        logits(model, x)
    (c,) = h.last
    slots = (ids == testing.VIDEO_ID).nonzero()[:, 0]
    per_block = torch.bincount(c.anchors // 16, minlength=4)
    assert int(per_block.sum()) == 3 and int((per_block == 0).sum()) >= 1
    keep = ids != testing.VIDEO_ID
    keep[slots[c.anchors]] = True
    with torch.no_grad():
        full = model.get_input_embeddings()(x["input_ids"])
    full[0, slots[c.anchors]] = c.tokens
    call = calls[0]
    assert torch.equal(call["embeds"], full[:, keep])
    # the text the LLM sees is the whole prompt's text, delimiters of every block included
    n_start = int((ids == 252).sum())
    assert n_start == 4 and int((ids[keep] == 252).sum()) == 4
    pos, _ = model.model.get_rope_index(
        x["input_ids"], x["mm_token_type_ids"], video_grid_thw=x["video_grid_thw"]
    )
    assert torch.equal(call["pos"][1:], pos[:, :, keep])
    assert torch.equal(call["pos"][0, 0], torch.arange(int(keep.sum())))
    assert torch.equal(call["visual"][0], (ids == testing.VIDEO_ID)[keep])


def _by_hand(c, feats):
    """Compressed.reduce written out: a lone source's row, else the mean of the sources."""
    rows = []
    for j in range(c.num_tokens):
        src = [i for i in range(c.sources.numel()) if int(c.sources[i]) == j]
        rows.append(feats[src[0]] if len(src) == 1 else sum(feats[i] for i in src) / len(src))
    return torch.stack(rows)


@pytest.mark.parametrize("method", ["tome", "pool", "divprune"])
def test_deepstack_levels_are_reduced_with_the_tokens_sources(models, method):
    model = models()
    x = video(model)
    with vt.apply(model, method, retention=0.25) as h, recording(model) as calls:
        logits(model, x)
    (c,) = h.last
    if method != "divprune":
        assert int(torch.bincount(c.sources[c.sources >= 0]).max()) > 1  # real merges
    with torch.no_grad():
        out = model.model.get_video_features(x["pixel_values_videos"], x["video_grid_thw"])
    order = torch.argsort(c.anchors)  # sequence order of the output tokens
    sent = calls[0]["deepstack"]
    assert len(sent) == len(out.deepstack_features) == 2
    for level, got in zip(out.deepstack_features, sent, strict=True):
        want = _by_hand(c, level[0])[order]
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(c.reduce(level[0])[order], want, atol=1e-6, rtol=0)


def test_grid_is_read_off_the_positions_of_every_block(models):
    """generate() drops video_grid_thw; the (t, h, w) grid then comes from the M-RoPE
    positions, where every block has its own origin."""
    model = models()
    x = testing.qwen3_vl_inputs(model, [(3, 8, 4)])
    pos, _ = model.model.get_rope_index(
        x["input_ids"], x["mm_token_type_ids"], video_grid_thw=x["video_grid_thw"]
    )
    run = (x["input_ids"] == testing.VIDEO_ID).nonzero().T
    got = Qwen3VLFamily._grid_from_positions({"position_ids": pos}, run)
    assert got == (3, 4, 2)


@pytest.mark.parametrize("padding", ["none", "left"])
@pytest.mark.parametrize(
    "name,method", [("qwen3-vl", "tome"), ("qwen3-vl", "dycoke"), ("qwen3-vl-moe", "uniform")]
)
def test_cached_generation_equals_a_full_recompute(models, name, method, padding):
    model = models(name)
    items = singles(model)
    x = batch(items) if padding == "left" else items[0]
    with vt.apply(model, method, retention=0.3) as h, recording(model) as calls:
        out = generate(model, x)
    prefill = calls[0]
    assert prefill["embeds"].shape[1] == h.stats["sequence_after"] < h.stats["sequence_before"]
    assert len(calls) == 4 and all(c["embeds"].shape[1] == 1 for c in calls[1:])
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(got, recompute(model, prefill, out.sequences), atol=ATOL, rtol=0)
    if padding == "left":  # each sample alone gives the same logits
        for i, s in enumerate(items):
            with vt.apply(model, method, retention=0.3):
                alone = torch.stack(generate(model, s).logits, dim=1)[0]
            torch.testing.assert_close(got[i], alone, atol=ATOL_BATCH, rtol=0)


@pytest.mark.parametrize("padding", ["none", "left"])
@pytest.mark.parametrize("layer", [1, 3])
def test_fastv_cached_generation_equals_a_pinned_recompute(models, layer, padding):
    """layer 1: pruning starts before the second DeepStack level is added."""
    model = models()
    items = singles(model)
    x = batch(items) if padding == "left" else items[0]
    with vt.apply(model, "fastv", retention=0.25, layer=layer) as h:
        out = generate(model, x)
        assert h.stats["layer"] == layer
        keep = h._parts[0].last_keep.clone()
        ref = pinned_fastv_recompute(model, h, x, out.sequences, keep)
        got = torch.stack(out.logits, dim=1)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
        if padding == "left":
            for i, s in enumerate(items):
                alone = torch.stack(generate(model, s).logits, dim=1)[0]
                torch.testing.assert_close(got[i], alone, atol=ATOL_BATCH, rtol=0)


def test_fastv_after_deepstack_equals_masking_the_dropped_tokens(models):
    """An independent reference for FastV pruning before a DeepStack layer: the plain
    model with layers >= K forbidden to attend to the dropped tokens (which then only
    attend to themselves) gives the kept positions the same logits."""
    model = models()
    x = video(model)
    length = x["input_ids"].shape[1]
    with vt.apply(model, "fastv", retention=0.25, layer=1) as h:
        pruned = logits(model, x)
        keep = h._parts[0].last_keep[0]
    kept = torch.zeros(length, dtype=torch.bool)
    kept[keep] = True
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (causal & kept[None]) | torch.eye(length, dtype=torch.bool)
    hooks = []

    def restrict(mod, args, kw):
        return args, {**kw, "attention_mask": allowed[None, None]}

    for layer in model.model.language_model.layers[1:]:
        hooks.append(layer.register_forward_pre_hook(restrict, with_kwargs=True))
    try:
        ref = logits(model, x)
    finally:
        for hk in hooks:
            hk.remove()
    torch.testing.assert_close(pruned[0], ref[0, keep], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(BUILD))
def test_remove_restores_bit_identical_outputs(models, name):
    model = models(name)
    x = video(model)
    before = logits(model, x)
    gen_before = generate(model, x)
    h = vt.apply(model, "tome", retention=0.3)
    assert logits(model, x).shape[1] < before.shape[1]
    generate(model, x)
    h.remove()
    assert torch.equal(logits(model, x), before)
    gen_after = generate(model, x)
    assert torch.equal(gen_after.sequences, gen_before.sequences)
    assert all(torch.equal(a, b) for a, b in zip(gen_after.logits, gen_before.logits, strict=True))
    assert not model._forward_pre_hooks and not model.model.language_model._forward_pre_hooks


@pytest.fixture(scope="module")
def processed():
    """The real Qwen3VLProcessor's outputs for a generated video and image."""
    proc = testing.tiny_qwen3_processor()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (8, 40, 64, 3), generator=gen, dtype=torch.uint8).numpy()
    image = torch.randint(0, 256, (40, 70, 3), generator=gen, dtype=torch.uint8).numpy()
    out = {}
    for kind, media in (("video", {"videos": [frames]}), ("image", {"images": [image]})):
        msgs = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "What?"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True)
        out[kind] = proc(text=[text], return_tensors="pt", **media)
    return out


@pytest.mark.parametrize("kind", ["video", "image"])
def test_real_processor_outputs_pass_unchanged(models, processed, kind):
    model = models()
    x = processed[kind]
    ids = x["input_ids"][0]
    if kind == "video":  # one timestamped block per temporal patch
        assert int((ids == 252).sum()) == int(x["video_grid_thw"][0, 0]) == 4
    ref = logits(model, x)
    with vt.apply(model, "tome", retention=1.0):
        assert torch.equal(logits(model, x), ref)
    with vt.apply(model, "tome", retention=0.3) as h, recording(model) as calls:
        out = generate(model, x)  # generate() drops the grids: read off the positions
    assert h.stats["sequence_after"] < h.stats["sequence_before"] == ids.numel()
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(got, recompute(model, calls[0], out.sequences), atol=ATOL, rtol=0)


def test_unsupported_model_names_every_supported_class():
    with pytest.raises(TypeError) as err:
        vt.apply(torch.nn.Linear(2, 2), "tome", retention=0.5)
    names = supported_models()
    for cls in (
        "Qwen3VLForConditionalGeneration",
        "Qwen3VLMoeForConditionalGeneration",
        "Qwen3_5ForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
    ):
        assert cls in names
    for cls in names:
        assert cls in str(err.value)


def test_visionzip_is_refused_with_the_supported_family(models):
    with pytest.raises(TypeError, match="LlavaOnevision"):
        vt.apply(models(), "visionzip", retention=0.5)


def test_text_only_prompts_pass_through(models):
    model = models()
    x = video(model)
    text = {k: x[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    text["input_ids"] = text["input_ids"].clamp(max=testing.IMAGE_ID - 1)
    text["mm_token_type_ids"] = torch.zeros_like(text["mm_token_type_ids"])
    ref = logits(model, text)
    with vt.apply(model, "tome", retention=0.3):
        assert torch.equal(logits(model, text), ref)


BEAMS = dict(
    max_new_tokens=3,
    min_new_tokens=3,
    num_beams=2,
    num_return_sequences=2,
    length_penalty=0.0,
    do_sample=False,
    output_scores=True,
    return_dict_in_generate=True,
    pad_token_id=testing.PAD_ID,
)


def test_beam_search_scores_equal_a_full_recompute(models):
    """Beams expand the prompt (and its DeepStack features) before the prefill."""
    model = models()
    x = video(model)
    with vt.apply(model, "tome", retention=0.3), recording(model) as calls, torch.no_grad():
        out = model.generate(**x, **BEAMS)
    prefill = calls[0]
    assert prefill["embeds"].shape[0] == 2 and len(prefill["deepstack"]) == 2
    logp = recompute(model, prefill, out.sequences, 3).log_softmax(-1)
    want = logp.gather(-1, out.sequences[:, -3:, None])[..., 0].sum(dim=1)
    torch.testing.assert_close(out.sequences_scores, want, atol=1e-4, rtol=0)
