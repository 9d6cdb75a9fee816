"""The merge baselines: PLLaVA adaptive pooling ("pool") and ToMe ("tome")."""

from __future__ import annotations

import pytest
import torch

import vistoken as vt
from vistoken.compressors.pool import choose_grid
from vistoken.core import get_method, grid_positions


def tokens(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def run(method, x, budget, grid=None):
    """Call a method directly with an exact budget (any budget, not only a retention's)."""
    return get_method(method).fn(x, grid=grid, budget=budget)


def check_sources(x, out):
    """Output k is the (size-weighted) mean of the inputs whose sources == k."""
    t, n, d = x.shape
    m = out.num_tokens
    flat = x.reshape(t * n, d).double()
    assert out.sources.shape == (t * n,) and out.sources.dtype == torch.int64
    assert out.sources.min() >= 0 and out.sources.max() < m
    sizes = torch.bincount(out.sources, minlength=m)
    assert sizes.min() >= 1
    assert torch.equal(out.info["sizes"], sizes) and int(sizes.sum()) == t * n
    onehot = torch.zeros(m, t * n, dtype=torch.float64)
    onehot[out.sources, torch.arange(t * n)] = 1.0
    expected = (onehot @ flat) / sizes.double().unsqueeze(1)
    torch.testing.assert_close(out.tokens.double(), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- pool


def test_pool_divisible_grid_is_a_direct_average():
    x = tokens((4, 16, 6), seed=1)
    out = vt.compress(x, "pool", retention=0.125)  # 64 -> 8 = (2, 2, 2)
    assert out.info["grid"] == (2, 2, 2) and out.info["split"] == 0
    blocks = x.reshape(2, 2, 2, 2, 2, 2, 6).permute(0, 2, 4, 1, 3, 5, 6)
    expected = blocks.reshape(8, 8, 6).mean(dim=1)
    torch.testing.assert_close(out.tokens, expected)
    t, h, w = torch.meshgrid(torch.arange(4), torch.arange(4), torch.arange(4), indexing="ij")
    cell = ((t // 2) * 2 + h // 2) * 2 + w // 2
    assert torch.equal(out.sources, cell.flatten())
    corner = torch.stack(
        torch.meshgrid(torch.arange(0, 4, 2), torch.arange(0, 4, 2), torch.arange(0, 4, 2),
                       indexing="ij"), dim=-1
    ).reshape(8, 3)
    assert torch.equal(out.positions, corner)
    check_sources(x, out)


def test_pool_matches_adaptive_avg_pool_on_divisible_grid():
    x = tokens((6, 36, 4), seed=2)
    out = run("pool", x, 3 * 3 * 3, grid=(6, 6))
    assert out.info["grid"] == (3, 3, 3)
    ref = torch.nn.functional.adaptive_avg_pool3d(
        x.reshape(6, 6, 6, 4).permute(3, 0, 1, 2), (3, 3, 3)
    )
    torch.testing.assert_close(out.tokens, ref.permute(1, 2, 3, 0).reshape(27, 4))


@pytest.mark.parametrize("shape, grid", [((1, 16, 3), (4, 4)), ((3, 36, 4), (6, 6)),
                                         ((4, 49, 3), (7, 7)), ((2, 12, 3), (3, 4)),
                                         ((5, 10, 2), (2, 5))])
def test_pool_budget_is_exact_for_awkward_budgets(shape, grid):
    x = tokens(shape, seed=shape[0])
    t, n, _ = shape
    total = t * n
    primes = [p for p in range(2, total) if all(p % q for q in range(2, p))]
    for budget in sorted({1, 2, total - 1, total, *primes[-4:], *primes[:3]}):
        out = run("pool", x, budget, grid=grid)
        assert out.num_tokens == budget
        gt, gh, gw = out.info["grid"]
        assert gt <= t and gh <= grid[0] and gw <= grid[1]
        assert gt * gh * gw + out.info["split"] == budget
        check_sources(x, out)
        pos = grid_positions(t, grid, n)
        # the anchor is the first member of each output token
        first = torch.full((budget,), total).scatter_reduce(
            0, out.sources, torch.arange(total), reduce="amin"
        )
        assert torch.equal(out.positions, pos[first])


def test_pool_cells_are_boxes():
    # every output token covers a full box of (t, h, w), even after splits
    x = tokens((3, 36, 2))
    out = run("pool", x, 53, grid=(6, 6))
    assert out.info["split"] > 0
    pos = grid_positions(3, (6, 6), 36)
    for k in range(53):
        p = pos[out.sources == k]
        lo, hi = p.min(0).values, p.max(0).values
        assert p.shape[0] == int((hi - lo + 1).prod())


def test_pool_grid_rule():
    assert choose_grid((4, 4, 4), 8) == (2, 2, 2)
    assert choose_grid((1, 2, 8), 4) == (1, 1, 4)  # keeps the 1:4 aspect
    assert choose_grid((16, 24, 24), 16 * 24 * 24 // 4) == (9, 16, 16)
    assert choose_grid((4, 24, 24), 92) == (1, 10, 9)  # not the exact (2, 2, 23)
    assert choose_grid((1, 7, 7), 47) == (1, 7, 6)  # 42 cells + 5 splits


def test_pool_dtype_and_zero_tokens():
    x = torch.zeros(2, 16, 4, dtype=torch.bfloat16)
    out = vt.compress(x, "pool", retention=0.3)
    assert out.tokens.dtype == torch.bfloat16 and torch.isfinite(out.tokens).all()


# ----------------------------------------------------------------------------- tome


def test_tome_merges_the_most_similar_pair_first():
    x = tokens((1, 16, 64), seed=4)
    x[0, 4] = x[0, 7] + 1e-3  # 4 is in A (even), 7 in B (odd)
    total = 16
    out = run("tome", x, total - 1, grid=(4, 4))
    keep = [i for i in range(total) if i != 4]
    expected = x[0, keep].clone()
    expected[keep.index(7)] = (x[0, 4] + x[0, 7]) / 2
    torch.testing.assert_close(out.tokens, expected)
    src = torch.tensor([keep.index(i) if i != 4 else keep.index(7) for i in range(total)])
    assert torch.equal(out.sources, src)
    assert out.positions[keep.index(7)].tolist() == [0, 1, 3]  # the surviving B token
    check_sources(x, out)


def test_tome_size_weighted_average():
    d = 8
    e = torch.eye(d)
    x = torch.stack([
        e[0],                      # 0 p    (A)
        2 * (e[0] + 0.01 * e[1]),  # 1 q    (B)
        e[4],                      # 2 u    (A)
        4 * (e[0] + 0.05 * e[2]),  # 3 s    (B)
        0.5 * (e[4] + 0.02 * e[6]),  # 4 u'' (A)
        3 * (e[4] + 0.01 * e[5]),  # 5 u'   (B)
    ]).unsqueeze(0)
    # round 1 merges every A: 0 -> 1, 2 -> 5, 4 -> 5; round 2: {p, q} -> s
    out = run("tome", x, 2)
    assert out.info["rounds"] == 2
    flat = x[0]
    torch.testing.assert_close(out.tokens[0], flat[[0, 1, 3]].mean(0))
    torch.testing.assert_close(out.tokens[1], flat[[2, 4, 5]].mean(0))
    unweighted = ((flat[0] + flat[1]) / 2 + flat[3]) / 2
    assert not torch.allclose(out.tokens[0], unweighted)
    assert out.sources.tolist() == [0, 0, 1, 0, 1, 1]
    assert out.info["sizes"].tolist() == [3, 3] and int(out.info["sizes"].sum()) == 6
    assert out.positions.tolist() == [[0, 0, 3], [0, 0, 5]]  # anchors: s and u'


@pytest.mark.parametrize("shape", [(1, 16, 8), (3, 36, 5), (4, 49, 12)])
def test_tome_sources_are_consistent(shape):
    x = tokens(shape, seed=5)
    total = shape[0] * shape[1]
    for budget in (1, 2, 7, total // 3, total - 1):
        out = run("tome", x, budget)
        assert out.num_tokens == budget
        check_sources(x, out)


def test_pool_sources_are_consistent_via_compress():
    x = tokens((4, 49, 12), seed=6)
    for r in (0.02, 0.1, 0.3):
        check_sources(x, vt.compress(x, "pool", retention=r))


def test_tome_dtype_and_zero_tokens():
    x = torch.zeros(2, 16, 4, dtype=torch.float16)
    x[1, 3] = 1.0
    out = vt.compress(x, "tome", retention=0.3)
    assert out.tokens.dtype == torch.float16 and torch.isfinite(out.tokens).all()
    assert out.num_tokens == 10


@pytest.mark.parametrize("method", ["pool", "tome"])
def test_budget_is_required(method):
    with pytest.raises(ValueError, match=f"{method} needs retention"):
        vt.compress(tokens((2, 16, 4)), method)
