"""SCC against an independent straightforward reference (scipy components, Python loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components

import vistoken as vt
from vistoken.compressors.scc import scc_structure, spatial_step
from vistoken.ops import hub_order, normalize


def clustered(t: int, n: int, d: int, k: int, noise: float, seed: int, dtype=torch.float64):
    """Video-like tokens: each token is one of k prototypes plus noise; prototypes persist."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(k, d, generator=g, dtype=torch.float64)
    assign = torch.randint(0, k, (t, n), generator=g)
    x = protos[assign] + noise * torch.randn(t, n, d, generator=g, dtype=torch.float64)
    return x.to(dtype)


def ref_components(x: np.ndarray, tau: float):
    """(members lists in hub order, hub indices) by scipy, with the official ordering."""
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    adj = xn @ xn.T > tau
    np.fill_diagonal(adj, True)
    deg = adj.sum(1)
    ncomp, lab = connected_components(adj, directed=False)
    comps = []
    for c in range(ncomp):
        members = np.flatnonzero(lab == c)
        hub = min(members, key=lambda i: (-deg[i], i))
        comps.append((hub, members))
    comps.sort(key=lambda hc: hc[0])
    return [m for _, m in comps], [h for h, _ in comps]


def ref_scc(x: np.ndarray, tau: float):
    """The official algorithm, written plainly. x: (T, N, D) float64."""
    t, n, d = x.shape
    reps, hubs = [], []
    for f in range(t):
        members, hub = ref_components(x[f], tau)
        reps += [x[f][m].mean(0) for m in members]
        hubs += [f * n + h for h in hub]
    reps = np.stack(reps)
    members2, hub2 = ref_components(reps, tau)
    reps2 = np.stack([reps[m].mean(0) for m in members2])
    anchors = [hubs[h] for h in hub2]
    flat = x.reshape(t * n, d)
    fn = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    rn = reps2 / np.linalg.norm(reps2, axis=1, keepdims=True)
    assign = (fn @ rn.T).argmax(1)
    out = reps2.copy()
    for k in range(len(reps2)):
        sel = flat[assign == k]
        out[k] = (reps2[k] + sel.sum(0)) / (1 + len(sel))
    return out, assign, np.array(anchors), len(reps)


