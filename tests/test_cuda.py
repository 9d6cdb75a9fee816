"""CUDA smoke test: every tokens-stage method on the GPU keeps dtype, device and count, and
gives the sources it gives on the CPU; SCC's retention search on CUDA lands on the structure
of the plain tau pass; vt.apply synchronises only when asked to (``sync_timing``).

Skipped where torch.cuda.is_available() is False; run it on a machine with a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

import vistoken as vt
from vistoken.core import get_method

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)

DEVICE = "cuda"
METHODS = vt.methods(stage="tokens")
SHAPE = (4, 49, 32)  # 7x7 frames: pool's grid is the default square


def tokens(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*SHAPE, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_device_and_count_on_cuda(method, dtype):
    x = tokens(dtype).to(DEVICE)
    t, n, d = SHAPE
    for r in (0.05, 0.25, 0.6):
        out = vt.compress(x, method, retention=r)
        m = math.ceil(r * t * n)
        assert out.num_tokens == m and out.tokens.shape == (m, d)
        assert out.tokens.dtype == dtype
        for v in (out.tokens, out.sources, out.positions, out.anchors):
            assert v.device.type == "cuda"
        assert bool(torch.isfinite(out.tokens).all())
        f = torch.arange(t * n, dtype=torch.float32, device=DEVICE)[:, None].expand(-1, 3)
        red = out.reduce(f)
        assert red.device.type == "cuda" and red.shape == (m, 3)
        assert out.expand(red).device.type == "cuda"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "scc"])
def test_same_sources_as_on_the_cpu(method):
    # float64: the similarities on either device agree to ~1e-16, far below any gap between
    # the random tokens' scores, so every selection and merge is the same
    x = tokens(torch.float64, seed=1)
    for r in (0.1, 0.3):
        cpu = vt.compress(x, method, retention=r)
        gpu = vt.compress(x.to(DEVICE), method, retention=r)
        assert torch.equal(gpu.sources.cpu(), cpu.sources), (method, r)
        assert torch.equal(gpu.anchors.cpu(), cpu.anchors), (method, r)
        assert torch.equal(gpu.positions.cpu(), cpu.positions), (method, r)
        torch.testing.assert_close(gpu.tokens.cpu(), cpu.tokens, rtol=1e-12, atol=1e-12)
        if get_method(method).kind == "select":
            assert torch.equal(gpu.tokens.cpu(), cpu.tokens)


def test_scc_retention_on_cuda_is_the_plain_tau_pass():
    x = tokens(torch.float32, seed=2).to(DEVICE)
    unsettled = 0
    for r in (0.05, 0.1, 0.25, 0.5):
        out = vt.compress(x, "scc", retention=r)
        assert out.num_tokens == math.ceil(r * SHAPE[0] * SHAPE[1])
        plain = vt.compress(x, "scc", tau=out.info["tau"])
        assert plain.num_tokens - out.info["settled"] == out.num_tokens
        if out.info["settled"] == 0:
            unsettled += 1
            assert torch.equal(out.sources, plain.sources)
            assert torch.equal(out.tokens, plain.tokens)
            assert torch.equal(out.anchors, plain.anchors)
    assert unsettled > 0  # at least one budget compared whole


def test_apply_synchronises_only_with_sync_timing(monkeypatch):
    pytest.importorskip("transformers")
    from vistoken import testing

    model = testing.tiny_llava_onevision().to(DEVICE)
    x = {
        k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v
        for k, v in testing.llava_onevision_inputs(model, [4], seed=0).items()
    }
    calls = []
    real = torch.cuda.synchronize

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "synchronize", spy)
    with vt.apply(model, "uniform", retention=0.5) as h:
        with torch.no_grad():
            model(**x)
        assert calls == []
        assert h.stats["kept_tokens"] == math.ceil(0.5 * h.stats["visual_tokens"])
        h.sync_timing = True
        with torch.no_grad():
            model(**x)
        assert len(calls) == 2  # before and after the compressor
