"""vt.apply on Gemma 4 (``Gemma4ForConditionalGeneration``), images and videos.

The tiny model (``testing.tiny_gemma4``) has every part of the design that touches the
sequence: bidirectional attention over each image's (frame's) soft tokens in the
sliding-window layers, sliding windows shorter than the prompts, full-attention layers of
another head size, Per-Layer Embeddings and KV-shared layers. Every comparison is on
logits. Video forwards go through ``generate`` (transformers 5.19's top-level forward
drops ``num_frames_per_video``; generate encodes the video itself on both ends).
"""

from __future__ import annotations

import math

import model_helpers
import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from model_helpers import lengths_seen

import vistoken as vt
from vistoken import testing
from vistoken.models.apply import supported_models
from vistoken.models.base import contiguous_positions

STEPS = 3
ATOL = 1e-5  # cached vs recomputed: float32 round-off only
ATOL_BATCH = 1e-4  # padded batch vs alone: attention sums in another order

PRE_LLM = vt.methods(stage="tokens")
VIDEO_ONLY = {"dycoke", "vidcom2", "evs"}  # temporal methods: need frames
SPECIAL = [
    testing.IMAGE_ID,
    testing.VIDEO_ID,
    testing.GEMMA4_BOI_ID,
    testing.GEMMA4_EOI_ID,
    testing.GEMMA4_AUDIO_ID,
]
GRIDS = {"image": [(1, 4, 5), (1, 3, 3)], "video": [(3, 3, 4), (2, 4, 4)]}


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(attn="sdpa"):
        if attn not in cache:
            cache[attn] = testing.tiny_gemma4(attn=attn)
        return cache[attn]

    return get


def sample(model, kind, i=0):
    return testing.gemma4_inputs(model, GRIDS[kind][i : i + 1], kind=kind, seed=i, text=4 + 5 * i)


def pair(model, kind):
    """Two samples of different lengths, and the left-padded batch of both."""
    items = [sample(model, kind, i) for i in range(2)]
    x = model_helpers.batch(items)
    for key in items[0].keys() - x.keys():  # Gemma 4's other per-sample inputs
        x[key] = torch.cat([s[key] for s in items])
    return items, x


def generate(model, x, steps=STEPS):
    # a random model may pick a placeholder id, which the model itself then embeds as
    # padding: keep the generated tokens plain text
    return model_helpers.generate(model, x, steps, suppress_tokens=SPECIAL)


def record_inner(model):
    """Record the inner model's keyword arguments after vt.apply's hook (call it after
    vt.apply: pre-hooks run in the order they were registered). Returns (calls, hook)."""
    calls = []
    hook = model.model.register_forward_pre_hook(
        lambda mod, args, kw: calls.append(dict(kw)), with_kwargs=True
    )
    return calls, hook


def recompute(model, prefill, sequences, steps):
    """Logits (B, steps, V) of one uncached forward of the shortened prompt the LLM saw
    followed by the generated tokens (text: causal, type 0, their own PLE)."""
    new = sequences[:, -steps:-1]
    b = new.shape[0]
    mask = prefill.get("attention_mask")
    if mask is None:
        mask = torch.ones(prefill["inputs_embeds"].shape[:2], dtype=torch.long)
    mask = torch.cat((mask, torch.ones_like(new)), dim=1)
    lm = model.model.language_model
    with torch.no_grad():
        out = model(
            inputs_embeds=torch.cat((prefill["inputs_embeds"], lm.embed_tokens(new)), dim=1),
            per_layer_inputs=torch.cat(
                (prefill["per_layer_inputs"], lm.get_per_layer_inputs(new, None)), dim=1
            ),
            mm_token_type_ids=torch.cat(
                (prefill["mm_token_type_ids"], torch.zeros(b, new.shape[1], dtype=torch.long)), 1
            ),
            attention_mask=mask,
            position_ids=contiguous_positions(mask),
            use_cache=False,
        )
    start = prefill["inputs_embeds"].shape[1] - 1
    return out.logits[:, start : start + steps]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_retention_one_gives_identical_logits(models, kind):
    model = models()
    x = sample(model, kind)
    ref = torch.stack(generate(model, x).logits, dim=1)
    with vt.apply(model, "uniform", retention=1.0) as h:
        out = torch.stack(generate(model, x).logits, dim=1)
    assert torch.equal(ref, out)
    t, hh, w = GRIDS[kind][0]
    assert h.stats["kept_tokens"] == h.stats["visual_tokens"] == t * hh * w