CASES = [
    # (T, N, D, prototypes, noise, tau)
    (4, 49, 16, 6, 0.3, 0.8),
    (3, 64, 32, 10, 0.5, 0.7),
    (6, 36, 8, 4, 0.2, 0.9),
    (2, 100, 24, 40, 1.0, 0.5),
    (1, 196, 16, 12, 0.4, 0.85),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case):
    t, n, d, k, noise, tau = case
    x = clustered(t, n, d, k, noise, seed=sum(case[:4]))
    out = vt.compress(x, "scc", tau=tau)
    ref_out, ref_assign, ref_anchor, ref_m1 = ref_scc(x.numpy(), tau)
    assert out.info["spatial_tokens"] == ref_m1
    assert out.num_tokens == len(ref_out)
    np.testing.assert_allclose(out.tokens.numpy(), ref_out, rtol=1e-10, atol=1e-10)
    assert out.sources.tolist() == ref_assign.tolist()
    s = math.isqrt(n)
    anchor = ref_anchor
    want_pos = np.stack([anchor // n, (anchor % n) // s, (anchor % n) % s], 1)
    assert out.positions.tolist() == want_pos.tolist()


def test_matches_reference_on_random_tokens():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 25, 12, generator=g, dtype=torch.float64)
    for tau in (0.0, 0.3, 0.6):
        out = vt.compress(x, "scc", tau=tau)
        ref_out, ref_assign, _, _ = ref_scc(x.numpy(), tau)
        np.testing.assert_allclose(out.tokens.numpy(), ref_out, rtol=1e-10, atol=1e-10)
        assert out.sources.tolist() == ref_assign.tolist()


def test_hub_order_rule():
    # Path 0-1-2 (1 has the largest degree) and a triangle 3,4,5 (tie -> smallest index 3),
    # plus a star centred on 7 with leaves 6, 8, 9 (hub 7 > hub 3, but before nothing else).
    labels = torch.tensor([0, 0, 0, 3, 3, 3, 6, 6, 6, 6])
    degree = torch.tensor([2, 3, 2, 3, 3, 3, 2, 4, 2, 2])
    comp, hubs = hub_order(labels, degree)
    assert hubs.tolist() == [1, 3, 7]
    assert comp.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # A component whose hub comes first although its smallest member comes last.
    labels = torch.tensor([0, 1, 0, 1])
    degree = torch.tensor([1, 1, 3, 1])
    comp, hubs = hub_order(labels, degree)
    assert hubs.tolist() == [1, 2]
    assert comp.tolist() == [1, 0, 1, 0]


def test_spatial_components_are_ordered_by_hub():
    # One frame: tokens 0 and 3 are the same direction, 1 and 2 another, 2 duplicated twice
    # more so that it has the largest degree of its component.
    e = torch.eye(4, dtype=torch.float64)
    x = torch.stack([e[0], e[1], e[1], e[0], e[1], e[2]]).unsqueeze(0)
    comp, hubs, reps = spatial_step(x, normalize(x), 0.9)
    # degrees: e0 tokens have 2, e1 tokens have 3, e2 has 1; hubs: 0 (tie 0/3 -> 0), 1, 5
    assert hubs.tolist() == [0, 1, 5]
    assert comp.tolist() == [0, 1, 1, 0, 1, 2]
    assert torch.equal(reps, torch.stack([e[0], e[1], e[2]]))


def test_final_merge_arithmetic_with_plus_one():
    # Two clean clusters: the output is (rep + sum of members) / (1 + count).
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x = torch.stack([a, 2 * a, b, 3 * b]).unsqueeze(0)  # one frame, grid (1, 4)
    out = vt.compress(x, "scc", tau=0.5, grid=(1, 4))
    rep_a, rep_b = 1.5 * a, 2.0 * b  # spatial means; the temporal step keeps them
    want_a = (rep_a + a + 2 * a) / 3
    want_b = (rep_b + b + 3 * b) / 3
    assert torch.allclose(out.tokens, torch.stack([want_a, want_b]))
    assert out.sources.tolist() == [0, 0, 1, 1]
    assert out.info["sizes"].tolist() == [2, 2]


def test_strict_threshold():
    # Two tokens at cosine exactly 0.5: an edge only when tau < 0.5.
    x = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)
    cos = float(normalize(x)[0] @ normalize(x)[1])
    assert vt.compress(x, "scc", tau=cos, grid=(1, 2)).num_tokens == 2
    assert vt.compress(x, "scc", tau=cos - 1e-9, grid=(1, 2)).num_tokens == 1


def test_temporal_step_merges_across_frames():
    x = clustered(8, 16, 12, 3, 0.05, seed=3)
    out = vt.compress(x, "scc", tau=0.8)
    assert out.info["spatial_tokens"] >= 8 * 2  # every frame holds several prototypes
    assert out.num_tokens == 3  # one per prototype across all frames
    frames_per_output = [out.sources.view(8, 16)[:, :].eq(k).any(1).sum() for k in range(3)]
    assert all(int(f) > 1 for f in frames_per_output)


def test_spatial_count_is_monotone_in_tau():
    x = clustered(4, 49, 16, 8, 0.6, seed=11)
    xn = normalize(x)
    counts = [spatial_step(x, xn, tau)[1].numel() for tau in np.linspace(-0.2, 0.99, 25)]
    assert counts == sorted(counts)
    assert counts[0] < counts[-1]


@pytest.mark.parametrize("shape", [(8, 49, 16), (1, 196, 32), (3, 50, 8)])
def test_exact_budgets(shape):
    x = clustered(*shape, k=12, noise=0.7, seed=shape[0], dtype=torch.float32)
    total = shape[0] * shape[1]
    for r in (0.01, 0.05, 0.1, 0.137, 0.25, 0.35, 0.5, 0.77, 0.99):
        out = vt.compress(x, "scc", retention=r)
        want = max(1, math.ceil(round(r * total, 9)))
        assert out.num_tokens == want, (r, out.info)
        assert out.sources.min() >= 0 and out.sources.max() < want
        assert out.tokens.shape == (want, shape[2])
        assert torch.isfinite(out.tokens).all()


def test_budget_settling_keeps_best_supported():
    x = clustered(6, 49, 16, 10, 0.6, seed=5)
    out = vt.compress(x, "scc", retention=0.13)
    # the tau found gives at least the budget; any excess was settled
    st = scc_structure(x, normalize(x), out.info["tau"])
    assert st.reps.shape[0] - out.info["settled"] == out.num_tokens


