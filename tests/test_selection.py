"""The selection baselines: each method's defining property on constructed inputs."""

from __future__ import annotations

import pytest
import torch

import vistoken as vt
from vistoken.compressors._select import spread
from vistoken.compressors.divprune import divprune_indices
from vistoken.compressors.vidcom2 import frame_budgets
from vistoken.core import budget_for, get_method, grid_positions
from vistoken.ops import normalize

SELECT = ["random", "uniform", "evs", "divprune", "vidcom2", "dycoke"]


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def kept_frames(out, t):
    return torch.bincount(out.positions[:, 0], minlength=t)


@pytest.mark.parametrize("method", SELECT)
def test_registered_as_select(method):
    assert get_method(method).kind == "select"


@pytest.mark.parametrize("method", SELECT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kept_rows_are_input_rows_in_order(method, dtype):
    x = randn(5, 16, 6, seed=1, dtype=dtype)
    flat = x.reshape(80, 6)
    out = vt.compress(x, method, retention=0.3)
    kept = (out.sources >= 0).nonzero().squeeze(1)
    assert out.num_tokens == 24 == kept.numel()
    assert torch.equal(out.sources[kept], torch.arange(24))  # ascending original order
    assert torch.equal(out.tokens, flat[kept])  # bit-identical rows
    pos = grid_positions(5, (4, 4), 16)
    assert torch.equal(out.positions, pos[kept])


@pytest.mark.parametrize("method", SELECT)
def test_needs_retention(method):
    with pytest.raises(ValueError, match=f"{method} needs retention="):
        vt.compress(randn(2, 4, 3), method)


@pytest.mark.parametrize("method", SELECT)
def test_zero_tokens_and_duplicates_no_nan(method):
    x = torch.zeros(3, 9, 4)
    x[1, :3] = 1.0
    out = vt.compress(x, method, retention=0.5)
    assert out.num_tokens == 14 and torch.isfinite(out.tokens).all()
    assert int((out.sources >= 0).sum()) == 14


@pytest.mark.parametrize("method", SELECT)
@pytest.mark.parametrize("r", [0.01, 0.05, 0.34, 0.99])
def test_single_frame_and_small_budgets(method, r):
    x = randn(1, 49, 5, seed=2)
    out = vt.compress(x, method, retention=r)
    assert out.num_tokens == budget_for(r, 49)
    x = randn(6, 4, 5, seed=2)  # budget below one frame on a short clip
    out = vt.compress(x, method, retention=0.1)
    assert out.num_tokens == 3


@pytest.mark.parametrize(
    "method, option, value",
    [
        ("random", "seed", -1),
        ("random", "seed", 2**63),
        ("vidcom2", "temperature", 0),
        ("vidcom2", "temperature", -0.1),
        ("vidcom2", "temperature", float("inf")),
        ("dycoke", "window", 0),
        ("dycoke", "window", 2**70),
    ],
)
def test_bad_options(method, option, value):
    with pytest.raises(ValueError, match=f"{method} option {option} must be"):
        vt.compress(randn(2, 4, 3), method, retention=0.5, **{option: value})


@pytest.mark.parametrize(
    "method, option, value",
    [
        ("random", "seed", 1.5),
        ("random", "seed", True),
        ("random", "seed", "0"),
        ("vidcom2", "temperature", "hot"),
        ("vidcom2", "temperature", True),
        ("dycoke", "window", 2.0),
        ("dycoke", "window", None),
    ],
)
def test_options_of_the_wrong_type(method, option, value):
    with pytest.raises(TypeError, match=f"{method} option {option} must be"):
        vt.compress(randn(2, 4, 3), method, retention=0.5, **{option: value})


# random ---------------------------------------------------------------------------------


def test_random_seeds():
    x = randn(4, 25, 3)
    a = vt.compress(x, "random", retention=0.2, seed=7)
    b = vt.compress(x, "random", retention=0.2, seed=7)
    c = vt.compress(x, "random", retention=0.2, seed=8)
    assert torch.equal(a.sources, b.sources)
    assert not torch.equal(a.sources, c.sources)
    state = torch.random.get_rng_state()
    vt.compress(x, "random", retention=0.2)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_random_is_uniform_over_frames():
    x = randn(4, 25, 3)
    counts = sum(kept_frames(vt.compress(x, "random", retention=0.2, seed=s), 4)
                 for s in range(200))
    # 200 draws of 20 tokens: 1000 expected per frame, sd ~ 25
    assert (counts - 1000).abs().max() < 120


# uniform --------------------------------------------------------------------------------


@pytest.mark.parametrize("t, n, r", [(4, 196, 0.25), (7, 49, 0.13), (3, 36, 0.9), (5, 6, 0.5)])
def test_uniform_even_over_frames(t, n, r):
    out = vt.compress(randn(t, n, 3), "uniform", retention=r)
    c = kept_frames(out, t)
    assert c.sum() == out.num_tokens and c.max() - c.min() <= 1


def test_uniform_strided_subgrid():
    out = vt.compress(randn(2, 196, 3), "uniform", retention=0.25)
    odd = torch.arange(1, 14, 2)
    assert set(out.positions[:, 1].tolist()) == set(odd.tolist())
    assert set(out.positions[:, 2].tolist()) == set(odd.tolist())


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 10, 13, 24, 48, 49])
def test_spread_covers_the_grid(k):
    idx = spread(k, (7, 7), 49, "cpu")
    assert idx.numel() == k and torch.equal(idx, idx.unique())
    rows, cols = idx // 7, idx % 7
    if k >= 4:  # not a raster prefix: reaches the lower half and both sides
        assert rows.max() >= 4 and cols.min() <= 2 and cols.max() >= 4
    assert rows.float().mean().sub(3).abs() <= 1.5
    tall = spread(min(k, 12), (12, 1), 12, "cpu")
    assert torch.equal(tall, tall.unique())


