"""vt.apply compared as numbers: the logits of cached generation against a full recompute
of the same compressed prompt, and a batch against its samples alone, for every family,
every stage of method (pre-LLM, VisionZip, FastV), under sdpa and eager, with left and
right padding; the positions the LLM sees on each decode step; beam search, use_cache=False
and the refusals.

A few greedy tokens of a tiny random model seldom flip when positions are wrong (the
transformers 5.24 regression moved every decode step by the number of dropped tokens and
changed logits by only 2e-3), so every comparison here is on logits.
"""

from __future__ import annotations

import model_helpers
import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from model_helpers import batch, continued_positions, pinned_fastv_recompute

import vistoken as vt
from vistoken import testing
from vistoken.models import _hf
from vistoken.models.base import last_valid_column

STEPS = 4
ATOL = 1e-5  # cached vs recomputed, same batch: float32 round-off only
ATOL_BATCH = 1e-4  # padded batch vs alone: sdpa/eager sum in another order

BUILD = {
    "llava-onevision": testing.tiny_llava_onevision,
    "qwen2-vl": testing.tiny_qwen2_vl,
    "qwen2.5-vl": testing.tiny_qwen2_5_vl,
    "internvl": testing.tiny_internvl,
}


def singles(name, model):
    """Two samples of one family with different lengths (so a batch needs padding)."""
    if name == "llava-onevision":
        return [
            testing.llava_onevision_inputs(model, [3], text=t, seed=s) for t, s in ((4, 0), (9, 1))
        ]
    if name == "internvl":
        return [testing.internvl_inputs(model, [f], seed=s) for f, s in ((3, 0), (1, 1))]
    return [testing.qwen_vl_inputs(model, [g], seed=s) for g, s in (((4, 8, 8), 0), ((2, 8, 4), 1))]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name, attn):
        if (name, attn) not in cache:
            cache[name, attn] = BUILD[name](attn=attn)
        return cache[name, attn]

    return get


def record_llm_calls(model):
    """Hook the language model; returns (calls, hook). Each call: embeds, positions, mask."""
    calls = []

    def hook(mod, args, kw):
        calls.append(
            {
                "embeds": kw.get("inputs_embeds"),
                "pos": kw.get("position_ids"),
                "mask": kw.get("attention_mask"),
            }
        )

    return calls, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def generate(model, x, steps=STEPS, **kw):
    return model_helpers.generate(model, x, steps, output_scores=True, **kw)


def recompute(model, prefill, sequences, steps):
    """Logits (B, steps, V) of a full, uncached forward of the compressed prompt the LLM
    saw followed by the generated tokens, with the positions they should have."""
    new = sequences[:, -steps:]
    embeds = torch.cat((prefill["embeds"], model.get_input_embeddings()(new[:, :-1])), dim=1)
    pos, mask = continued_positions(prefill, steps - 1)
    with torch.no_grad():
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)
    start = prefill["embeds"].shape[1] - 1
    return out.logits[:, start : start + steps], pos


def assert_decode_positions(calls, pos, prompt_len):
    """Decode step j (j >= 1) must see the positions of column prompt_len - 1 + j."""
    assert len(calls) == STEPS
    for j, call in enumerate(calls[1:], start=1):
        seen = call["pos"]
        assert seen is not None, "the LLM got no position ids on a decode step"
        col = prompt_len - 1 + j
        if seen.ndim == 2:
            want = pos[..., col : col + 1] if pos.ndim == 2 else pos[0, :, col : col + 1]
            assert torch.equal(seen, want), f"decode step {j}: positions {seen} != {want}"
        else:
            assert torch.equal(seen[-3:], pos[-3:, :, col : col + 1]), f"decode step {j}"
            if seen.shape[0] == 4:
                assert torch.equal(seen[0], pos[0, :, col : col + 1]), f"decode step {j} text"


PRE_LLM_CASES = [(n, m) for n in BUILD for m in ("tome", "uniform")] + [
    ("llava-onevision", "visionzip")
]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("padding", ["none", "left"])
@pytest.mark.parametrize("name,method", PRE_LLM_CASES)
def test_cached_generation_equals_a_full_recompute(models, name, method, padding, attn):
    model = models(name, attn)
    items = singles(name, model)
    x = batch(items) if padding == "left" else items[0]
    calls, hook = record_llm_calls(model)
    try:
        with vt.apply(model, method, retention=0.3) as h:
            out = generate(model, x)
    finally:
        hook.remove()
    assert h.stats["kept_tokens"] < h.stats["visual_tokens"]
    prefill = calls[0]
    assert prefill["embeds"].shape[1] == h.stats["sequence_after"] < h.stats["sequence_before"]
    ref, pos = recompute(model, prefill, out.sequences, STEPS)
    got = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.stack(out.scores, dim=1), ref, atol=ATOL, rtol=0)
    assert_decode_positions(calls, pos, prefill["embeds"].shape[1])
    if padding == "left":  # each sample alone gives the same logits
        for i, s in enumerate(items):
            with vt.apply(model, method, retention=0.3):
                alone = generate(model, s)
            torch.testing.assert_close(
                got[i], torch.stack(alone.logits, dim=1)[0], atol=ATOL_BATCH, rtol=0
            )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("padding", ["none", "left"])
@pytest.mark.parametrize("name", list(BUILD))
def test_fastv_cached_generation_equals_a_pinned_recompute(models, name, padding, attn):
    model = models(name, attn)
    items = singles(name, model)
    x = batch(items) if padding == "left" else items[0]
    with vt.apply(model, "fastv", retention=0.25, layer=2) as h:
        out = generate(model, x)
        keep = h._parts[0].last_keep.clone()
        ref = pinned_fastv_recompute(model, h, x, out.sequences, keep, STEPS)
        got = torch.stack(out.logits, dim=1)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
        if padding == "left":
            for i, s in enumerate(items):
                alone = generate(model, s)
                torch.testing.assert_close(
                    got[i], torch.stack(alone.logits, dim=1)[0], atol=ATOL_BATCH, rtol=0
                )


