"""Fidelity report: metrics on hand-built and small synthetic inputs (no encoder)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import vistoken as vt
from vistoken.core import Compressed, grid_positions
from vistoken.eval import (
    FidelityRow,
    attention_error,
    coverage,
    default_temperature,
    fixed_queries,
    reconstruction,
    run_fidelity,
    write_report,
)


def rand(t=4, n=16, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, n, d, generator=g)


def hand(tokens, sources, positions=None, **info):
    m = tokens.shape[0]
    if positions is None:
        positions = torch.zeros(m, 3, dtype=torch.long)
    return Compressed(
        tokens=tokens, sources=torch.as_tensor(sources, dtype=torch.long),
        positions=positions, info=info,
    )


# ---------------------------------------------------------------- reconstruction


def test_reconstruction_identity():
    x = rand()
    out = vt.compress(x, "uniform", retention=1.0)
    assert reconstruction(x, out) == pytest.approx(1.0, abs=1e-6)
    # identity-like: outputs are rescaled copies of the inputs, in another order
    flat = x.reshape(-1, x.shape[-1])
    perm = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    out2 = hand(3.0 * flat[perm], inv)
    assert reconstruction(x, out2) == pytest.approx(1.0, abs=1e-6)


def test_reconstruction_drops_when_compressing():
    x = rand()
    for m in ("uniform", "tome"):
        half = reconstruction(x, vt.compress(x, m, retention=0.5))
        tenth = reconstruction(x, vt.compress(x, m, retention=0.1))
        assert tenth < half < 1.0 - 1e-3


def test_reconstruction_hand_built_with_dropped_token():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]])
    outs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # token 3 is dropped: nearest output by cosine is output 0 (cos 2/sqrt5 vs -1/sqrt5)
    out = hand(outs, [0, 1, 1, -1])
    expected = (1.0 + 1.0 + 1 / math.sqrt(2) + 2 / math.sqrt(5)) / 4
    assert reconstruction(x, out) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- attention error


def test_attention_error_zero_at_full_retention_and_grows():
    x = rand(t=4, n=16, d=32)
    q = fixed_queries(32)
    full = vt.compress(x, "uniform", retention=1.0)
    assert attention_error(x, full, q) == pytest.approx(0.0, abs=1e-5)
    e_half = attention_error(x, vt.compress(x, "uniform", retention=0.5), q)
    e_tenth = attention_error(x, vt.compress(x, "uniform", retention=0.1), q)
    assert 0.0 < e_half < e_tenth


def test_proportional_attention_identical_tokens():
    a = torch.tensor([1.0, 2.0, 0.5, -1.0])
    b = torch.tensor([-0.5, 1.0, 3.0, 0.0])
    x = torch.stack([a, a, b]).unsqueeze(0)  # tokens 0 and 1 identical
    q = fixed_queries(4, q=8)
    merged = hand(torch.stack([a, b]), [0, 0, 1], sizes=torch.tensor([2, 1]))
    assert attention_error(x, merged, q) == pytest.approx(0.0, abs=1e-6)
    # the sizes are also found from sources when info has none
    assert attention_error(x, hand(torch.stack([a, b]), [0, 0, 1]), q) == pytest.approx(
        0.0, abs=1e-6
    )
    # without the log(size) term the merged key is under-weighted
    assert attention_error(x, merged, q, torch.ones(2)) > 1e-3


def test_attention_error_matches_direct_formula():
    x = rand(t=2, n=4, d=8)
    out = vt.compress(x, "tome", retention=0.5)
    q = fixed_queries(8, q=5, seed=3)
    tau = default_temperature(8)
    assert tau == pytest.approx(1 / math.sqrt(8))
    f = x.reshape(-1, 8)
    qn = torch.nn.functional.normalize(q, dim=1)
    kn = torch.nn.functional.normalize(f, dim=1)
    cn = torch.nn.functional.normalize(out.tokens, dim=1)
    sizes = torch.bincount(out.sources, minlength=out.num_tokens).float()
    full = torch.softmax(qn @ kn.T / tau, 1) @ f
    comp = torch.softmax(qn @ cn.T / tau + sizes.log(), 1) @ out.tokens
    want = ((full - comp).norm(dim=1) / full.norm(dim=1)).mean()
    assert attention_error(x, out, q) == pytest.approx(float(want), rel=1e-4)


def test_fixed_queries_seeded():
    a, b = fixed_queries(16, q=4, seed=7), fixed_queries(16, q=4, seed=7)
    assert a.shape == (4, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, fixed_queries(16, q=4, seed=8))


# ---------------------------------------------------------------- coverage


def test_coverage_hand_built():
    t, n = 4, 2
    # 3 outputs anchored in frames 0, 0 and 2; frame 3's tokens merged into output 2
    positions = torch.tensor([[0, 0, 0], [0, 0, 1], [2, 0, 0]])
    sources = [0, 1, -1, -1, 2, 2, 2, 2]
    out = hand(torch.randn(3, 2), sources, positions)
    assert coverage(out, t, n) == pytest.approx(2 / 4)
    assert coverage(out, t, n, by="sources") == pytest.approx(3 / 4)
    full = hand(torch.randn(8, 2), list(range(8)), grid_positions(t, None, n))
    assert coverage(full, t, n) == 1.0


# ---------------------------------------------------------------- run and report


def test_run_fidelity_rows():
    x = rand(t=4, n=16, d=32)
    ratios = (0.5, 0.25, 0.1)
    rows = run_fidelity(x, (4, 4), methods=["uniform", "tome"], ratios=ratios, repeats=2)
    assert [(r.method, r.retention) for r in rows] == [
        (m, q) for m in ("uniform", "tome") for q in ratios
    ]
    assert [r.tokens for r in rows] == [32, 16, 7] * 2
    queries = fixed_queries(32)
    for r in rows:
        assert isinstance(r, FidelityRow)
        # each metric is the one of that compression (run_fidelity adds no arithmetic)
        out = vt.compress(x, r.method, retention=r.retention, grid=(4, 4))
        assert r.reconstruction == reconstruction(x, out)
        assert r.attention_error == attention_error(x, out, queries)
        # coverage: frames holding an anchor, counted by hand
        frames = {int(a) // 16 for a in out.anchors}
        assert r.coverage == len(frames) / 4


def test_run_fidelity_times_the_compression(monkeypatch):
    import time

    from vistoken.eval import fidelity

    real = fidelity.compress

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(fidelity, "compress", slow)
    rows = run_fidelity(rand(t=2, n=16, d=8), (4, 4), methods=["uniform"], ratios=(0.5,))
    assert 0.05 <= rows[0].seconds < 2.0


def test_write_report(tmp_path):
    rows = run_fidelity(rand(), None, methods=["uniform", "tome"], ratios=(0.5, 0.1))
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    other = out_dir / "notes.txt"
    other.write_text("keep me")
    paths = write_report(rows, out_dir, "synthetic")
    assert set(paths) == {"md", "csv", "png"}
    assert {p.name for p in out_dir.iterdir()} == {
        "notes.txt", "fidelity.md", "fidelity.csv", "fidelity.png"
    }
    assert other.read_text() == "keep me"
    with paths["csv"].open(newline="") as f:
        parsed = list(csv.DictReader(f))
    assert len(parsed) == len(rows) == 4
    assert parsed[0]["method"] == "uniform" and int(parsed[0]["tokens"]) == rows[0].tokens
    assert float(parsed[1]["reconstruction"]) == pytest.approx(rows[1].reconstruction)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert md.startswith("# synthetic")
    assert "| uniform |" in md and "| tome |" in md and "Attention error" in md
    # a missing directory is created
    assert write_report(rows, tmp_path / "new" / "dir", "x")["md"].is_file()