def test_budget_settling_keeps_the_most_supported_components():
    # Six groups of identical tokens, every two groups at cosine exactly 0.5: the count is
    # 1 below tau = 0.5 and 6 above it, so a budget of 3 must settle 3 components, and the
    # groups of 5, 4 and 3 tokens stay (each anchored at its first token, the hub).
    eye = torch.eye(8, dtype=torch.float64)
    protos = eye[:6] + eye[7]
    group = torch.tensor([0, 1, 3, 1, 4, 2, 1, 3, 5, 4, 1, 3, 0, 1, 3, 4])  # sizes 2,5,1,4,3,1
    x = protos[group].reshape(1, 16, 8)
    out = vt.compress(x, "scc", retention=3 / 16)
    assert out.num_tokens == 3 and out.info["settled"] == 3
    assert out.anchors.tolist() == [1, 2, 4]  # first tokens of the groups of 5, 4 and 3
    for j, g in enumerate((1, 3, 4)):
        members = group == g
        assert (out.sources[members] == j).all()
    assert (out.sources >= 0).all()  # the settled groups' tokens are merged, not dropped


def test_official_mode_equals_exact_below_threshold():
    x = clustered(6, 196, 16, 12, 0.5, seed=2)  # 1176 < 3234 nodes everywhere
    a = vt.compress(x, "scc", tau=0.8)
    b = vt.compress(x, "scc", tau=0.8, mode="official", seed=123)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.sources, b.sources)


@pytest.mark.parametrize("r", [0.02, 0.1, 0.3])
def test_official_mode_with_retention_equals_exact_below_threshold(r):
    x = clustered(6, 196, 16, 12, 0.5, seed=2)  # 1176 < 3234 nodes: every node sampled
    a = vt.compress(x, "scc", retention=r)
    b = vt.compress(x, "scc", retention=r, mode="official", seed=123)
    assert b.num_tokens == math.ceil(r * 6 * 196)
    assert b.info["mode"] == "official" and b.info["tau"] == a.info["tau"]
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.sources, b.sources)
    assert torch.equal(a.anchors, b.anchors)


def test_official_mode_with_retention_samples_and_keeps_the_count():
    # 3600+ spatial representatives > 3234: the temporal step samples at every tau tried
    x = clustered(20, 196, 64, 20000, 0.01, seed=4, dtype=torch.float32)
    o1 = vt.compress(x, "scc", retention=0.1, mode="official", seed=1)
    assert o1.info["spatial_tokens"] > 3234
    assert o1.num_tokens == math.ceil(0.1 * 20 * 196)
    assert o1 == vt.compress(x, "scc", retention=0.1, mode="official", seed=1)  # seeded


def test_official_mode_samples_above_threshold():
    # 20 frames x 196 tokens of near-identical content: 3920 spatial reps > 3234, so the
    # temporal step samples; the result is seeded (repeatable) and over-segments.
    x = clustered(20, 196, 64, 20000, 0.01, seed=4)
    exact = vt.compress(x, "scc", tau=0.9)
    assert exact.info["spatial_tokens"] > 3234
    o1 = vt.compress(x, "scc", tau=0.9, mode="official", seed=1)
    o2 = vt.compress(x, "scc", tau=0.9, mode="official", seed=1)
    o3 = vt.compress(x, "scc", tau=0.9, mode="official", seed=2)
    assert torch.equal(o1.tokens, o2.tokens)
    assert o1.num_tokens > exact.num_tokens  # unsampled nodes stay singletons
    assert not torch.equal(o1.sources, o3.sources)


