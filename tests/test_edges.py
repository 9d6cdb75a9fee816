"""Edges of the contract, for every method on bare tokens: the dtype's whole range (scale
invariance, no overflow), argument types (one scalar rule), and what a result is
(picklable, comparable, never on the input's autograd graph)."""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch

import vistoken as vt
from vistoken.core import as_real, budget_for, check_retention

PRE_LLM = vt.methods(stage="tokens")
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def unit_range(shape, seed=0, dtype=torch.float32):
    """Random directions whose entries all have magnitude in [1, 2): x * 2^k stays exact
    (normal, finite) for every k the dtype's exponent range allows."""
    g = torch.Generator().manual_seed(seed)
    mag = 1 + torch.rand(*shape, generator=g, dtype=torch.float64)
    sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return (mag * sign).to(dtype).clamp(-1.99, 1.99)


def extremes(dtype):
    """Powers of two c with x * c normal and finite for x in [1, 2): the smallest, around
    1e-30 and 1e30 where the dtype has them, and the top (x * c just under the max)."""
    fi = torch.finfo(dtype)
    lo = fi.tiny  # the smallest normal number, a power of two
    top = 2.0 ** (math.frexp(fi.max)[1] - 1)  # x * top <= 1.99 * top < max
    cs = [lo, top]
    if fi.max > 1e31:
        cs += [2.0**-100, 2.0**100]  # 7.9e-31, 1.3e30
    return cs


def run(x, method):
    kw = {"retention": 0.5} if method != "scc-tau" else {"tau": 0.3}
    return vt.compress(x, "scc" if method == "scc-tau" else method, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", [*PRE_LLM, "scc-tau"])
def test_scale_invariant_over_the_whole_range(method, dtype):
    # retention 0.5 of 3 frames of 16: a budget above one frame, so that the selections
    # look at the values too (below one frame EVS and DyCoke only spread a grid)
    x = unit_range((3, 16, 8), seed=1, dtype=dtype)
    x[1, 5] = 0  # a zero token stays a zero token at every scale
    ref = run(x, method)
    assert torch.isfinite(ref.tokens).all()
    for c in extremes(dtype):
        out = run(x * c, method)
        assert torch.equal(out.sources, ref.sources), c
        assert torch.equal(out.positions, ref.positions), c
        # powers of two are exact: the means of x * c are the means of x, times c (but
        # near the smallest normal number some means are subnormal, with fewer bits)
        assert torch.isfinite(out.tokens).all(), c
        if c != torch.finfo(dtype).tiny:
            assert torch.equal(out.tokens, ref.tokens * c), c


@pytest.mark.parametrize("method", [*PRE_LLM, "scc-tau"])
def test_decimal_scales_give_the_same_result(method):
    # 1e-30 and 1e30 are not powers of two (x * c rounds), but no cosine is near a tie
    x = unit_range((3, 16, 8), seed=2)
    ref = run(x, method)
    for c in (1e-30, 1e30):
        out = run(x * c, method)
        assert torch.equal(out.sources, ref.sources) and torch.equal(out.positions, ref.positions)
        assert torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", PRE_LLM)
def test_tokens_at_the_dtype_max_give_finite_means(method, dtype):
    big = torch.finfo(dtype).max
    x = torch.full((2, 16, 4), big, dtype=dtype)
    x[:, ::3] = -big
    x[1, 7, 1] = 0.5 * big
    for r in (0.1, 0.5):
        out = vt.compress(x, method, retention=r)
        assert torch.isfinite(out.tokens).all() and out.tokens.dtype == dtype


def test_norm_of_huge_and_tiny_tokens():
    from vistoken.ops import normalize

    x = unit_range((5, 8), seed=3)
    for c in (2.0**-149, 2.0**-140, 2.0**-70, 2.0**70, 2.0**127):  # subnormal to near max
        xs = x * c
        exact = xs.double() / xs.double().norm(dim=-1, keepdim=True)  # no range issue
        got = normalize(xs)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, exact.float(), rtol=1e-6, atol=1e-7)
    zero = normalize(torch.zeros(3, 4))
    assert torch.equal(zero, torch.zeros(3, 4))


# ----------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    "bad, words",
    [
        (torch.empty(2, 16, 4, device="meta"), "meta tensor"),
        (torch.ones(16, 4).to_sparse(), "torch.strided"),
        (torch.ones(16, 4).to_sparse_csr(), "torch.strided"),
    ],
)
def test_meta_and_sparse_tokens_are_type_errors(bad, words):
    with pytest.raises(TypeError, match=words):
        vt.compress(bad, "scc", retention=0.5)


def test_grid_accepts_integers_of_any_kind():
    x = unit_range((2, 12, 3))
    want = vt.compress(x, "pool", retention=0.5, grid=(3, 4))
    for grid in ([3, 4], (np.int64(3), np.int32(4)), (torch.tensor(3), 4), torch.tensor([3, 4]),
                 np.array([3, 4]), torch.Size([3, 4])):
        assert vt.compress(x, "pool", retention=0.5, grid=grid) == want


SAME_AS_TENTH = [
    0.1,
    np.float64(0.1),
    np.float32(0.1),
    np.float16(0.1),
    torch.tensor(0.1),
    torch.tensor([0.1]),
    torch.tensor(0.1, dtype=torch.float16),
    torch.tensor(0.1, dtype=torch.bfloat16),
    torch.tensor(0.1, dtype=torch.float64),
]


@pytest.mark.parametrize("r", SAME_AS_TENTH, ids=repr)
def test_retention_is_the_decimal_whatever_carries_it(r):
    # 0.1 * 6270 = 627 exactly; float32 0.1 is 0.10000000149, which would give 628
    assert check_retention(r) == 0.1
    assert budget_for(r, 6270) == 627
    assert vt.compress(torch.ones(6270, 2), "uniform", retention=r).num_tokens == 627


