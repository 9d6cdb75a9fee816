"""LLaVA-Scissor: Semantic Connected Components (SCC), training-free.

The official algorithm (REFERENCE.md section 1), with exact connected components:

1. spatial step, per frame: cosine graph (edge when sim > tau, self-loops), connected
   components, each replaced by the unweighted mean of its members -> M1 tokens;
2. temporal step, once over all M1 representatives with the same tau -> M2 tokens;
3. final merge: every original token goes to its most similar representative k, and
   out_k = (rep_k + sum of its tokens) / (1 + count).

Components are emitted in hub order (the member of largest degree, ties to the smallest
index; components sorted by hub index), per frame in the spatial step and over the M1
sequence in the temporal step.

Why exact components by default: the official code samples s = ceil(ln n / epsilon^2)
nodes with an unseeded RNG and unions only edges that touch them. Below n = 3234 nodes
(epsilon = 0.05) that is every node, so exact components *are* the official result; above
it the official result is random and over-segmented. ``mode="official"`` reproduces the
sampling with a seeded generator, for matching published numbers. (The official read-out
of the union-find parent array, which silently drops a few nodes from their component's
mean, is not reproduced: every node contributes to its component.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import INT64_MAX, Compressed, choice_option, int_option, real_option, register
from ..ops import (
    BlockGraph,
    dense_components,
    finite_cast,
    hub_order,
    nearest,
    normalize,
    normalize_with_norm,
    row_block,
    segment_count,
    segment_mean,
    segment_sum,
    sum_scale,
    threshold_adjacency,
    work_dtype,
)
from ..ops.components import count_true, edge_components, sample_mask
from ..ops.similarity import BLOCK_ELEMENTS

DEFAULT_TAU = 0.9
DEFAULT_EPSILON = 0.05
MODES = ("exact", "official")
# Bisection of the tau search: at most this many steps, and never finer than the float32
# resolution of a cosine near 1 (6e-8): two taus closer than that select the same edges.
_SEARCH_STEPS = 40
_SEARCH_TOL = 5e-8


@dataclass(frozen=True)
class SCCStructure:
    """What the spatial and temporal steps produce for one tau (before the final merge).

    reps: (M2, D) temporal representatives (work dtype); anchors: (M2,) int64 input-token
    index each stands for (hub of hub); support: (M2,) int64 input tokens each covers;
    spatial_tokens: M1.
    """

    reps: Tensor
    anchors: Tensor
    support: Tensor
    spatial_tokens: int


def spatial_step(
    x: Tensor, xn: Tensor, tau: float, sampled_fn=None, sims: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame components, batched over frames.

    Args:
        x: (T, N, D) tokens (work dtype); xn: the same, unit-normalised.
        sampled_fn: optional callable (frames, N) -> (frames, N) bool node sample.
        sims: optional (T, N, N) per-frame similarities ``frame_similarities(xn)``, reused
            across taus by the tau search (thresholding them is what the matmul would give).
    Returns:
        comp (T*N,) int64 spatial component of every token, frame-major numbering;
        hubs (M1,) int64 global token index of every component's hub, ascending;
        reps (M1, D) unweighted component means.
    """
    t, n, d = x.shape
    chunk = max(1, BLOCK_ELEMENTS // (n * n))
    labels, degrees = [], []
    for t0 in range(0, t, chunk):
        xs = xn[t0 : t0 + chunk]
        sampled = sampled_fn(xs.shape[0], n) if sampled_fn is not None else None
        if sims is None:
            adj, degree = threshold_adjacency(xs, tau, sampled)
        else:
            adj = sims[t0 : t0 + chunk] > tau
            adj.diagonal(dim1=1, dim2=2).fill_(True)
            degree = count_true(adj, -1)
        offset = torch.arange(t0, t0 + xs.shape[0], device=x.device).unsqueeze(1) * n
        labels.append(dense_components(adj) + offset)
        degrees.append(degree)
    comp, hubs = hub_order(torch.cat(labels).flatten(), torch.cat(degrees).flatten())
    reps = segment_mean(x.reshape(t * n, d), comp, hubs.numel())
    return comp, hubs, reps


def frame_similarities(xn: Tensor) -> Tensor | None:
    """(T, N, N) per-frame cosine similarities, computed with the same batched matmuls as
    ``spatial_step`` (so thresholding them gives its adjacency bit for bit), or None when
    they exceed BLOCK_ELEMENTS."""
    t, n, _ = xn.shape
    if t * n * n > BLOCK_ELEMENTS:
        return None
    chunk = max(1, BLOCK_ELEMENTS // (n * n))
    return torch.cat([torch.bmm(xs, xs.transpose(1, 2)) for xs in xn.split(chunk)])


def temporal_step(reps: Tensor, tau: float, sampled: Tensor | None = None):
    """Components over the M1 spatial representatives -> comp (M1,), hubs (M2,), reps (M2, D)."""
    graph = BlockGraph(normalize(reps), tau, sampled)
    comp, hubs = hub_order(graph.components(), graph.degree)
    return comp, hubs, segment_mean(reps, comp, hubs.numel())


def scc_structure(
    x: Tensor,
    xn: Tensor,
    tau: float,
    mode: str = "exact",
    epsilon: float = DEFAULT_EPSILON,
    seed: int = 0,
) -> SCCStructure:
    """Spatial then temporal step for one tau. x, xn: (T, N, D) work dtype."""
    sampled_fn = None
    gen = None
    if mode == "official":
        gen = torch.Generator().manual_seed(seed)

        def sampled_fn(b: int, n: int) -> Tensor | None:
            return sample_mask(b, n, epsilon, gen, x.device)

    comp1, hubs1, reps1 = spatial_step(x, xn, tau, sampled_fn)
    m1 = hubs1.numel()
    sampled = sampled_fn(1, m1) if sampled_fn is not None else None
    comp2, hubs2, reps2 = temporal_step(reps1, tau, None if sampled is None else sampled[0])
    size1 = segment_count(comp1, m1)
    support = segment_sum(size1.unsqueeze(1), comp2, hubs2.numel()).squeeze(1)
    return SCCStructure(reps2, hubs1[hubs2], support, m1)


# The tau search reuses the token-pair similarities above its bracket's lower end when
# they fit in this many pairs (12 bytes each); above it every step recomputes.
_PAIR_CACHE_LIMIT = 1 << 22
# Matmuls of the search keep at least this many rows, so that the BLAS takes the same
# kernel as the full-size tiles of BlockGraph (tiny shapes may round differently).
_MIN_ROWS = 16


def _row_tiles(n: int, step: int) -> list[tuple[int, int]]:
    """[r0, r1) row tiles of ``step`` rows over n, the last merged when below _MIN_ROWS."""
    bounds = list(range(0, n, step)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < _MIN_ROWS:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class _TokenPairs:
    """Every token pair (i < j, over all frames) with cosine > floor, as sorted-free lists.

    A temporal representative that is a single token is that token's unit vector, so the
    temporal similarity of two singleton representatives is the token pair's entry here
    (the same matmul element). ``build`` returns None when the pairs exceed the limit.
    """

    def __init__(self, rows: Tensor, cols: Tensor, sims: Tensor, floor: float) -> None:
        self.rows, self.cols, self.sims, self.floor = rows, cols, sims, floor
        self.n_tokens = 0

    @classmethod
    def build(cls, xf: Tensor, floor: float, limit: int) -> _TokenPairs | None:
        n = xf.shape[0]
        step = min(row_block(n, n, BLOCK_ELEMENTS // 2), max(256, -(-n // 16)))
        rows, cols, sims, kept = [], [], [], 0
        for r0, r1 in _row_tiles(n, step):
            s = xf[r0:r1] @ xf[r0:].T
            a = s > floor
            a[:, : r1 - r0].triu_(1)
            i, j = a.nonzero(as_tuple=True)
            kept += i.numel()
            if kept > limit:
                return None
            sims.append(s[i, j])
            rows.append((i + r0).to(torch.int32))
            cols.append((j + r0).to(torch.int32))
        pairs = cls(torch.cat(rows), torch.cat(cols), torch.cat(sims), floor)
        pairs.n_tokens = n
        return pairs


def _temporal_from_pairs(reps: Tensor, single_token: Tensor, tau: float, pairs: _TokenPairs):
    """``temporal_step`` with the singleton-singleton similarities read from ``pairs``.

    single_token: (M1,) int64 the token of every singleton representative, -1 for the
    others. Only the rows of the multi-token
    representatives are multiplied (against all representatives).
    """
    m1 = reps.shape[0]
    dev = reps.device
    rn = normalize(reps)
    single = single_token >= 0
    rep_of_token = torch.full((int(pairs.n_tokens),), -1, dtype=torch.long, device=dev)
    rep_of_token[single_token[single]] = torch.arange(m1, device=dev)[single]
    sel = pairs.sims > tau
    ri = rep_of_token[pairs.rows[sel].long()]
    rj = rep_of_token[pairs.cols[sel].long()]
    both = (ri >= 0) & (rj >= 0)
    edges_i, edges_j = [ri[both]], [rj[both]]
    multi = (~single).nonzero().squeeze(1)
    if multi.numel():
        step = max(_MIN_ROWS, row_block(multi.numel(), m1))
        for c0 in range(0, multi.numel(), step):
            rows = multi[c0 : c0 + step]
            k = rows.numel()
            if k < _MIN_ROWS:
                rows_p = torch.cat((rows, rows.new_zeros(_MIN_ROWS - k)))
                s = (rn[rows_p] @ rn.T)[:k]
            else:
                s = rn[rows] @ rn.T
            a = s > tau
            cols = torch.arange(m1, device=dev)
            # each edge once: against a singleton, or a later multi-token representative
            a &= single.unsqueeze(0) | (cols.unsqueeze(0) > rows.unsqueeze(1))
            i, j = a.nonzero(as_tuple=True)
            edges_i.append(rows[i])
            edges_j.append(j)
    ei, ej = torch.cat(edges_i), torch.cat(edges_j)
    degree = 1 + torch.bincount(ei, minlength=m1) + torch.bincount(ej, minlength=m1)
    comp, hubs = hub_order(edge_components(m1, ei, ej), degree)
    return comp, hubs, segment_mean(reps, comp, hubs.numel())


class _SearchCounter:
    """count_at for the exact-mode tau search: the per-frame similarities are computed once,
    and once the bracket's lower end makes them few, the token pairs above it too; each
    step then multiplies only the multi-token representatives. Results are those of
    ``scc_structure`` (the same matmul elements are thresholded)."""

    def __init__(self, xw: Tensor, xn: Tensor) -> None:
        self.xw, self.xn = xw, xn
        self.sims = frame_similarities(xn)
        self.pairs: _TokenPairs | None = None
        self.tried_floor = -math.inf

    def _pairs_for(self, lo: float, m1: int) -> _TokenPairs | None:
        t, n, d = self.xn.shape
        total = t * n
        # Building the cache costs about one (total x total) similarity product, as much as
        # one temporal step at M1 ~ total; it pays off only when most representatives are
        # single tokens (M1 >= 85% of the tokens: measured on real video features, a lower
        # gate made the ~10% retention search slower).
        if self.pairs is not None or self.sims is None or m1 < max(total * 17 // 20, _MIN_ROWS):
            return self.pairs
        if lo <= self.tried_floor:
            return None
        # estimate from the per-frame pairs (the diagonal excluded)
        within = (count_true(self.sims > lo) - t * n) / max(1, t * n * (n - 1))
        if float(within) * total * (total - 1) / 2 > _PAIR_CACHE_LIMIT:
            return None
        self.tried_floor = lo
        self.pairs = _TokenPairs.build(self.xn.reshape(total, d), lo, _PAIR_CACHE_LIMIT)
        return self.pairs

    def __call__(self, tau: float, lo: float) -> tuple[int, SCCStructure]:
        xw, xn = self.xw, self.xn
        comp1, hubs1, reps1 = spatial_step(xw, xn, tau, sims=self.sims)
        m1 = hubs1.numel()
        size1 = segment_count(comp1, m1)
        pairs = self._pairs_for(lo, m1)
        if pairs is not None and tau >= pairs.floor:
            single_token = torch.where(size1 == 1, hubs1, -1)
            comp2, hubs2, reps2 = _temporal_from_pairs(reps1, single_token, tau, pairs)
        else:
            comp2, hubs2, reps2 = temporal_step(reps1, tau)
        support = segment_sum(size1.unsqueeze(1), comp2, hubs2.numel()).squeeze(1)
        st = SCCStructure(reps2, hubs1[hubs2], support, m1)
        return hubs2.numel(), st


def final_merge(x: Tensor, xn: Tensor, reps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fold every original token into its most similar representative.

    Args:
        x, xn: (T*N, D) tokens and their unit vectors; reps: (K, D).
    Returns:
        out (K, D) = (rep_k + sum_{i -> k} x_i) / (1 + |{i -> k}|), assign (T*N,), counts (K,).
    """
    k = reps.shape[0]
    assign = nearest(xn, normalize(reps))
    counts = segment_count(assign, k)
    out = (reps + segment_sum(x, assign, k)) / (1 + counts).to(reps.dtype).unsqueeze(1)
    return out, assign, counts


def _search_tau(count_at, budget: int, total: int):
    """Search the tau whose component count is at least ``budget`` and close to it.

    count_at(tau, lo) -> (count, state), lo the bracket's lower end. The count at
    tau = -1.0001 is 1 (every cosine is larger) and at 1.0001 it is T*N (no edge but
    self-loops), so the bracket is valid.
    Each step interpolates the bracket in log(count) (clamped to its inner 80%), and
    bisects when the same end moved twice in a row. It stops at a count in
    [budget, budget + budget // 50] (the rest is settled by the caller), when the bracket
    is narrower than float32 cosine resolution, or after _SEARCH_STEPS steps.
    Returns (tau, count, state) at the upper end of the final bracket.
    """
    slack = budget // 50
    lo, c_lo = -1.0001, 1
    hi, c_hi, hi_state = 1.0001, total, None
    last = []
    for _ in range(_SEARCH_STEPS):
        if hi - lo < _SEARCH_TOL:
            break
        if len(last) >= 2 and last[-1] == last[-2]:
            f = 0.5
        else:
            f = (math.log(budget) - math.log(c_lo)) / (math.log(c_hi) - math.log(c_lo))
            f = min(max(f, 0.1), 0.9)
        mid = lo + f * (hi - lo)
        count, state = count_at(mid, lo)
        if count >= budget:
            hi, c_hi, hi_state = mid, count, state
            last.append("hi")
            if count <= budget + slack:
                break
        else:
            lo, c_lo = mid, count
            last.append("lo")
    if hi_state is None:
        c_hi, hi_state = count_at(hi, lo)
    return hi, c_hi, hi_state


@register(
    "scc",
    kind="merge",
    needs_budget=False,
    options=(
        real_option(
            "tau",
            None,
            math.isfinite,
            "a finite number (a cosine threshold)",
            f"similarity threshold, instead of retention (adaptive count; {DEFAULT_TAU} "
            "when neither is given)",
            excludes_retention=True,
        ),
        choice_option("mode", "exact", MODES, "exact components, or the official sampling"),
        real_option(
            "epsilon",
            DEFAULT_EPSILON,
            lambda v: 0 < v <= 1,
            "a number in (0, 1]",
            "official mode: sampling error (s = ceil(ln n / eps^2) nodes)",
        ),
        int_option("seed", 0, 0, INT64_MAX, "official mode: sampling seed"),
    ),
)
def scc(
    x: Tensor,
    *,
    grid: tuple[int, int] | None,
    budget: int | None,
    tau: float | None = None,
    mode: str = "exact",
    epsilon: float = DEFAULT_EPSILON,
    seed: int = 0,
) -> Compressed:
    """LLaVA-Scissor semantic connected components (spatial, temporal, final merge).

    x: (T, N, D). With ``budget`` the output has exactly that many tokens: tau is found by
    bisection (the smallest component count >= budget), then the representatives covering
    the fewest input tokens (ties: the later one) are dropped before the final merge, so
    their tokens fold into the nearest survivor. Otherwise tau (default 0.9) sets the count.
    """
    t, n, d = x.shape
    total = t * n
    xw = x.to(work_dtype(x.dtype))
    xn, norms = normalize_with_norm(xw)
    # Every mean below sums at most total + 1 values: pre-scale by a power of two when such
    # sums could overflow (never for ordinary inputs: scale 1.0). Cosines are unchanged.
    scale = sum_scale(float(norms.max()), total + 1, xw.dtype)
    if scale != 1.0:
        xw = xw * scale

    def structure(tau_: float) -> SCCStructure:
        return scc_structure(xw, xn, tau_, mode, epsilon, seed)

    settled = 0
    if budget is None:
        tau = DEFAULT_TAU if tau is None else tau
        st = structure(tau)
        keep = None
    else:
        if mode == "exact":
            count_at = _SearchCounter(xw, xn)
        else:

            def count_at(v: float, lo: float) -> tuple[int, SCCStructure]:
                s = structure(v)
                return s.reps.shape[0], s

        tau, count, st = _search_tau(count_at, budget, total)
        settled = count - budget
        keep = None
        if settled > 0:
            m2 = count
            idx = torch.arange(m2, device=x.device)
            key = st.support * m2 + (m2 - 1 - idx)  # more support first, then smaller index
            keep = key.topk(budget).indices.sort().values
    reps, anchors = st.reps, st.anchors
    if keep is not None:
        reps, anchors = reps[keep], anchors[keep]
    out, assign, counts = final_merge(xw.reshape(total, d), xn.reshape(total, d), reps)
    if scale != 1.0:
        out = out / scale
    h, w = grid if grid is not None else (1, n)
    within = anchors % n
    positions = torch.stack((anchors // n, within // w, within % w), dim=1)
    info = {
        "method": "scc",
        "mode": mode,
        "tau": float(tau),
        "spatial_tokens": st.spatial_tokens,
        "temporal_tokens": int(st.reps.shape[0]),
        "settled": int(settled),
        "sizes": counts,
    }
    if mode == "official":
        info.update(epsilon=epsilon, seed=seed)
    return Compressed(finite_cast(out, x.dtype), assign, positions, info)
