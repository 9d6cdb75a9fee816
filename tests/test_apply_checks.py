"""vt.apply: SCC's own tau inside a model, the 4-D mask refusal and the compressor's timing."""

from __future__ import annotations

import time

import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)

import vistoken as vt
from vistoken import testing


@pytest.fixture(scope="module")
def llava():
    return testing.tiny_llava_onevision()


def inputs(model, seed=0):
    return testing.llava_onevision_inputs(model, [4], seed=seed)


def capture_units(handle):
    """Record every Unit the handle compresses (its tokens, slots and grid)."""
    units = []
    real = handle._compress_unit

    def spy(unit):
        units.append(unit)
        return real(unit)

    handle._compress_unit = spy
    return units


def llm_embeds(model):
    """The inputs_embeds the language model gets on each call; returns (list, hook)."""
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True
    )
    return seen, hook


def test_scc_tau_inside_a_model_is_the_hand_shortened_sequence(llava):
    # tau=0.7: 36 of the 64 tokens of these random features (0.9 would keep all 64)
    x = inputs(llava)
    seen, hook = llm_embeds(llava)
    try:
        with vt.apply(llava, "scc", tau=0.7) as h:
            units = capture_units(h)
            with torch.no_grad():
                got = llava(**x).logits
            stats, last = dict(h.stats), list(h.last)
    finally:
        hook.remove()
    assert len(units) == 1
    unit = units[0]
    t, n, _ = unit.tokens.shape
    c = vt.compress(unit.tokens, "scc", tau=0.7, grid=unit.grid)
    assert last == [c]  # the same result as vt.compress on the same features
    assert stats["kept_tokens"] == c.num_tokens and 1 < c.num_tokens < t * n  # adaptive
    assert c.info["tau"] == 0.7
    # the sequence by hand: text columns as they were, each output token in its anchor's
    # slot, the unit's other slots gone
    ids = x["input_ids"][0]
    text = llava.get_input_embeddings()(x["input_ids"])[0]
    slots = unit.slots.tolist()
    out_at = {slots[a]: j for j, a in enumerate(c.anchors.tolist())}
    visual = set(slots)
    want = [("out", out_at[col]) if col in out_at else ("in", col)
            for col in range(len(ids)) if col in out_at or col not in visual]
    emb = seen[0][0]
    assert emb.shape[0] == len(want) == stats["sequence_after"]
    assert stats["sequence_before"] - stats["sequence_after"] == t * n - c.num_tokens
    placeholders = (testing.IMAGE_ID, testing.VIDEO_ID)  # the video's newline is one too
    for row, (kind, k) in zip(emb, want, strict=True):
        if kind == "out":
            assert torch.equal(row, c.tokens[k].to(row.dtype))
        elif int(ids[k]) not in placeholders:
            assert torch.equal(row, text[k])  # text tokens unchanged
    assert got.shape[1] == len(want)


def test_a_4d_attention_mask_is_refused(llava):
    x = inputs(llava)
    length = x["input_ids"].shape[1]
    x["attention_mask"] = torch.ones(1, 1, length, length, dtype=torch.long)
    with vt.apply(llava, "uniform", retention=0.5):
        with pytest.raises(ValueError, match="vt.apply supports 2-D attention masks"):
            llava(**x)


def test_no_synchronize_without_sync_timing(llava, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append(a))
    x = inputs(llava)
    with vt.apply(llava, "uniform", retention=0.5) as h:
        assert h.sync_timing is False  # the default
        with torch.no_grad():
            llava(**x)
        assert h.stats["kept_tokens"] > 0
        # the decision itself, for a CUDA device (no GPU needed to ask)
        h._sync(torch.device("cuda", 0))
        assert calls == []
        h.sync_timing = True
        h._sync(torch.device("cuda", 0))
        assert calls == [(torch.device("cuda", 0),)]
        h._sync(torch.device("cpu"))  # nothing to wait for on the CPU
        with torch.no_grad():
            llava(**x)
        assert len(calls) == 1


@pytest.mark.parametrize("sync", [False, True])
def test_compress_seconds_time_the_compressor(llava, sync):
    x = inputs(llava)
    with vt.apply(llava, "uniform", retention=0.5) as h:
        h.sync_timing = sync
        real = h._compress_unit

        def slow(unit):
            time.sleep(0.05)
            return real(unit)

        h._compress_unit = slow
        t0 = time.perf_counter()
        with torch.no_grad():
            llava(**x)
        whole = time.perf_counter() - t0
    assert 0.05 <= h.stats["compress_seconds"] <= whole