@pytest.mark.parametrize(
    "kind,method",
    [("video", m) for m in PRE_LLM] + [("image", m) for m in PRE_LLM if m not in VIDEO_ONLY],
)
def test_every_pre_llm_method_shortens_the_prefill_by_the_exact_count(models, kind, method):
    model = models()
    x = sample(model, kind)
    length = x["input_ids"].shape[1]
    seen, hook = lengths_seen(model)
    try:
        with vt.apply(model, method, retention=0.3) as h:
            generate(model, x, steps=2)
    finally:
        hook.remove()
    t, hh, w = GRIDS[kind][0]
    budget = math.ceil(0.3 * t * hh * w)
    assert [c.num_tokens for c in h.last] == [budget]
    assert seen[0] == h.stats["sequence_after"] == length - (t * hh * w - budget)
    assert seen[1:] == [1]  # the decode step: one new token on the shortened cache


CACHED = [
    ("image", "tome", "sdpa"),
    ("video", "tome", "sdpa"),
    ("video", "scc", "sdpa"),
    ("image", "uniform", "eager"),
    ("video", "dycoke", "eager"),
]


@pytest.mark.parametrize("kind,method,attn", CACHED)
def test_cached_generation_equals_a_full_recompute_and_batch_equals_alone(
    models, kind, method, attn
):
    model = models(attn)
    items, x = pair(model, kind)
    with vt.apply(model, method, retention=0.3) as h:
        calls, hook = record_inner(model)
        try:
            out = generate(model, x)
        finally:
            hook.remove()
        after = h.stats["sequence_after"]
        alone = [torch.stack(generate(model, s).logits, dim=1)[0] for s in items]
    prefill = calls[0]
    assert prefill["input_ids"] is None
    assert prefill["inputs_embeds"].shape[1] == after < x["input_ids"].shape[1]
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(
        got, recompute(model, prefill, out.sequences, STEPS), atol=ATOL, rtol=0
    )
    for i, a in enumerate(alone):
        torch.testing.assert_close(got[i], a, atol=ATOL_BATCH, rtol=0)


def test_video_blocks_timestamps_types_and_ple_follow_the_kept_tokens(models):
    """One kept token for a 3-frame video: two frame blocks become empty and stay in the
    prompt (timestamp, begin and end of image), every text token stays in order with its
    own PLE inputs, and the kept token's type marks its frame's bidirectional block."""
    model = models()
    x = sample(model, "video")
    t, hh, w = GRIDS["video"][0]
    with vt.apply(model, "random", retention=1 / (t * hh * w)) as h:
        calls, hook = record_inner(model)
        try:
            generate(model, x, steps=1)
        finally:
            hook.remove()
    (c,) = h.last
    assert c.num_tokens == 1
    short = calls[0]
    ids, types = x["input_ids"][0], x["mm_token_type_ids"][0]
    text = types == 0
    assert torch.equal(short["mm_token_type_ids"][0], _types(types, c))
    # text columns: the original tokens in order (embeddings and PLE)
    lm = model.model.language_model
    kept_text = short["mm_token_type_ids"][0] == 0
    with torch.no_grad():
        assert torch.equal(short["inputs_embeds"][0, kept_text], lm.embed_tokens(ids[text]))
        assert torch.equal(
            short["per_layer_inputs"][0, kept_text],
            lm.get_per_layer_inputs(ids[text][None], None)[0],
        )
    assert int(kept_text.sum()) == int(text.sum())  # boi/eoi/timestamps of empty frames too
    assert int((short["mm_token_type_ids"][0] != 0).sum()) == 1  # t - 1 blocks now empty


def _types(types, c):
    """The expected shortened type ids: text kept, one video token at its anchor."""
    visual = (types != 0).nonzero().flatten()
    keep = types == 0
    keep[visual[c.anchors]] = True
    return types[keep]


def test_soft_token_grids_are_known_under_generate(models):
    """generate() drops image_position_ids; the tower's recorded grid still gives each
    output token its (row, column) on the 4x5 soft-token grid."""
    model = models()
    x = sample(model, "image")
    with vt.apply(model, "uniform", retention=1.0) as h:
        generate(model, x, steps=1)
    (c,) = h.last
    assert c.positions[:, 1].max() == 3 and c.positions[:, 2].max() == 4
    assert torch.equal(c.positions[:, 1] * 5 + c.positions[:, 2], torch.arange(20))