def test_deterministic_bit_for_bit():
    x = clustered(8, 49, 32, 10, 0.8, seed=9, dtype=torch.float32)
    a = vt.compress(x, "scc", tau=0.6)
    b = vt.compress(x.clone(), "scc", tau=0.6)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.sources, b.sources) and torch.equal(a.positions, b.positions)
    c = vt.compress(x, "scc", retention=0.2)
    d = vt.compress(x, "scc", retention=0.2)
    assert torch.equal(c.tokens, d.tokens) and c.info["tau"] == d.info["tau"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x32 = clustered(4, 49, 32, 8, 0.3, seed=1, dtype=torch.float32)
    x = x32.to(dtype)
    out = vt.compress(x, "scc", tau=0.8)
    ref = vt.compress(x.float(), "scc", tau=0.8)  # same values, computed in float32
    assert out.tokens.dtype == dtype
    assert torch.isfinite(out.tokens.float()).all()
    assert torch.equal(out.sources, ref.sources)
    assert torch.equal(out.tokens, ref.tokens.to(dtype))
    assert vt.compress(x, "scc", retention=0.1).num_tokens == math.ceil(0.1 * 4 * 49)


def test_zero_norm_tokens_do_not_produce_nan():
    x = clustered(2, 16, 8, 3, 0.2, seed=0, dtype=torch.float32)
    x[0, :5] = 0
    x[1, 3] = 0
    for kw in ({"tau": 0.9}, {"tau": -0.5}, {"retention": 0.2}):
        out = vt.compress(x, "scc", **kw)
        assert torch.isfinite(out.tokens).all()


def test_large_temporal_graph_uses_packed_rows(monkeypatch):
    # A temporal graph of more than DENSE_ADJ_LIMIT adjacency entries keeps its dense tiles
    # as packed bits. At the real limit that takes 8193+ representatives (seconds); the
    # limit is lowered so that an 800-node graph runs the same code, and the packing is
    # counted, so the test fails if the path is not taken.
    from vistoken.ops import components

    g = torch.Generator().manual_seed(6)
    t, n, d = 20, 40, 16
    protos = torch.randn(n, d, generator=g, dtype=torch.float64)
    # every frame holds the same 40 distinct prototypes, slightly moved: no spatial merge,
    # each representative linked to its 19 copies (tiles far denser than 1/128)
    x = (protos + 0.02 * torch.randn(t, n, d, generator=g, dtype=torch.float64)).float()
    calls = {"pack": 0, "unpack": 0}
    pack, unpack = components._pack, components._unpack

    def counting_pack(a):
        calls["pack"] += 1
        return pack(a)

    def counting_unpack(p, cols):
        calls["unpack"] += 1
        return unpack(p, cols)

    monkeypatch.setattr(components, "_pack", counting_pack)
    monkeypatch.setattr(components, "_unpack", counting_unpack)
    dense = vt.compress(x, "scc", tau=0.9)  # 800 * 800 entries: below the real limit
    assert calls == {"pack": 0, "unpack": 0}
    monkeypatch.setattr(components, "DENSE_ADJ_LIMIT", 1 << 16)
    packed = vt.compress(x, "scc", tau=0.9)
    assert calls["pack"] > 0 and calls["unpack"] > 0
    assert packed.info["spatial_tokens"] == t * n and packed.num_tokens == n
    assert torch.equal(packed.tokens, dense.tokens)
    assert torch.equal(packed.sources, dense.sources)
    ref_out, ref_assign, ref_anchor, ref_m1 = ref_scc(x.double().numpy(), 0.9)
    assert ref_m1 == t * n
    np.testing.assert_allclose(packed.tokens.numpy(), ref_out, rtol=1e-5, atol=1e-6)
    assert packed.sources.tolist() == ref_assign.tolist()
    assert packed.anchors.tolist() == ref_anchor.tolist()


@pytest.mark.parametrize("shape", [(8, 49, 16), (1, 196, 32), (12, 64, 24)])
def test_retention_search_matches_tau_mode(shape):
    # The search reuses cached similarities (per-frame, token pairs); its structure must be
    # the one the plain tau pass builds at the tau it reports.
    from vistoken.compressors.scc_search import SearchCounter

    x = clustered(*shape, k=12, noise=0.7, seed=shape[0], dtype=torch.float32)
    xn = normalize(x)
    counter = SearchCounter(x, xn)
    for tau in (0.2, 0.5, 0.7, 0.9):
        for lo in (-1.0001, tau - 0.3, tau):
            count, st = counter(tau, lo)
            ref = scc_structure(x, xn, tau)
            assert count == ref.reps.shape[0]
            assert torch.equal(st.reps, ref.reps) and torch.equal(st.anchors, ref.anchors)
            assert torch.equal(st.support, ref.support)
    for r in (0.05, 0.25, 0.5):
        out = vt.compress(x, "scc", retention=r)
        ref = scc_structure(x, xn, out.info["tau"])
        assert ref.reps.shape[0] - out.info["settled"] == out.num_tokens
        if out.info["settled"] == 0:
            plain = vt.compress(x, "scc", tau=out.info["tau"])
            assert torch.equal(out.tokens, plain.tokens)
            assert torch.equal(out.sources, plain.sources)


# --- issue 14: the forest-aimed search, the official replay, half precision -------------


def test_spanning_forest_gives_every_threshold_count():
    from vistoken.ops.components import spanning_forest

    g = torch.Generator().manual_seed(3)
    b, n = 5, 40
    x = normalize(clustered(b, n, 8, 6, 0.6, seed=3))
    sims = torch.bmm(x, x.transpose(1, 2))
    sims = torch.maximum(sims, sims.transpose(1, 2))  # symmetric, as the forest needs
    sims[1, :, :] = sims[1].round(decimals=1)  # ties everywhere in graph 1
    ei, ej, w = spanning_forest(sims)
    assert ei.numel() == b * (n - 1) and bool((ei < ej).all())
    assert bool((ei // n == ej // n).all())  # edges stay inside their graph
    for tau in torch.linspace(-0.5, 1.0, 16).tolist() + [0.5, 0.7]:
        for f in range(b):
            adj = (sims[f] > tau).numpy()
            np.fill_diagonal(adj, True)
            want = connected_components(adj, directed=False)[0]
            assert n - int((w[ei // n == f] > tau).sum()) == want, (tau, f)
    del g


@pytest.mark.parametrize("shape", [(6, 49, 16), (3, 100, 8)])
def test_forest_spatial_step_is_spatial_step_bit_for_bit(shape):
    from vistoken.compressors.scc_search import SearchCounter

    x = clustered(*shape, k=10, noise=0.7, seed=shape[1], dtype=torch.float32)
    xn = normalize(x)
    counter = SearchCounter(x, xn)
    assert counter.forest is not None  # the CPU matmul's similarities are symmetric
    for tau in (-0.2, 0.3, 0.55, 0.8, 0.95):
        want = spatial_step(x, xn, tau)
        got = counter.forest.step(x, tau)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), tau
        assert counter.spatial_count(tau) == want[1].numel()


def test_retention_search_takes_few_steps_and_reuses_representatives():
    from vistoken.compressors import scc_search

    x = clustered(16, 49, 24, 30, 0.8, seed=12, dtype=torch.float32)
    counters = []
    orig = scc_search.SearchCounter.__init__

    def spy(self, *a):
        orig(self, *a)
        counters.append(self)

    scc_search.SearchCounter.__init__ = spy
    try:
        for r in (0.1, 0.35):
            out = vt.compress(x, "scc", retention=r)
            assert out.num_tokens == math.ceil(r * 16 * 49)
            c = counters[-1]
            assert c.forest is not None and c.steps <= 8, c.steps
            # every representative was multiplied once: the cache holds no duplicate key
            assert c.pairs.keys.unique().numel() == c.pairs.keys.numel()
    finally:
        scc_search.SearchCounter.__init__ = orig


def _official_uf(adj: np.ndarray, sampled: np.ndarray, readout: str):
    """The official approximate components (REFERENCE.md section 1), written plainly:
    union by rank with path halving over the edges (i, j), i ascending, j its sampled
    neighbours ascending; members read with find() or from the raw parent array."""
    n = adj.shape[0]
    parent, rank = list(range(n)), [0] * n

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i in range(n):
        for j in np.intersect1d(np.nonzero(adj[i])[0], sampled):
            ra, rb = find(i), find(int(j))
            if ra == rb:
                continue
            if rank[ra] < rank[rb]:
                parent[ra] = rb
            else:
                parent[rb] = ra
                if rank[ra] == rank[rb]:
                    rank[ra] += 1
    groups = {}
    if readout == "find":
        for i in range(n):
            groups.setdefault(find(i), []).append(i)
    else:
        for i in range(n):
            if parent[i] == i:
                groups.setdefault(i, [])
        for i in range(n):
            if parent[i] in groups:
                groups[parent[i]].append(i)
    deg = adj.sum(1)
    comps = [(min(m, key=lambda v: (-deg[v], v)), m) for m in groups.values()]
    comps.sort()
    return [m for _, m in comps], [h for h, _ in comps]


def _official_reference(x: np.ndarray, tau: float, eps: float, seed: int, readout: str):
    """The official SCC pipeline with numpy's global stream seeded: one choice per frame,
    then one for the temporal graph; then the final merge."""
    np.random.seed(seed)
    t, n, d = x.shape

    def graph(v):
        vn = v / np.linalg.norm(v, axis=1, keepdims=True)
        adj = vn @ vn.T > tau
        np.fill_diagonal(adj, True)
        m = v.shape[0]
        s = min(m, math.ceil(math.log(m) / eps**2))
        return adj, np.random.choice(m, s, replace=False)

    reps, hubs = [], []
    for f in range(t):
        adj, sampled = graph(x[f])
        members, hub = _official_uf(adj, sampled, readout)
        reps += [x[f][m].mean(0) for m in members]
        hubs += [f * n + h for h in hub]
    reps = np.stack(reps)
    adj, sampled = graph(reps)
    members2, hub2 = _official_uf(adj, sampled, readout)
    reps2 = np.stack([reps[m].mean(0) for m in members2])
    flat = x.reshape(t * n, d)
    fn = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    rn = reps2 / np.linalg.norm(reps2, axis=1, keepdims=True)
    assign = (fn @ rn.T).argmax(1)
    out = np.stack([(reps2[k] + flat[assign == k].sum(0)) / (1 + (assign == k).sum())
                    for k in range(len(reps2))])
    return out, assign, np.array([hubs[h] for h in hub2]), len(reps)


@pytest.mark.parametrize("readout", ["find", "parent"])
@pytest.mark.parametrize("seed", [0, 7])
def test_official_mode_replays_the_published_algorithm(readout, seed):
    # epsilon 0.5 samples s = ceil(4 ln n) nodes: both steps sample at these sizes
    x = clustered(6, 64, 12, 8, 0.5, seed=seed + 1)
    tau, eps = 0.6, 0.5
    out = vt.compress(x, "scc", tau=tau, mode="official", epsilon=eps, seed=seed,
                      readout=readout)
    ref_out, ref_assign, ref_anchor, ref_m1 = _official_reference(x.numpy(), tau, eps, seed,
                                                                  readout)
    assert out.info["spatial_tokens"] == ref_m1
    assert out.num_tokens == len(ref_out)
    np.testing.assert_allclose(out.tokens.numpy(), ref_out, rtol=1e-10, atol=1e-10)
    assert out.sources.tolist() == ref_assign.tolist()
    assert out.anchors.tolist() == ref_anchor.tolist()
    exact = vt.compress(x, "scc", tau=tau)
    assert out.num_tokens > exact.num_tokens  # sampling over-segments


def test_parent_readout_drops_nodes_that_find_keeps():
    # on a chain the ranks grow and some parent entries point at non-roots
    x = clustered(1, 200, 6, 3, 0.9, seed=5)
    a = vt.compress(x, "scc", tau=0.3, mode="official", epsilon=1.0, readout="find")
    b = vt.compress(x, "scc", tau=0.3, mode="official", epsilon=1.0, readout="parent")
    assert a.num_tokens == b.num_tokens  # the read-out changes members, not roots
    assert not torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_official_mode_thresholds_in_the_input_dtype(dtype):
    x = clustered(4, 49, 32, 8, 0.9, seed=2, dtype=torch.float32).to(dtype)
    tau = 0.45
    out = vt.compress(x, "scc", tau=tau, mode="official", similarity="input")
    assert out.info["similarity"] == "input" and out.tokens.dtype == dtype
    xh = x / x.norm(dim=-1, keepdim=True)
    m1 = 0
    for f in range(4):
        adj = (xh[f] @ xh[f].T > tau).numpy()  # the similarity and the threshold in dtype
        np.fill_diagonal(adj, True)
        m1 += connected_components(adj, directed=False)[0]
    assert out.info["spatial_tokens"] == m1
    float32 = vt.compress(x, "scc", tau=tau, mode="official")
    assert float32.info["similarity"] == "float32"
    assert torch.equal(float32.tokens, vt.compress(x, "scc", tau=tau).tokens)


def test_official_only_options_are_refused_in_exact_mode():
    x = clustered(2, 16, 8, 3, 0.2, seed=0, dtype=torch.float32)
    for kw in ({"readout": "parent"}, {"similarity": "input"}):
        with pytest.raises(ValueError, match="mode='official'"):
            vt.compress(x, "scc", tau=0.9, **kw)
    with pytest.raises(ValueError, match="readout"):
        vt.compress(x, "scc", tau=0.9, mode="official", readout="raw")


def test_pair_cache_holds_every_pair_above_its_floor_once():
    # Representatives present over intervals of tau (as components are), steps visited in
    # a bracketing order: after every step the cache holds each pair of the step's own
    # representatives above the floor, and no pair twice, with the full matmul's value.
    from vistoken.compressors.scc_search import _RepPairs

    g = torch.Generator().manual_seed(5)
    m = 300
    v = normalize(clustered(1, m, 16, 8, 0.5, seed=5, dtype=torch.float32)[0])
    a = torch.rand(m, generator=g) * 0.6 + 0.2
    b = a + torch.rand(m, generator=g) * 0.4  # rep i is present for tau in [a_i, b_i]
    keys = torch.arange(m) * 7 + 3
    full = v @ v.T
    cache = _RepPairs(0.4, 1 << 20)
    for step, tau in enumerate((0.5, 0.9, 0.7, 0.6, 0.8, 0.65, 0.3)):
        cur = ((a <= tau) & (tau <= b)).nonzero().squeeze(1)
        ids, new = cache.lookup(keys[cur])
        where = new.nonzero().squeeze(1)
        ids[where] = cache.add(keys[cur][where], v[cur][where], ids[~new], tau)
        assert not cache.full
        assert torch.equal(cache.keys[ids], keys[cur])  # every id names its representative
        held = {(min(p, q), max(p, q)) for p, q in zip(cache.pa.tolist(), cache.pb.tolist(),
                                                       strict=True)}
        assert len(held) == cache.pa.numel(), step  # no pair twice
        rep = cache.keys // 7  # cache id -> representative
        got = {(int(rep[p]), int(rep[q])) for p, q in held}
        got = {(min(p, q), max(p, q)) for p, q in got}
        sub = full[cur][:, cur]
        i, j = torch.triu(sub > 0.4, 1).nonzero(as_tuple=True)
        want = {(min(p, q), max(p, q)) for p, q in zip(cur[i].tolist(), cur[j].tolist(),
                                                       strict=True)}
        assert want <= got, (step, len(want - got))
    ra, rb = cache.keys[cache.pa] // 7, cache.keys[cache.pb] // 7
    assert bool((ra != rb).all())  # no self-pair
    assert torch.allclose(cache.ps, full[ra, rb], atol=1e-6)


def test_unit_rows_of_a_few_representatives_are_those_of_all():
    # the search normalises only the representatives it has not seen; their unit vectors
    # must be the bits the temporal step computes from all of them
    from vistoken.compressors.scc_search import _unit_rows

    g = torch.Generator().manual_seed(8)
    v = torch.randn(400, 96, generator=g) * torch.logspace(-3, 3, 400).unsqueeze(1)
    full = normalize(v)
    for idx in ([7], [0, 399], list(range(3, 40, 3)), list(range(0, 400, 2))):
        assert torch.equal(_unit_rows(v[idx]), full[idx]), len(idx)


def test_every_node_sampled_is_every_size_fully_sampled():
    from vistoken.compressors.scc_official import every_node_sampled, sample_size

    for eps in (0.05, 0.2, 0.5, 0.6, 0.9, 1.0):
        for total in (1, 2, 3, 10, 100, 400, 3234, 3235, 5000):
            want = all(sample_size(n, eps) == n for n in range(2, total + 1))
            assert every_node_sampled(total, eps) == want, (eps, total)


def test_search_inside_a_fixed_partition_counts_like_a_pass():
    # When no spatial tree weight lies inside the bracket, the search takes the count at
    # every temporal event from the pair cache; those counts must be a pass's, and the
    # result the tau pass at the tau reported plus the settling rule.
    from vistoken.compressors import scc_search
    from vistoken.testing import prototype_video

    x = prototype_video(8, side=10, dim=64, k=24)
    xn = normalize(x)
    seen = []
    orig = scc_search._within

    def spy(count_at, lo, hi, budget):
        events = count_at.events(lo, hi)
        for ev in events[:: max(1, events.numel() // 6)].tolist():
            want = scc_structure(x, xn, ev).reps.shape[0]
            assert count_at.fixed_count(lo, ev) == want, (lo, ev)
        seen.append(events.numel())
        return orig(count_at, lo, hi, budget)

    scc_search._within = spy
    try:
        for r in (0.05, 0.1, 0.2, 0.35, 0.5):
            out = vt.compress(x, "scc", retention=r)
            assert out.num_tokens == math.ceil(r * 8 * 100)
            ref = scc_structure(x, xn, out.info["tau"])
            assert ref.reps.shape[0] - out.info["settled"] == out.num_tokens
    finally:
        scc_search._within = orig
    assert seen and max(seen) > 0  # the case arose, with events to search