def _fastv_output_mask(keep, mask):
    """1 where an output column of a FastV prefill holds a real (unpadded) input token."""
    return (keep >= 0).long() * mask.gather(1, keep.clamp(min=0))


def last_valid(logits, mask):
    """(B, V) logits at each row's last real token (mask: 1 on real tokens)."""
    return logits[torch.arange(logits.shape[0]), last_valid_column(mask)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "name,method",
    [(n, m) for n in BUILD for m in ("tome", "fastv")] + [("llava-onevision", "visionzip")],
)
def test_right_padded_batch_equals_each_sample_alone(models, name, method, attn):
    model = models(name, attn)
    items = singles(name, model)
    x = batch(items, side="right")
    assert x["attention_mask"][:, -1].min() == 0  # really right-padded
    calls, hook = record_llm_calls(model)
    try:
        with vt.apply(model, method, retention=0.3) as h, torch.no_grad():
            out = model(**x)
            keep = h._parts[0].last_keep.clone() if method == "fastv" else None
            alone = [model(**s).logits[:, -1] for s in items]
    finally:
        hook.remove()
    if method == "fastv":  # output columns: the kept positions (FastV.last_keep)
        mask = _fastv_output_mask(keep, x["attention_mask"])
    else:
        mask = calls[0]["mask"].long()  # the shortened sequence stays right-padded
        assert mask[:, 0].min() == 1
    together = last_valid(out.logits, mask)
    for i, a in enumerate(alone):
        torch.testing.assert_close(together[i], a[0], atol=ATOL_BATCH, rtol=0)


# two beams, both returned, scores = summed log-probabilities (no length penalty)
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


def sequence_logprob(model, prefill, sequences, steps):
    """Sum of log-probabilities of the generated tokens under a full recompute."""
    logits, _ = recompute(model, prefill, sequences, steps)
    logp = logits.log_softmax(-1)
    new = sequences[:, -steps:]
    return logp.gather(-1, new[..., None])[..., 0].sum(dim=1)


@pytest.mark.parametrize("name", list(BUILD))
def test_beam_search_scores_equal_a_full_recompute(models, name):
    model = models(name, "sdpa")
    x = singles(name, model)[0]
    calls, hook = record_llm_calls(model)
    try:
        with vt.apply(model, "tome", retention=0.3):
            with torch.no_grad():
                out = model.generate(**x, **BEAMS)
    finally:
        hook.remove()
    prefill = calls[0]
    rows = prefill["embeds"].shape[0]
    assert rows == 2  # beams expand the prompt before the prefill
    ref = sequence_logprob(model, prefill, out.sequences, 3)
    torch.testing.assert_close(out.sequences_scores, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(BUILD))
def test_fastv_beam_search_scores_equal_a_pinned_recompute(models, name):
    """Beams of one sample share its prompt, so FastV's prefill selection (made per
    expanded row, identical within a sample) holds whatever order the beams are in."""
    model = models(name, "sdpa")
    x = singles(name, model)[0]
    with vt.apply(model, "fastv", retention=0.25) as h, torch.no_grad():
        out = model.generate(**x, **BEAMS)
        keep = h._parts[0].last_keep.clone()
        assert torch.equal(keep[0], keep[1])
        beams = batch([x, x])
        logits = pinned_fastv_recompute(model, h, beams, out.sequences, keep, 3)
    logp = logits.log_softmax(-1).gather(-1, out.sequences[:, -3:, None])[..., 0].sum(1)
    torch.testing.assert_close(out.sequences_scores, logp, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(BUILD))
@pytest.mark.parametrize("method", ["tome", "fastv"])
def test_generate_without_cache(models, name, method):
    """use_cache=False recompresses the whole growing prompt every step: for a pre-LLM
    method that is exactly the cached result; FastV re-scores with each new last token, so
    only its first step is the cached one."""
    model = models(name, "sdpa")
    x = singles(name, model)[0]
    with vt.apply(model, method, retention=0.3):
        cached = generate(model, x)
        plain = generate(model, x, use_cache=False)
    a, b = torch.stack(cached.logits, 1), torch.stack(plain.logits, 1)
    if method == "fastv":
        torch.testing.assert_close(a[:, 0], b[:, 0], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(BUILD))
def test_prefill_that_continues_a_cache_is_refused(models, name):
    model = models(name, "sdpa")
    x = singles(name, model)[0]
    key = _hf.cache_key(model.forward, type(model).__name__)
    with vt.apply(model, "uniform", retention=0.5), torch.no_grad():
        out = model(**x, use_cache=True)
        cache = out.past_key_values if key == "past_key_values" else _hf_cache(out)
        assert _hf.cached_tokens(cache) > 0
        with pytest.raises(ValueError, match="starts from an empty cache"):
            model(**x, **{key: cache})


def _hf_cache(out):
    for key in _hf.CACHE_KEYS:
        value = getattr(out, key, None)
        if value is not None:
            return value
    raise AssertionError("the model output carries no cache")


@pytest.mark.parametrize("name", list(BUILD))
def test_labels_are_refused_with_a_clear_message(models, name):
    model = models(name, "sdpa")
    x = singles(name, model)[0]
    with vt.apply(model, "uniform", retention=0.5):
        with pytest.raises(ValueError, match="labels"):
            model(**x, labels=x["input_ids"])
    out = model(**x, labels=x["input_ids"])  # after remove(): training works as before
    assert torch.isfinite(out.loss)
