"""FastV (in-LLM visual token pruning) on tiny random-weight Qwen2 models."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from vistoken.core import budget_for  # noqa: E402
from vistoken.models.fastv import FastV  # noqa: E402

VOCAB = 128
N_LAYERS = 4


def build_model(impl: str = "sdpa", seed: int = 0) -> Qwen2ForCausalLM:
    """A tiny Qwen2 (hidden 64, 4 layers, 4 heads, 2 kv heads), weights from a fixed seed."""
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        attn_implementation=impl,
    )
    with torch.random.fork_rng():  # no leak into the global RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
        # Spread the random init so attention is far from uniform and scores are distinct.
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                    proj.weight.mul_(8.0)
    return model.eval()


def sample(
    length: int, spans: list[tuple[int, int]], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L,) token ids and (L,) bool visual mask with the given [start, end) visual spans."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (length,), generator=gen)
    visual = torch.zeros(length, dtype=torch.bool)
    for a, b in spans:
        visual[a:b] = True
    return ids, visual


def left_pad(
    items: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch (ids, visual) pairs with left padding: ids (B, L), attention mask, visual."""
    length = max(ids.shape[0] for ids, _ in items)
    b = len(items)
    ids = torch.zeros(b, length, dtype=torch.long)
    mask = torch.zeros(b, length, dtype=torch.long)
    visual = torch.zeros(b, length, dtype=torch.bool)
    for r, (x, v) in enumerate(items):
        n = x.shape[0]
        ids[r, length - n :], mask[r, length - n :], visual[r, length - n :] = x, 1, v
    return ids, mask, visual


