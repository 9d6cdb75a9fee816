"""The public contract, checked for every registered method."""

from __future__ import annotations

import math

import pytest
import torch

import vistoken as vt
from vistoken.core import budget_for, get_method, grid_positions

SHAPES = [(1, 16, 8), (4, 49, 12), (3, 36, 5)]
# methods that run on bare tokens (fastv and visionzip act inside a model: vt.apply)
PRE_LLM = vt.methods(stage="tokens")


def tokens(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def test_methods_lists_registered_names():
    names = vt.methods()
    assert "scc" in names and names == sorted(names)


@pytest.mark.parametrize("method", PRE_LLM)
@pytest.mark.parametrize("shape", SHAPES)
def test_contract(method, shape):
    x = tokens(shape, seed=shape[1])
    before = x.clone()
    t, n, d = shape
    for r in (0.02, 0.1, 0.3, 0.5, 0.9):
        out = vt.compress(x, method, retention=r)
        m = max(1, math.ceil(r * t * n - 1e-9))
        assert out.num_tokens == m
        assert out.tokens.shape == (m, d) and out.tokens.dtype == x.dtype
        assert out.tokens.device == x.device
        assert out.sources.shape == (t * n,) and out.sources.dtype == torch.int64
        assert out.sources.min() >= -1 and out.sources.max() < m
        # every output token stands for at least one input token
        assert torch.bincount(out.sources[out.sources >= 0], minlength=m).min() >= 1
        assert out.positions.shape == (m, 3) and out.positions.dtype == torch.int64
        s = math.isqrt(n)
        assert (out.positions[:, 0] < t).all() and (out.positions >= 0).all()
        assert (out.positions[:, 1] < s).all() and (out.positions[:, 2] < s).all()
        assert out.retention == pytest.approx(m / (t * n))
        assert torch.isfinite(out.tokens).all()
        assert out.info["method"] == method
        # one distinct anchor per output token (the model adapters put each output token
        # in its anchor's sequence slot)
        flat = out.positions[:, 0] * n + out.positions[:, 1] * s + out.positions[:, 2]
        assert flat.unique().numel() == m
        # anchors: the flat input index of each anchor, the one positions stand for
        assert out.anchors.shape == (m,) and out.anchors.dtype == torch.int64
        assert out.anchors.device == x.device
        assert torch.equal(out.anchors, flat)
        assert torch.equal(grid_positions(t, (s, s), n)[out.anchors], out.positions)
    assert torch.equal(x, before), "the input was modified"


@pytest.mark.parametrize("method", ["fastv", "visionzip"])
def test_in_model_methods_point_to_apply(method):
    assert get_method(method).stage in ("vision", "llm")
    with pytest.raises(ValueError, match="vt.apply"):
        vt.compress(tokens((2, 16, 4)), method, retention=0.5)


@pytest.mark.parametrize("method", PRE_LLM)
def test_retention_one_is_identity(method):
    x = tokens((3, 16, 4))
    out = vt.compress(x, method, retention=1.0)
    assert torch.equal(out.tokens, x.reshape(48, 4))
    assert out.sources.tolist() == list(range(48))
    assert out.positions[5].tolist() == [0, 1, 1]
    assert out.positions[16 + 4 * 3 + 2].tolist() == [1, 3, 2]
    out.tokens[0] = 99.0  # the result does not alias the input
    assert x[0, 0, 0] != 99.0


@pytest.mark.parametrize("method", PRE_LLM)
def test_image_input_is_one_frame(method):
    x = tokens((49, 8))
    out = vt.compress(x, method, retention=0.2)
    assert out.num_tokens == math.ceil(0.2 * 49)
    assert (out.positions[:, 0] == 0).all()


@pytest.mark.parametrize("method", PRE_LLM)
def test_deterministic(method):
    x = tokens((4, 25, 6), seed=3)
    a = vt.compress(x, method, retention=0.2)
    b = vt.compress(x.clone(), method, retention=0.2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.sources, b.sources)


def test_budget_uses_the_decimal_value():
    assert budget_for(0.1, 6270) == 627  # 0.1 * 6270 in binary is 627.0000000000001
    assert budget_for(0.35, 100) == 35
    assert budget_for(0.001, 10) == 1
    assert budget_for(1.0, 7) == 7


@pytest.mark.parametrize(
    "bad, err, words",
    [
        ([[1.0, 2.0]], TypeError, "torch.Tensor"),
        (torch.ones(3, 4, dtype=torch.int64), TypeError, "floating"),
        (torch.ones(2, 3, 4, 5), ValueError, "rank 4"),
        (torch.ones(4), ValueError, "rank 1"),
        (torch.ones(0, 4), ValueError, "empty"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "NaN"),
        (torch.tensor([[1.0, float("inf")]]), ValueError, "Inf"),
    ],
)
def test_bad_tokens(bad, err, words):
    with pytest.raises(err, match=words):
        vt.compress(bad, "scc", retention=0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_finite_check_has_no_false_alarm_or_miss(dtype):
    from vistoken.core import all_finite

    big = torch.finfo(dtype).max
    # finite values whose sum overflows (the fast sum is not finite): still accepted
    x = torch.full((4, 8, 16), big, dtype=dtype)
    assert all_finite(x)
    assert vt.compress(x, "uniform", retention=0.5).num_tokens == 16
    # an infinity cancelled by its negative sums to NaN; a lone NaN among huge values
    for bad in (float("inf"), float("-inf"), float("nan")):
        y = x.clone()
        y[1, 2, 3] = bad
        assert not all_finite(y)
        with pytest.raises(ValueError, match="NaN or Inf"):
            vt.compress(y, "uniform", retention=0.5)
    z = torch.zeros(3, 5, dtype=dtype)
    z[0, 0], z[2, 4] = float("inf"), float("-inf")
    assert not all_finite(z)


@pytest.mark.parametrize("r", [0.0, -0.1, 1.5, float("nan")])
def test_bad_retention(r):
    with pytest.raises(ValueError, match=r"retention must be in \(0, 1\]"):
        vt.compress(tokens((2, 4, 3)), "scc", retention=r)


def test_retention_type():
    with pytest.raises(TypeError, match="retention"):
        vt.compress(tokens((2, 4, 3)), "scc", retention="0.5")


def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match="known methods: .*scc"):
        vt.compress(tokens((2, 4, 3)), "nope", retention=0.5)


def test_unknown_option_lists_accepted():
    with pytest.raises(ValueError, match="accepted: tau"):
        vt.compress(tokens((2, 4, 3)), "scc", retention=0.5, taus=0.3)


@pytest.mark.parametrize("grid", [(3, 3), (2, 2, 1), (0, 4), (-2, -2)])
def test_bad_grid(grid):
    with pytest.raises(ValueError, match="grid"):
        vt.compress(tokens((2, 4, 3)), "scc", retention=0.5, grid=grid)


@pytest.mark.parametrize(
    "grid", ["ab", "22", (2.5, 2), (2.0, 2), (float("inf"), 2), (True, 4), 4, {2: 2}]
)
def test_grid_of_the_wrong_type(grid):
    with pytest.raises(TypeError, match=r"grid must be a pair \(H, W\) of positive integers"):
        vt.compress(tokens((2, 4, 3)), "scc", retention=0.5, grid=grid)


def test_non_square_without_grid_uses_a_row():
    out = vt.compress(tokens((2, 6, 3)), "scc", retention=1.0)
    assert out.positions[7].tolist() == [1, 0, 1]
    out = vt.compress(tokens((2, 6, 3)), "scc", retention=1.0, grid=(2, 3))
    assert out.positions[7].tolist() == [1, 0, 1]
    assert out.positions[10].tolist() == [1, 1, 1]


def test_compressed_is_immutable():
    out = vt.compress(tokens((2, 4, 3)), "scc", retention=0.5)
    with pytest.raises(AttributeError):
        out.tokens = None
    with pytest.raises(TypeError):
        out.info["tau"] = 0.0
    assert "retention=0.5" in repr(out)


def test_anchors_without_a_grid_follow_the_row_positions():
    x = tokens((3, 6, 4), seed=2)
    for method in PRE_LLM:
        if get_method(method).needs_grid:
            continue
        out = vt.compress(x, method, retention=0.4)
        assert torch.equal(grid_positions(3, None, 6)[out.anchors], out.positions), method
        out = vt.compress(x, method, retention=0.4, grid=(2, 3))
        assert torch.equal(grid_positions(3, (2, 3), 6)[out.anchors], out.positions), method


# ---------------------------------------------------------------- reduce / expand


def loop_reduce(c, f):
    """The reduction written plainly: per output, its one source's row or the float64 mean."""
    rows = []
    for j in range(c.num_tokens):
        members = [i for i in range(c.sources.numel()) if int(c.sources[i]) == j]
        if len(members) == 1:
            rows.append(f[members[0]])
        else:
            rows.append(f[members].double().mean(0).to(f.dtype))
    return torch.stack(rows)


@pytest.mark.parametrize("method", PRE_LLM)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_reduce_matches_a_loop(method, dtype):
    x = tokens((3, 16, 6), seed=4)
    g = torch.Generator().manual_seed(5)
    f = torch.randn(48, 2, 3, generator=g).to(dtype)  # any trailing shape
    for r in (0.1, 0.3, 0.6):
        c = vt.compress(x, method, retention=r)
        got = c.reduce(f)
        assert got.shape == (c.num_tokens, 2, 3) and got.dtype == dtype
        want = loop_reduce(c, f)
        sizes = torch.bincount(c.sources[c.sources >= 0], minlength=c.num_tokens)
        alone = sizes == 1
        assert torch.equal(got[alone], want[alone])  # a gather: exact
        tol = {torch.float16: 1e-3, torch.float32: 1e-6, torch.float64: 1e-12}[dtype]
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        if get_method(method).kind == "select":
            assert bool(alone.all())
            assert torch.equal(got, f[c.anchors])


@pytest.mark.parametrize("method", ["pool", "tome"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reduce_of_the_tokens_is_the_output_of_plain_mean_methods(method, dtype):
    x = tokens((4, 16, 8), seed=6, dtype=dtype)
    for r in (0.05, 0.3, 0.7):
        c = vt.compress(x, method, retention=r)
        assert torch.equal(c.reduce(x.reshape(64, 8)), c.tokens)


def test_reduce_of_scc_tokens_is_not_its_output():
    # SCC's output adds its representative to the members' sum: not a plain mean
    x = tokens((4, 16, 8), seed=6)
    c = vt.compress(x, "scc", retention=0.2)
    assert not torch.allclose(c.reduce(x.reshape(64, 8)), c.tokens, atol=1e-3)


@pytest.mark.parametrize("method", PRE_LLM)
def test_expand_of_reduce_keeps_the_rows_of_tokens_kept_alone(method):
    x = tokens((3, 16, 6), seed=7)
    f = tokens((48, 5), seed=8)
    c = vt.compress(x, method, retention=0.3)
    back = c.expand(c.reduce(f))
    assert back.shape == f.shape and back.dtype == f.dtype
    sizes = torch.bincount(c.sources[c.sources >= 0], minlength=c.num_tokens)
    alone = (c.sources >= 0) & (sizes[c.sources.clamp(min=0)] == 1)
    assert torch.equal(back[alone], f[alone])
    merged = (c.sources >= 0) & ~alone
    assert torch.equal(back[merged], c.reduce(f)[c.sources[merged]])
    assert (back[c.sources < 0] == 0).all()


def hand_result():
    # 6 inputs -> 3 outputs: output 0 <- {0, 2}, output 1 <- {3}, output 2 <- {4, 5}; 1 dropped
    sources = torch.tensor([0, -1, 0, 1, 2, 2])
    return vt.Compressed(torch.zeros(3, 2), sources, torch.zeros(3, 3, dtype=torch.long), {})


def test_reduce_and_expand_by_hand():
    c = hand_result()
    f = torch.tensor([[1.0, 2.0], [100.0, 100.0], [3.0, 6.0], [5.0, 5.0], [0.0, 1.0], [2.0, 2.0]])
    assert c.reduce(f).tolist() == [[2.0, 4.0], [5.0, 5.0], [1.0, 1.5]]
    out = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert c.expand(out).tolist() == [[1, 1], [0, 0], [1, 1], [2, 2], [3, 3], [3, 3]]
    assert c.expand(out, fill=-7.0)[1].tolist() == [-7.0, -7.0]
    assert c.expand(out, fill=torch.tensor([8.0, 9.0]))[1].tolist() == [8.0, 9.0]
    assert c.expand(torch.tensor([4, 5, 6])).tolist() == [4, 0, 4, 5, 6, 6]  # 1-D, int
    # hand-built without anchors: the smallest source of each output
    assert c.anchors.tolist() == [0, 3, 4]


def test_reduce_gathers_integer_features_of_a_selection_and_refuses_means():
    x = tokens((2, 16, 4), seed=9)
    ids = torch.arange(32) * 10
    sel = vt.compress(x, "uniform", retention=0.25)
    assert torch.equal(sel.reduce(ids), ids[sel.anchors])
    mask = torch.arange(32) % 3 == 0
    assert torch.equal(sel.reduce(mask), mask[sel.anchors])
    with pytest.raises(TypeError, match="floating features"):
        vt.compress(x, "pool", retention=0.25).reduce(ids)


def test_reduce_keeps_device_and_follows_the_features_device():
    c = hand_result()
    f = torch.arange(12.0).reshape(6, 2)
    assert c.reduce(f).device == f.device and c.expand(c.reduce(f)).device == f.device


def test_reduce_and_expand_refuse_the_wrong_rows():
    c = hand_result()
    with pytest.raises(ValueError, match=r"\(T\*N, \.\.\.\) = \(6, \.\.\.\)"):
        c.reduce(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\(M, \.\.\.\) = \(3, \.\.\.\)"):
        c.expand(torch.zeros(6, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        c.reduce([[1.0]] * 6)


def test_reduce_means_never_overflow():
    big = torch.finfo(torch.float32).max
    x = torch.full((1, 16, 4), big / 2)
    c = vt.compress(x, "pool", retention=0.25)
    out = c.reduce(torch.full((16, 3), big))
    assert torch.equal(out, torch.full((4, 3), big))


def test_anchors_must_match_the_tokens():
    c = hand_result()
    with pytest.raises(ValueError, match=r"anchors must be an int64 tensor of shape \(M,\)"):
        vt.Compressed(c.tokens, c.sources, c.positions, {}, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="anchors must be an int64"):
        vt.Compressed(c.tokens, c.sources, c.positions, {}, torch.tensor([0.0, 3.0, 4.0]))


def test_a_grid_method_refuses_a_non_square_frame_without_grid():
    x = tokens((2, 12, 4))
    with pytest.raises(ValueError, match=r"needs a frame grid but N=12 is not a perfect square"):
        vt.compress(x, "pool", retention=0.5)
    with pytest.raises(ValueError, match=r"grid=\(H, W\) with H \* W == 12"):
        vt.compress(x, "pool", retention=0.5)
    out = vt.compress(x, "pool", retention=0.5, grid=(3, 4))  # the grid given: it runs
    assert out.num_tokens == 12
    assert torch.equal(grid_positions(2, (3, 4), 12)[out.anchors], out.positions)