# evs ------------------------------------------------------------------------------------


def test_evs_drops_temporal_duplicates_first_and_keeps_frame_zero():
    x = randn(4, 16, 8, seed=3)
    x[1] = x[0]  # frame 1 a duplicate of frame 0
    x[3, :8] = x[2, :8]  # half of frame 3 static
    out = vt.compress(x, "evs", retention=0.625)  # 40 = 64 - 16 - 8 duplicates
    kept = out.sources >= 0
    assert kept[:16].all()  # frame 0 whole
    assert not kept[16:32].any() and not kept[48:56].any()
    assert kept[32:48].all() and kept[56:].all()


def test_evs_budget_below_one_frame_spreads_frame_zero():
    out = vt.compress(randn(3, 49, 4), "evs", retention=0.05)  # 8 < 49
    assert (out.positions[:, 0] == 0).all()
    assert out.positions[:, 1].max() >= 5  # not the top rows only


# divprune -------------------------------------------------------------------------------


def test_divprune_first_picks_hit_every_cluster():
    g = torch.Generator().manual_seed(4)
    k, d = 6, 16
    protos = torch.linalg.qr(torch.randn(d, k, generator=g))[0].T  # orthogonal directions
    assign = torch.randint(0, k, (3, 40), generator=g)
    assign[0, :k] = torch.arange(k)
    x = protos[assign] + 0.05 * torch.randn(3, 40, d, generator=g)
    picks = divprune_indices(normalize(x.reshape(120, d)), k)
    assert sorted(assign.flatten()[picks].tolist()) == list(range(k))
    out = vt.compress(x, "divprune", retention=k / 120)
    assert sorted(assign.flatten()[out.sources >= 0].tolist()) == list(range(k))


def test_divprune_first_pick_is_most_isolated():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [0.0, 1.0]])
    picks = divprune_indices(normalize(x), 2)
    assert picks[0].item() == 3  # the outlier
    assert picks[1].item() == 2  # farthest from it


def test_divprune_never_repeats_on_duplicates():
    x = torch.ones(2, 9, 3)
    out = vt.compress(x, "divprune", retention=0.5)
    assert out.num_tokens == 9 and int((out.sources >= 0).sum()) == 9


# vidcom2 --------------------------------------------------------------------------------


def test_vidcom2_unique_frame_gets_more_tokens():
    # one static scene (a shared direction plus per-token detail) and one different frame
    scene = 2.0 * randn(1, 1, 8, seed=4) + randn(1, 36, 8, seed=5)
    x = scene.repeat(5, 1, 1) + 0.01 * randn(5, 36, 8, seed=6)
    x[3] = 2.0 * randn(1, 8, seed=8) + randn(36, 8, seed=7)
    out = vt.compress(x, "vidcom2", retention=0.2)
    c = kept_frames(out, 5)
    assert c.sum() == 36 and c[3] > c[[0, 1, 2, 4]].max()
    assert torch.equal(out.info["frame_counts"], c)


def test_vidcom2_budgets_settle_exactly_and_cap():
    u = torch.tensor([0.0, 5.0, 0.0, 0.1])
    for b in (1, 4, 7, 33, 39, 40):
        k = frame_budgets(u, b, 10, 0.01)
        assert int(k.sum()) == b and (k <= 10).all() and (k >= 0).all()
    assert frame_budgets(u, 39, 10, 0.01).tolist()[1] == 10  # capped frame
    assert frame_budgets(torch.zeros(4), 6, 10, 0.1).tolist() == [2, 2, 1, 1]  # ties: earlier


def test_vidcom2_keeps_outlier_tokens():
    x = torch.ones(1, 16, 4) + 0.01 * randn(1, 16, 4, seed=9)
    x[0, 5] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    x[0, 11] = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    out = vt.compress(x, "vidcom2", retention=2 / 16)
    assert (out.sources >= 0).nonzero().squeeze(1).tolist() == [5, 11]


# dycoke ---------------------------------------------------------------------------------


def test_dycoke_keeps_anchors_and_drops_duplicates_first():
    x = randn(8, 16, 6, seed=10)
    x[1, :10] = x[0, :10]  # offset 1 vs anchor
    x[2, :10] = x[0, :10] * 3.0  # offset 2 vs anchor (cosine 1)
    x[3, :10] = x[2, :10]  # offset 3 vs offset 2
    x[6, 4:] = x[4, 4:]
    x[7, 4:] = x[6, 4:]
    dup = 30 + 12 + 12
    out = vt.compress(x, "dycoke", retention=(128 - dup) / 128)
    kept = (out.sources >= 0).reshape(8, 16)
    assert kept[0].all() and kept[4].all()  # window anchors
    assert not kept[1, :10].any() and not kept[2, :10].any() and not kept[3, :10].any()
    assert not kept[6, 4:].any() and not kept[7, 4:].any()
    assert kept[5].all()


def test_dycoke_budget_below_anchors_keeps_first_frame():
    x = randn(8, 16, 6, seed=11)
    out = vt.compress(x, "dycoke", retention=20 / 128)
    kept = (out.sources >= 0).reshape(8, 16)
    assert kept[0].all() and kept[4].sum() == 4 and kept.sum() == 20


def test_dycoke_window_option():
    x = randn(6, 9, 4, seed=12)
    out = vt.compress(x, "dycoke", retention=0.5, window=2)
    kept = (out.sources >= 0).reshape(6, 9)
    assert kept[0].all() and kept[2].all()  # anchors of windows of 2 come before the rest
    assert out.info["window"] == 2
