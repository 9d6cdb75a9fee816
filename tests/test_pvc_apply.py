"""vt.apply on vistoken's own PVC (the shipped tiny checkpoint): the family guarantees of the
other families, as numbers (issue 11's comparison runs the training-free methods on the
uncompressed PVC control through exactly this path)."""

from __future__ import annotations

import model_helpers
import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)

import vistoken as vt
from vistoken.core import budget_for
from vistoken.eval import synthetic as syn
from vistoken.models.base import contiguous_positions
from vistoken.pvc import tiny

STEPS = 3


@pytest.fixture(scope="module")
def pvc():
    return tiny.load_pvc()


def inputs(proc, *qtypes, index=0):
    samples = [syn.sample("test", index, q, frames=16, size=112) for q in qtypes]
    return dict(tiny.prompts(proc, samples))


def logits(model, x):
    with torch.no_grad():
        return model(**x).logits


def record_llm(model):
    calls = []

    def hook(mod, args, kw):
        calls.append({"embeds": kw.get("inputs_embeds"), "mask": kw.get("attention_mask"),
                      "pos": kw.get("position_ids")})

    return calls, model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def generate(model, x):
    pad = model.generation_config.pad_token_id  # PVC's own tokenizer, not the tiny one
    return model_helpers.generate(model, x, STEPS, pad_token_id=pad)


def test_retention_one_gives_identical_logits_and_remove_restores_them(pvc):
    model, proc = pvc
    x = inputs(proc, "motion")
    ref = logits(model, x)
    with vt.apply(model, "uniform", retention=1.0) as h:
        same = logits(model, x)
    assert torch.equal(ref, same)
    assert h.stats["kept_tokens"] == h.stats["visual_tokens"] == 16 * 49
    with vt.apply(model, "scc", retention=0.25):
        changed = logits(model, x)
    assert changed.shape[1] < ref.shape[1]
    assert torch.equal(logits(model, x), ref)  # removed: bit-identical again


@pytest.mark.parametrize("method", ["scc", "pool", "random"])
def test_each_clip_is_one_unit_on_the_encoder_grid(pvc, method):
    model, proc = pvc
    x = inputs(proc, "count", "image_detail")  # a 16-frame video and a 4-frame static video
    length = x["input_ids"].shape[1]
    calls, hook = record_llm(model)
    try:
        with vt.apply(model, method, retention=0.25) as h:
            logits(model, x)
    finally:
        hook.remove()
    units = [c.num_tokens for c in h.last]
    assert units == [budget_for(0.25, 16 * 49), budget_for(0.25, 4 * 49)]
    assert h.stats["visual_tokens"] == 20 * 49
    # the LLM's first call is the shortened prefill: every row loses its dropped tokens
    short = calls[0]["embeds"]
    kept_per_row = calls[0]["mask"].sum(1).tolist()
    full_per_row = x["attention_mask"].sum(1).tolist()
    dropped = [16 * 49 - units[0], 4 * 49 - units[1]]
    assert [f - k for f, k in zip(full_per_row, kept_per_row, strict=True)] == dropped
    # re-packed to the longest row (the padded image row keeps its padding)
    assert short.shape[1] == length - min(dropped)


def test_cached_generation_equals_a_full_recompute(pvc):
    model, proc = pvc
    x = inputs(proc, "order", "image_detail", index=1)  # two lengths: the batch is padded
    calls, hook = record_llm(model)
    try:
        with vt.apply(model, "tome", retention=0.3):
            out = generate(model, x)
            prefill = calls[0]
            new = out.sequences[:, -STEPS:]
            embeds = torch.cat((prefill["embeds"], model.get_input_embeddings()(new[:, :-1])), 1)
            mask = torch.cat((prefill["mask"], torch.ones_like(new[:, :-1])), 1)
            with torch.no_grad():
                ref = model(inputs_embeds=embeds, attention_mask=mask,
                            position_ids=contiguous_positions(mask), use_cache=False).logits
    finally:
        hook.remove()
    start = prefill["embeds"].shape[1] - 1
    torch.testing.assert_close(torch.stack(out.logits, 1), ref[:, start:start + STEPS],
                               atol=1e-5, rtol=0)
    # and each sample alone gives the logits it gets in the batch
    for i, q in enumerate(("order", "image_detail")):
        with vt.apply(model, "tome", retention=0.3):
            alone = generate(model, inputs(proc, q, index=1))
        torch.testing.assert_close(torch.stack(out.logits, 1)[i],
                                   torch.stack(alone.logits, 1)[0], atol=1e-4, rtol=0)


def test_missing_clip_lengths_is_a_clear_error(pvc):
    model, proc = pvc
    x = inputs(proc, "motion")
    del x["frames_per_clip"]
    with vt.apply(model, "random", retention=0.5), pytest.raises(ValueError,
                                                                 match="frames_per_clip"):
        logits(model, x)
