"""VisionZip: the attention probe against eager attention, and the selection's properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers  # noqa: F401  (a test dependency: fail, never skip, without it)
from transformers import SiglipVisionConfig, SiglipVisionModel  # noqa: E402

from vistoken.compressors.visionzip import frame_split, visionzip
from vistoken.core import grid_positions
from vistoken.models.attention import AttentionProbe, resize_stats


def tiny_siglip(attn: str = "sdpa") -> SiglipVisionModel:
    """image 32, patch 4 -> 8x8 = 64 patches, hidden 32, 3 layers, 4 heads (head_dim 8)."""
    cfg = SiglipVisionConfig(
        image_size=32,
        patch_size=4,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        attn_implementation=attn,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SiglipVisionModel(cfg)
    return model.eval()


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def eager_reference(pixels: torch.Tensor, layer: int):
    """received (F, P) and head-mean keys (F, P, Dk) from eager attention weights."""
    model = tiny_siglip("eager")
    out = model(pixels, output_attentions=True, output_hidden_states=True)
    layers = model.encoder.layers
    idx = layer % len(layers)
    weights = out.attentions[idx]  # (F, H, P, P)
    attn = layers[idx].self_attn
    h = layers[idx].layer_norm1(out.hidden_states[idx])  # what self_attn receives
    f, p, _ = h.shape
    k = attn.k_proj(h).view(f, p, attn.num_heads, attn.head_dim).mean(dim=2)
    return weights, k


# ------------------------------------------------------------------------------- probe


@pytest.mark.parametrize("layer", [-2, 0, 2])
def test_probe_matches_eager_attention_under_sdpa(layer):
    pixels = randn(5, 3, 32, 32, seed=3)
    model = tiny_siglip("sdpa")
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad(), AttentionProbe(model, layer=layer) as probe:
        model(pixels)
        received, keys = probe.pop()
    with torch.no_grad():
        weights, ref_keys = eager_reference(pixels, layer)
    assert received.shape == (5, 64) and keys.shape == (5, 64, 8)
    torch.testing.assert_close(received, weights.mean(dim=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(keys, ref_keys, atol=1e-5, rtol=0)
    # attention received, averaged over queries, is a distribution over keys
    torch.testing.assert_close(received.sum(dim=1), torch.ones(5), atol=1e-5, rtol=0)


def test_probe_cls_row_drops_cls_token():
    pixels = randn(2, 3, 32, 32, seed=4)
    model = tiny_siglip("sdpa")
    with torch.no_grad(), AttentionProbe(model, layer=-2, cls=True) as probe:
        model(pixels)
        received, keys = probe.pop()
    with torch.no_grad():
        weights, ref_keys = eager_reference(pixels, -2)
    assert received.shape == (2, 63) and keys.shape == (2, 63, 8)
    torch.testing.assert_close(received, weights[:, :, 0, 1:].mean(dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(keys, ref_keys[:, 1:], atol=1e-5, rtol=0)


def test_probe_blocks_and_calls_concatenate(monkeypatch):
    import vistoken.models.attention as vz

    pixels = randn(6, 3, 32, 32, seed=5)
    model = tiny_siglip()
    with torch.no_grad(), AttentionProbe(model) as probe:
        model(pixels)
        whole = probe.pop()
    # one frame per block (4 heads * 64 * 64 weights each), two forward calls
    monkeypatch.setattr(vz, "BLOCK_ELEMENTS", 4 * 64 * 64)
    with torch.no_grad(), AttentionProbe(model) as probe:
        model(pixels[:4])
        model(pixels[4:])
        parts = probe.pop()
    torch.testing.assert_close(parts[0], whole[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(parts[1], whole[1], atol=1e-6, rtol=0)


def test_probe_pop_clears_and_errors_when_empty():
    model = tiny_siglip()
    probe = AttentionProbe(model)
    with pytest.raises(RuntimeError, match="captured nothing"):
        probe.pop()
    with torch.no_grad():
        model(randn(2, 3, 32, 32))
    assert probe.pop()[0].shape == (2, 64)
    with pytest.raises(RuntimeError, match="captured nothing"):
        probe.pop()
    probe.remove()


def test_probe_removal_leaves_model_unchanged():
    pixels = randn(3, 3, 32, 32, seed=6)
    model = tiny_siglip()
    attn = model.encoder.layers[-2].self_attn
    with torch.no_grad():
        before = model(pixels, output_hidden_states=True)
        # transformers installs its own output-capturing hooks: snapshot them
        hooks = {
            n: (dict(m._forward_hooks), dict(m._forward_pre_hooks))
            for n, m in model.named_modules()
        }
        with AttentionProbe(model) as probe:
            mine = [
                h for h in attn._forward_hooks.values() if getattr(h, "__self__", None) is probe
            ]
            assert len(mine) == 1 and probe.attached
            during = model(pixels, output_hidden_states=True)
        after = model(pixels, output_hidden_states=True)
    assert not probe.attached
    assert torch.equal(before.last_hidden_state, during.last_hidden_state)
    assert torch.equal(before.last_hidden_state, after.last_hidden_state)
    assert len(before.hidden_states) == len(after.hidden_states) == 4
    assert all(
        torch.equal(a, b) for a, b in zip(before.hidden_states, after.hidden_states, strict=True)
    )
    for n, m in model.named_modules():
        assert (dict(m._forward_hooks), dict(m._forward_pre_hooks)) == hooks[n]
        assert not any(getattr(h, "__self__", None) is probe for h in m._forward_hooks.values())
    with torch.no_grad():
        model(pixels)
    assert len(probe._received) == 1  # the one recorded during the `with`; nothing after
    probe.remove()  # idempotent


def test_probe_bad_arguments():
    model = tiny_siglip()
    with pytest.raises(ValueError, match=r"layer must be an int in \[-3, 2\]"):
        AttentionProbe(model, layer=3)
    with pytest.raises(ValueError, match="encoder.layers"):
        AttentionProbe(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------- visionzip


def check_valid(out, t, n, grid):
    m = out.num_tokens
    assert out.sources.dtype == torch.int64 and out.sources.shape == (t * n,)
    assert int(out.sources.min()) >= -1 and int(out.sources.max()) < m
    covered = out.sources[out.sources >= 0]
    assert torch.equal(torch.bincount(covered, minlength=m), out.info["sizes"])
    assert bool((out.info["sizes"] >= 1).all())
    # every anchor maps to its own output, and outputs are in anchor (raster) order
    pos = grid_positions(t, grid, n)
    anchor = out.anchors
    assert torch.equal(out.sources[anchor], torch.arange(m))
    assert torch.equal(pos[anchor], out.positions)
    assert bool((anchor[1:] > anchor[:-1]).all())


@pytest.mark.parametrize("t", [1, 3, 4])
@pytest.mark.parametrize("budget", [1, 2, 3, 5, 7, 17, 40, 63, 64])
def test_exact_budget(t, budget):
    n = 16
    x = randn(t, n, 6, seed=1)
    out = visionzip(x, randn(t, n, seed=2), randn(t, n, 5, seed=3), budget, grid=(4, 4))
    assert out.num_tokens == min(budget, t * n)
    assert int(out.info.get("frame_budgets", torch.tensor([t * n])).sum()) == min(budget, t * n)
    check_valid(out, t, n, (4, 4))
    assert out.tokens.dtype == x.dtype and out.tokens.shape == (min(budget, t * n), 6)
    # every output is the plain mean of its group: the grouping's own reduce of the tokens
    assert torch.equal(out.reduce(x.reshape(t * n, 6)), out.tokens)


def test_frame_split():
    b, d, c = frame_split(10, 4, 54 / 64)
    assert b.tolist() == [3, 3, 2, 2]
    assert d.tolist() == [2, 2, 1, 1] and c.tolist() == [1, 1, 1, 1]
    b, d, c = frame_split(128, 2, 54 / 64)
    assert d.tolist() == [54, 54] and c.tolist() == [10, 10]
    b, d, c = frame_split(2, 5, 0.5)
    assert b.tolist() == [1, 1, 0, 0, 0] and (d + c).tolist() == [1, 1, 0, 0, 0]


def test_budget_below_frames_drops_later_frames():
    t, n = 5, 9
    out = visionzip(randn(t, n, 4), randn(t, n), randn(t, n, 3), 2)
    assert out.num_tokens == 2
    assert out.positions[:, 0].tolist() == [0, 1]
    assert bool((out.sources.view(t, n)[2:] == -1).all())
    # one contextual token per frame: the mean of the whole frame
    x = randn(t, n, 4)
    torch.testing.assert_close(out.tokens, x[:2].mean(dim=1))


def test_identity_when_budget_covers_everything():
    x = randn(2, 9, 4)
    for budget in (18, 100):
        out = visionzip(x, randn(2, 9), randn(2, 9, 3), budget)
        assert torch.equal(out.tokens, x.reshape(18, 4))
        assert torch.equal(out.sources, torch.arange(18))
        assert out.tokens.data_ptr() != x.data_ptr()


def test_dominant_are_the_top_received_tokens():
    t, n = 3, 16
    x = randn(t, n, 4, seed=7)
    # distinct scores per frame, plus ties that must go to the lower index
    received = torch.stack(
        [torch.randperm(n, generator=torch.Generator().manual_seed(s)).float() for s in range(t)]
    )
    received[2] = torch.tensor([5.0] * 8 + [1.0] * 8)
    out = visionzip(x, received, randn(t, n, 3, seed=8), 3 * 8, dominant_share=0.75)
    assert out.info["dominant_counts"].tolist() == [6, 6, 6]
    dom = out.positions[out.info["dominant"]]
    flat = dom[:, 0] * n + dom[:, 1] * 4 + dom[:, 2]
    expected = []
    for f in range(2):
        top = torch.argsort(received[f], descending=True)[:6]
        expected += (f * n + top).tolist()
    expected += list(range(2 * n, 2 * n + 6))  # ties: the lowest indices
    assert sorted(flat.tolist()) == sorted(expected)
    # dominant outputs are their input rows, bit for bit, and cover one token each
    assert torch.equal(out.tokens[out.info["dominant"]], x.reshape(-1, 4)[flat])
    assert bool((out.info["sizes"][out.info["dominant"]] == 1).all())


def test_contextual_is_mean_of_target_and_assigned():
    t, n = 2, 16
    x = randn(t, n, 5, seed=9)
    keys = randn(t, n, 4, seed=10)
    received = randn(t, n, seed=11)
    out = visionzip(x, received, keys, 16, dominant_share=0.5, grid=(4, 4))
    ctx = ~out.info["dominant"]
    assert int(ctx.sum()) == 8 and out.info["contextual_counts"].tolist() == [4, 4]
    flat = x.reshape(-1, 5)
    kn = F.normalize(keys.reshape(-1, 4), dim=1)
    ctx_idx = ctx.nonzero().squeeze(1)
    for o in ctx_idx.tolist():
        members = (out.sources == o).nonzero().squeeze(1)
        torch.testing.assert_close(out.tokens[o], flat[members].mean(dim=0))
        assert out.info["sizes"][o] == members.numel()
    # each merged (non-anchor) token's output is its most cosine-similar target's
    p = out.positions
    anchors = p[:, 0] * n + p[:, 1] * 4 + p[:, 2]
    for f in range(t):
        tg = anchors[ctx_idx][p[ctx_idx, 0] == f]  # this frame's targets, ascending
        members = [
            i
            for i in range(f * n, (f + 1) * n)
            if out.sources[i] >= 0 and i not in anchors.tolist()
        ]
        assert len(members) == n - 8
        for i in members:
            best = tg[(kn[tg] @ kn[i]).argmax()]
            assert out.sources[i] == out.sources[best]
    # targets sit at a uniform stride over the remaining tokens: R = 12, c = 4 -> stride 3
    dom = anchors[out.info["dominant"]].tolist()
    for f in range(t):
        rest = [i for i in range(n) if f * n + i not in dom]
        assert len(rest) == 12
        tg = (anchors[ctx_idx][p[ctx_idx, 0] == f] - f * n).tolist()
        assert tg == rest[0:12:3]


def test_deterministic_and_dtype():
    x = randn(4, 16, 8, seed=12, dtype=torch.bfloat16)
    args = (randn(4, 16, seed=13), randn(4, 16, 6, seed=14), 23)
    a, b = visionzip(x, *args), visionzip(x, *args)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.sources, b.sources)
    assert torch.equal(a.positions, b.positions)
    assert a.tokens.dtype == torch.bfloat16 and a.num_tokens == 23


def test_single_image_and_zero_keys():
    x = randn(16, 4, seed=15)
    out = visionzip(x, randn(16, seed=16), torch.zeros(16, 3), 5)
    assert out.num_tokens == 5 and torch.isfinite(out.tokens).all()
    check_valid(out, 1, 16, (4, 4))


def test_bad_input():
    x, r, k = randn(2, 9, 4), randn(2, 9), randn(2, 9, 3)
    with pytest.raises(ValueError, match=r"received must have shape \(T, N\) = \(2, 9\)"):
        visionzip(x, r[:, :8], k, 4)
    with pytest.raises(ValueError, match=r"keys must have shape \(T, N, Dk\)"):
        visionzip(x, r, k[:1], 4)
    with pytest.raises(ValueError, match=r"budget must be an int in \[1, "):
        visionzip(x, r, k, 0)
    with pytest.raises(TypeError, match="budget"):
        visionzip(x, r, k, 2.5)
    with pytest.raises(ValueError, match=r"dominant_share must be in \[0, 1\]"):
        visionzip(x, r, k, 4, dominant_share=1.5)
    with pytest.raises(TypeError, match="dominant_share"):
        visionzip(x, r, k, 4, dominant_share=True)
    # one scalar rule: NumPy and one-element tensors are numbers too
    a = visionzip(x, r, k, 4, dominant_share=np.float32(0.5))
    b = visionzip(x, r, k, torch.tensor(4), dominant_share=0.5)
    assert torch.equal(a.sources, b.sources)
    big = torch.full((2, 9, 4), torch.finfo(torch.float32).max)
    assert torch.isfinite(visionzip(big, r, k, 4).tokens).all()  # means never overflow
    with pytest.raises(ValueError, match="received must be a finite"):
        visionzip(x, torch.full((2, 9), float("nan")), k, 4)
    with pytest.raises(ValueError, match="grid"):
        visionzip(x, r, k, 4, grid=(2, 2))


# ----------------------------------------------------------------------- resize_stats


def test_resize_stats_matches_interpolate():
    x = torch.arange(2 * 27 * 27 * 3, dtype=torch.float32).reshape(2, 27 * 27, 3).sin()
    y = resize_stats(x, (27, 27), (14, 14))
    img = x.view(2, 27, 27, 3).permute(0, 3, 1, 2)
    ref = F.interpolate(img, size=(14, 14), mode="bilinear").permute(0, 2, 3, 1).reshape(2, 196, 3)
    assert y.shape == (2, 196, 3)
    torch.testing.assert_close(y, ref, atol=0, rtol=0)
    # (T, P) is one channel
    y1 = resize_stats(x[..., 0], (27, 27), (14, 14))
    torch.testing.assert_close(y1, ref[..., 0], atol=0, rtol=0)


def test_resize_stats_known_values_and_identity():
    # a 2x2 -> 1x1 bilinear resize (align_corners=False) samples the centre: the mean
    x = torch.tensor([[[1.0], [2.0], [3.0], [6.0]]])
    assert resize_stats(x, (2, 2), (1, 1)).flatten().tolist() == [3.0]
    z = randn(3, 25, 2)
    assert torch.equal(resize_stats(z, (5, 5), (5, 5)), z)
    with pytest.raises(ValueError, match="patches per frame"):
        resize_stats(z, (4, 4), (2, 2))