@pytest.mark.parametrize("kind", ["image", "video"])
def test_remove_restores_bit_identical_outputs(models, kind):
    model = models()
    x = sample(model, kind)
    ref = torch.stack(generate(model, x).logits, dim=1)
    with vt.apply(model, "scc", retention=0.2):
        changed = torch.stack(generate(model, x).logits, dim=1)
    assert not torch.allclose(changed, ref)
    assert not model.model.vision_tower._forward_hooks  # the grid recorder is gone
    assert torch.equal(torch.stack(generate(model, x).logits, dim=1), ref)


def test_real_processor_outputs_pass_unchanged(models):
    processor = testing.tiny_gemma4_processor()
    model = models()
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (40, 70, 3), generator=gen, dtype=torch.uint8).numpy()
    video = torch.randint(0, 256, (4, 40, 64, 3), generator=gen, dtype=torch.uint8).numpy()
    for kind, item, per in (("image", image, (6, 11)), ("video", video, (6, 10))):
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "What?"}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        key = "videos" if kind == "video" else "images"
        x = processor(text=[text], **{key: [item]}, return_tensors="pt")
        frames = 4 if kind == "video" else 1
        n = frames * per[0] * per[1]
        token = testing.VIDEO_ID if kind == "video" else testing.IMAGE_ID
        assert int((x["input_ids"] == token).sum()) == n
        assert int((x["input_ids"] == testing.GEMMA4_BOI_ID).sum()) == frames
        ref = torch.stack(generate(model, x).logits, dim=1)
        with vt.apply(model, "uniform", retention=1.0) as h:
            assert torch.equal(torch.stack(generate(model, x).logits, dim=1), ref)
        # the processor's grid reached the compressor (generate drops the patch positions)
        assert h.last[0].positions.amax(0).tolist() == [frames - 1, per[0] - 1, per[1] - 1]
        seen, hook = lengths_seen(model)
        try:
            with vt.apply(model, "pool", retention=0.25) as h:
                generate(model, x, steps=1)
        finally:
            hook.remove()
        assert h.last[0].num_tokens == math.ceil(0.25 * n)
        assert seen[0] == x["input_ids"].shape[1] - (n - math.ceil(0.25 * n))


def test_right_padded_batch_and_uncached_generation(models):
    """A right-padded batch gives each sample's logits at its last real token, and
    generate(use_cache=False) (a compressed prefill at every step) the cached logits."""
    model = models()
    items, _ = pair(model, "image")
    longest = max(s["input_ids"].shape[1] for s in items)
    x = {k: torch.cat([s[k] for s in items]) for k in ("pixel_values", "image_position_ids")}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        x[key] = torch.cat(
            [torch.nn.functional.pad(s[key], (0, longest - s[key].shape[1])) for s in items]
        )
    with vt.apply(model, "tome", retention=0.3), torch.no_grad():
        calls, hook = record_inner(model)
        try:
            out = model(**x).logits
        finally:
            hook.remove()
        alone = [model(**s).logits[0, -1] for s in items]
        cached = torch.stack(generate(model, items[0]).logits, dim=1)
        uncached = model.generate(
            **items[0],
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            do_sample=False,
            use_cache=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=testing.PAD_ID,
            suppress_tokens=SPECIAL,
        )
    mask = calls[0]["attention_mask"]
    assert mask[:, 0].min() == 1 and mask[:, -1].min() == 0  # still right-padded
    last = mask.sum(dim=1) - 1
    for i, a in enumerate(alone):
        torch.testing.assert_close(out[i, last[i]], a, atol=ATOL_BATCH, rtol=0)
    torch.testing.assert_close(torch.stack(uncached.logits, dim=1), cached, atol=ATOL, rtol=0)


def test_refusals_name_the_reason(models):
    model = models()
    with pytest.raises(TypeError, match="fastv is not supported on Gemma 4.*sliding-window.*scc"):
        vt.apply(model, "fastv", retention=0.5)
    assert "_vistoken_handle" not in model.__dict__  # nothing was applied
    with pytest.raises(TypeError, match="visionzip is implemented for the LLaVA-OneVision"):
        vt.apply(model, "visionzip", retention=0.5)
    x = sample(model, "image")
    with vt.apply(model, "uniform", retention=0.5), torch.no_grad():
        with pytest.raises(ValueError, match="audio"):
            model(**x, input_features=torch.zeros(1, 8, 128))
        v = sample(model, "video")
        del v["num_frames_per_video"]
        with pytest.raises(ValueError, match="num_frames_per_video"):
            model(**v)
    with pytest.raises(TypeError, match="Gemma4ForConditionalGeneration") as err:
        vt.apply(torch.nn.Linear(2, 2), "uniform", retention=0.5)
    for name in supported_models():
        assert name in str(err.value)