def two_samples() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two prompts of different lengths and visual counts, left padded."""
    return left_pad([sample(24, [(3, 19)], seed=1), sample(19, [(2, 8), (10, 14)], seed=2)])


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as generate() derives them from a left-padded attention mask."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def greedy(model, fastv: FastV, ids, mask, visual, steps: int):
    """generate() with the cache; returns (new tokens (B, steps), per-step logits (B, steps, V))."""
    fastv.prepare(visual)
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        use_cache=True,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    return out.sequences[:, ids.shape[1] :], torch.stack(out.logits, dim=1)


def hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


# ------------------------------------------------------------------ 1. sdpa == eager


@pytest.mark.parametrize("layer", [1, 2, 3])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_and_eager_agree_and_scores_match_eager_weights(layer: int, padded: bool) -> None:
    if padded:
        ids, mask, visual = two_samples()
    else:
        x, v = sample(24, [(4, 20)], seed=3)
        ids, mask, visual = x[None], None, v[None]
    keeps, scores = {}, {}
    for impl in ("sdpa", "eager"):
        model = build_model(impl)
        fastv = FastV(model.model, retention=0.3, layer=layer)
        fastv.prepare(visual)
        with torch.no_grad():
            out = model(ids, attention_mask=mask, output_attentions=impl == "eager")
        keeps[impl], scores[impl] = fastv.last_keep, fastv.last_scores
        if impl == "eager":
            weights = out.attentions[layer - 1][:, :, -1, :].mean(dim=1)  # (B, L)
    assert keeps["sdpa"] is not None
    assert torch.equal(keeps["sdpa"], keeps["eager"])
    torch.testing.assert_close(scores["eager"], weights, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores["sdpa"], weights, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ 2. exact budget


@pytest.mark.parametrize("retention", [0.05, 0.25, 1 / 3, 0.5, 0.9])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_exact_budget_and_fewer_tokens_after_layer(retention: float, impl: str) -> None:
    layer = 2
    model = build_model(impl)
    ids, mask, visual = two_samples()
    b, length = ids.shape
    fastv = FastV(model.model, retention=retention, layer=layer)
    seen: dict[int, list[int]] = {}
    inputs: dict[int, dict] = {}

    def record(i: int, args: tuple, kwargs: dict) -> None:
        seen.setdefault(i, []).append(args[0].shape[1])
        inputs[i] = kwargs

    handles = [
        blk.register_forward_pre_hook(lambda m, a, kw, i=i: record(i, a, kw), with_kwargs=True)
        for i, blk in enumerate(model.model.layers)
    ]
    fastv.prepare(visual)
    pos = position_ids(mask)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, position_ids=pos, use_cache=True)
    for h in handles:
        h.remove()

    keep = fastv.last_keep
    assert keep is not None and keep.shape[0] == b
    real = mask.bool()
    kept_counts = []
    for r in range(b):
        idx = keep[r][keep[r] >= 0]
        kept_counts.append(idx.numel())
        assert torch.all(idx[1:] > idx[:-1]), "kept positions must stay in original order"
        assert torch.all(keep[r][: keep.shape[1] - idx.numel()] == -1), "index is left padded"
        kept = torch.zeros(length, dtype=torch.bool)
        kept[idx] = True
        cand = visual[r] & real[r]
        n_vis = int(cand.sum())
        assert int((kept & cand).sum()) == budget_for(retention, n_vis)
        assert torch.all(kept[~cand]), "every text (and padding) position is kept"
        # The kept visual tokens are the top scores, ties to the lower index.
        s = fastv.last_scores[r]
        order = sorted(torch.nonzero(cand).flatten().tolist(), key=lambda j: (-s[j].item(), j))
        expect = sorted(order[: budget_for(retention, n_vis)])
        assert torch.nonzero(kept & cand).flatten().tolist() == expect

    lk = max(kept_counts)
    assert keep.shape[1] == lk < length
    for i in range(N_LAYERS):
        want = length if i < layer else lk
        assert seen[i] == [want], f"layer {i} saw {seen[i]}, expected {want}"
        assert out.past_key_values.layers[i].keys.shape[-2] == want
    assert out.logits.shape[1] == lk
    # Layers >= K get the kept positions' own position ids and rotary embeddings.
    # (Columns where last_keep is -1 only pad the index; they are masked out.)
    valid, index = keep >= 0, keep.clamp(min=0)
    rows = torch.arange(b)[:, None].expand_as(index)
    cos_full, sin_full = inputs[0]["position_embeddings"]
    for i in range(layer, N_LAYERS):
        kw = inputs[i]
        assert torch.equal(kw["position_ids"][valid], pos[rows, index][valid])
        cos, sin = kw["position_embeddings"]
        assert torch.equal(cos[valid], cos_full[rows, index][valid])
        assert torch.equal(sin[valid], sin_full[rows, index][valid])
        assert kw["attention_mask"].shape[-2:] == (lk, lk)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_pruned_forward_equals_manual_reference(layer: int) -> None:
    """Logits equal running layers >= K by hand on the kept tokens at their original positions."""
    model = build_model("sdpa")
    x, v = sample(26, [(3, 21)], seed=7)
    ids, visual = x[None], v[None]
    fastv = FastV(model.model, retention=0.25, layer=layer)
    fastv.prepare(visual)
    with torch.no_grad():
        got = model(ids).logits
    keep = fastv.last_keep[0]
    fastv.remove()

    inner = model.model
    with torch.no_grad():
        h = inner.embed_tokens(ids)
        pos = torch.arange(ids.shape[1])[None]
        for blk in inner.layers[:layer]:
            pe = inner.rotary_emb(h, pos)
            h = blk(h, attention_mask=None, position_embeddings=pe, position_ids=pos)
        h, pos = h[:, keep], pos[:, keep]
        causal = torch.ones(keep.numel(), keep.numel(), dtype=torch.bool).tril()[None, None]
        for blk in inner.layers[layer:]:
            pe = inner.rotary_emb(h, pos)
            h = blk(h, attention_mask=causal, position_embeddings=pe, position_ids=pos)
        want = model.lm_head(inner.norm(h))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ 3. identity and removal


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_retention_one_is_identity_and_remove_restores_model(impl: str) -> None:
    model = build_model(impl)
    ids, mask, visual = two_samples()
    n_hooks = hook_count(model)
    attrs = {name: set(vars(m)) for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(ids, attention_mask=mask).logits
        single = model(ids[:1]).logits  # no padding: the mask is None under sdpa

    full = FastV(model.model, retention=1.0, layer=2)
    with torch.no_grad():
        full.prepare(visual)
        assert torch.equal(model(ids, attention_mask=mask).logits, before)
        full.prepare(visual[:1])
        assert torch.equal(model(ids[:1]).logits, single)
    full.remove()

    pruned = FastV(model.model, retention=0.25, layer=2)
    assert hook_count(model) > n_hooks
    pruned.prepare(visual)
    with torch.no_grad():
        changed = model(ids, attention_mask=mask).logits
    assert changed.shape[1] < before.shape[1]
    pruned.remove()
    pruned.remove()  # idempotent

    assert hook_count(model) == n_hooks == 0
    for m in model.modules():
        assert not m._forward_pre_hooks_with_kwargs and not m._forward_hooks_with_kwargs
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attrs
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, before)
        assert torch.equal(model(ids[:1]).logits, single)


def test_retention_one_generate_matches_unhooked() -> None:
    model = build_model("sdpa")
    ids, mask, visual = two_samples()
    with torch.no_grad():
        ref = model.generate(
            ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0
        )
    fastv = FastV(model.model, retention=1.0, layer=1)
    with torch.no_grad():
        tokens, _ = greedy(model, fastv, ids, mask, visual, steps=5)
    assert torch.equal(tokens, ref[:, ids.shape[1] :])


def test_without_prepare_is_a_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    model = build_model("sdpa")
    ids, mask, _ = two_samples()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
    fastv = FastV(model.model, retention=0.2, layer=2)
    with caplog.at_level(logging.DEBUG, logger="vistoken.models.fastv"), torch.no_grad():
        out = model(ids, attention_mask=mask).logits
    assert torch.equal(out, ref)
    assert fastv.last_keep is None
    assert "without prepare" in caplog.text
    fastv.remove()


# ------------------------------------------------------------------ 4. KV-cache decoding


class PinnedFastV(FastV):
    """FastV whose visual selection is pinned to a given prefill's (B, L0) keep mask.

    FastV scores with the LAST query, so a no-cache recomputation would re-select with each
    new token; pinning the selection checks that cached decoding (sliced caches, masks and
    positions) equals running the full sequence through the same pruned layers.
    """

    def __init__(self, *args, pinned: torch.Tensor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pinned = pinned

    def _select(self, scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        extra = scores.shape[1] - self.pinned.shape[1]
        tail = torch.ones(scores.shape[0], extra, dtype=torch.bool)
        return torch.cat([self.pinned, tail], dim=1)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [False, True])
def test_generate_with_cache_equals_full_recompute(impl: str, padded: bool) -> None:
    steps, layer = 6, 2
    model = build_model(impl)
    if padded:
        ids, mask, visual = two_samples()
    else:
        x, v = sample(22, [(2, 18)], seed=5)
        ids, mask, visual = x[None], torch.ones(1, 22, dtype=torch.long), v[None]
    b, length = ids.shape
    fastv = FastV(model.model, retention=0.25, layer=layer)
    with torch.no_grad():
        tokens, logits = greedy(model, fastv, ids, mask, visual, steps)
    keep = fastv.last_keep
    assert keep is not None
    pinned = torch.zeros(b, length, dtype=torch.bool)
    for r in range(b):
        pinned[r, keep[r][keep[r] >= 0]] = True
    fastv.remove()

    ref = PinnedFastV(model.model, retention=0.25, layer=layer, pinned=pinned)
    seq, am = ids, mask
    for t in range(steps):
        ref.prepare(torch.cat([visual, torch.zeros(b, t, dtype=torch.bool)], dim=1))
        with torch.no_grad():
            out = model(seq, attention_mask=am, position_ids=position_ids(am), use_cache=False)
        last = out.logits[:, -1]
        torch.testing.assert_close(last, logits[:, t], atol=1e-4, rtol=0)
        nxt = last.argmax(-1, keepdim=True)
        assert torch.equal(nxt, tokens[:, t : t + 1]), f"step {t} differs"
        seq = torch.cat([seq, nxt], dim=1)
        am = torch.cat([am, torch.ones(b, 1, dtype=am.dtype)], dim=1)
    ref.remove()


def test_unpinned_first_step_matches_plain_forward() -> None:
    """The first generated token of generate() is that of a plain pruned forward."""
    model = build_model("sdpa")
    ids, mask, visual = two_samples()
    fastv = FastV(model.model, retention=0.25, layer=2)
    fastv.prepare(visual)
    with torch.no_grad():
        first = model(ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
        tokens, logits = greedy(model, fastv, ids, mask, visual, steps=3)
    torch.testing.assert_close(logits[:, 0], first, atol=1e-5, rtol=0)
    assert torch.equal(tokens[:, 0], first.argmax(-1))


# ------------------------------------------------------------------ 5. batch parity


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("retention", [0.1, 0.5])
def test_batch_with_left_padding_equals_each_sample_alone(impl: str, retention: float) -> None:
    steps = 6
    model = build_model(impl)
    items = [sample(25, [(3, 21)], seed=11), sample(17, [(1, 5), (7, 12)], seed=12)]
    ids, mask, visual = left_pad(items)
    fastv = FastV(model.model, retention=retention, layer=2)
    with torch.no_grad():
        tokens, logits = greedy(model, fastv, ids, mask, visual, steps)
    batch_keep = fastv.last_keep
    assert batch_keep is not None
    for r, (x, v) in enumerate(items):
        with torch.no_grad():
            alone, alone_logits = greedy(
                model, fastv, x[None], torch.ones(1, x.shape[0], dtype=torch.long), v[None], steps
            )
        assert torch.equal(tokens[r], alone[0])
        torch.testing.assert_close(logits[r], alone_logits[0], atol=1e-4, rtol=0)
        # Same visual selection, shifted by the row's left padding.
        pad = ids.shape[1] - x.shape[0]
        kept = batch_keep[r][batch_keep[r] >= pad] - pad
        assert torch.equal(kept[v[kept]], fastv.last_keep[0][v[fastv.last_keep[0]]])
    fastv.remove()


# ------------------------------------------------------------------ 6. bad input


@pytest.mark.parametrize("retention", [0.0, -0.1, 1.5, float("nan")])
def test_bad_retention(retention: float) -> None:
    model = build_model()
    with pytest.raises(ValueError, match="retention"):
        FastV(model.model, retention=retention)
    assert hook_count(model) == 0


@pytest.mark.parametrize("layer", [0, -1, N_LAYERS, N_LAYERS + 3])
def test_bad_layer(layer: int) -> None:
    model = build_model()
    with pytest.raises(ValueError, match="layer"):
        FastV(model.model, retention=0.5, layer=layer)
    assert hook_count(model) == 0


def test_bad_text_model() -> None:
    with pytest.raises(ValueError, match="layers"):
        FastV(torch.nn.Linear(2, 2), retention=0.5)


@pytest.mark.parametrize("shape", [(5,), (1, 2, 5), (0, 5), (1, 0)])
def test_bad_visual_mask_shape(shape: tuple[int, ...]) -> None:
    fastv = FastV(build_model().model, retention=0.5)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        fastv.prepare(torch.zeros(shape, dtype=torch.bool))


def test_bad_visual_mask_dtype_and_mismatch() -> None:
    model = build_model()
    fastv = FastV(model.model, retention=0.5)
    with pytest.raises(ValueError, match="bool"):
        fastv.prepare(torch.zeros(1, 5))
    with pytest.raises(TypeError, match="visual_mask"):
        fastv.prepare([[True, False]])  # type: ignore[arg-type]
    ids, mask, visual = two_samples()
    fastv.prepare(visual[:, 1:])
    with pytest.raises(ValueError, match="sequence length"), torch.no_grad():
        model(ids, attention_mask=mask)


def test_scores_with_qk_norm_and_explicit_head_dim() -> None:
    """Qwen3-style attention (q_norm/k_norm, head_dim != hidden/heads) scores like eager."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=VOCAB,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(config).eval()
    x, v = sample(20, [(2, 15)], seed=4)
    fastv = FastV(model.model, retention=0.3, layer=2)
    fastv.prepare(v[None])
    with torch.no_grad():
        out = model(x[None], output_attentions=True)
    weights = out.attentions[1][:, :, -1, :].mean(dim=1)
    torch.testing.assert_close(fastv.last_scores, weights, atol=1e-5, rtol=0)
    assert fastv.last_keep.shape == (1, 20 - 13 + budget_for(0.3, 13))
