"""The public contract, checked for every registered method."""

from __future__ import annotations

import math

import pytest
import torch

import vistoken as vt
from vistoken.core import budget_for, get_method

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