def test_integer_scalars_are_numbers():
    assert as_real(1, "x") == 1.0 and as_real(np.int8(1), "x") == 1.0
    assert as_real(torch.tensor(1), "x") == 1.0
    assert vt.compress(torch.ones(10, 2), "uniform", retention=np.int64(1)).num_tokens == 10


@pytest.mark.parametrize(
    "bad",
    [True, np.bool_(True), torch.tensor(True), "0.1", 0.1 + 0j, [0.1], np.array([0.1]),
     torch.tensor([0.1, 0.2]), torch.tensor(0.1, device="meta")],
    ids=repr,
)
def test_scalar_rule_refusals(bad):
    with pytest.raises(TypeError, match="retention must be a real number .*not a bool"):
        vt.compress(torch.ones(8, 2), "uniform", retention=bad)
    with pytest.raises(TypeError, match="scc option tau must be a real number"):
        vt.compress(torch.ones(8, 2), "scc", tau=bad)
    with pytest.raises(TypeError, match="vidcom2 option temperature must be a real number"):
        vt.compress(torch.ones(8, 2), "vidcom2", retention=0.5, temperature=bad)


def test_method_scalars_follow_the_same_rule():
    x = unit_range((4, 16, 6), seed=4)
    assert vt.compress(x, "scc", tau=np.float32(0.3)) == vt.compress(x, "scc", tau=0.3)
    assert vt.compress(x, "scc", tau=torch.tensor(0.3)) == vt.compress(x, "scc", tau=0.3)
    for seed in (np.int64(5), torch.tensor(5), torch.tensor([5], dtype=torch.int32)):
        assert vt.compress(x, "random", retention=0.3, seed=seed) == vt.compress(
            x, "random", retention=0.3, seed=5
        )
    for t in (np.float32(0.05), torch.tensor(0.05)):
        a = vt.compress(x, "vidcom2", retention=0.3, temperature=t)
        assert a == vt.compress(x, "vidcom2", retention=0.3, temperature=0.05)
        assert type(a.info["temperature"]) is float
    assert vt.compress(x, "dycoke", retention=0.6, window=np.int32(2)) == vt.compress(
        x, "dycoke", retention=0.6, window=2
    )


def test_integer_options_are_bounded():
    x = unit_range((4, 16, 6), seed=5)
    for method, kw in [("random", {"seed": 2**70}), ("random", {"seed": -1}),
                       ("scc", {"seed": 2**63}), ("dycoke", {"window": 2**63})]:
        with pytest.raises(ValueError, match=rf"{method} option \w+ must be an int in \["):
            vt.compress(x, method, retention=0.5, **kw)
    # the largest window is accepted, and any window past the last frame is one window
    big = vt.compress(x, "dycoke", retention=0.6, window=2**63 - 1)
    assert big.sources.equal(vt.compress(x, "dycoke", retention=0.6, window=4).sources)
    with pytest.raises(TypeError, match="scc option seed must be an integer"):
        vt.compress(x, "scc", tau=0.5, seed=1.0)
    for eps in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"scc option epsilon must be a number in \(0, 1\]"):
            vt.compress(x, "scc", tau=0.5, epsilon=eps)


def test_tiny_epsilon_samples_every_node():
    # ln(n) / epsilon^2 overflows (or epsilon^2 underflows): every node is sampled
    x = unit_range((4, 16, 6), seed=6)
    exact = vt.compress(x, "scc", tau=0.3)
    for eps in (1e-200, 5e-324):
        assert vt.compress(x, "scc", tau=0.3, mode="official", epsilon=eps).sources.equal(
            exact.sources
        )


# ----------------------------------------------------------------------------- results


def results():
    x = unit_range((3, 16, 6), seed=7)
    outs = [vt.compress(x, m, retention=0.3) for m in PRE_LLM]
    outs.append(vt.compress(x, "scc", tau=0.4, mode="official", seed=3))
    outs.append(vt.compress(x, "tome", retention=1.0))  # the identity path
    return outs


def test_results_pickle_copy_save_and_compare():
    for out in results():
        for back in (
            pickle.loads(pickle.dumps(out)),
            copy.deepcopy(out),
            copy.copy(out),
        ):
            assert back == out and back is not out
            assert type(back.info) is type(out.info)
        buf = io.BytesIO()
        torch.save(out, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        assert loaded == out and loaded.num_tokens == out.num_tokens
        with pytest.raises(TypeError):
            loaded.info["method"] = "other"  # still read-only
        assert loaded.info == dict(out.info)


def test_equality_is_exact():
    out = results()[0]
    same = vt.Compressed(out.tokens.clone(), out.sources.clone(), out.positions, dict(out.info))
    assert same == out and not (same != out)
    changed = out.tokens.clone()
    changed[0, 0] = torch.nextafter(changed[0, 0], torch.tensor(np.inf))
    assert vt.Compressed(changed, out.sources, out.positions, out.info) != out
    assert vt.Compressed(out.tokens.double(), out.sources, out.positions, out.info) != out
    assert vt.Compressed(out.tokens, out.sources, out.positions, {**out.info, "x": 1}) != out
    assert out != "not a result"
    with pytest.raises(TypeError):
        hash(out)
    with pytest.raises(AttributeError):
        out.info = {}


@pytest.mark.parametrize("method", PRE_LLM)
def test_outputs_never_carry_the_input_graph(method):
    x = unit_range((3, 16, 6), seed=8).requires_grad_(True)
    for r in (1.0, 0.5):
        out = vt.compress(x, method, retention=r)
        assert not out.tokens.requires_grad and out.tokens.grad_fn is None, r
    assert x.grad is None
