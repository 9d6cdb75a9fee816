"""The tau search of SCC's retention mode, and what makes it fast.

``vt.compress(x, "scc", retention=r)`` needs the tau whose component count is at least the
budget K and close to it. :func:`search_tau` brackets tau (interpolating in log(count),
bisecting when one end moves twice) and calls a counter at every step; in exact mode the
counter is :class:`SearchCounter`, which gives the structure ``scc_structure`` builds at
that tau, bit for bit, with less work:

- the per-frame similarities (T, N, N) are computed once (:func:`frame_similarities`) and
  thresholded at every step instead of multiplied again;
- once the bracket's lower end makes them few, every token pair above it is cached
  (:class:`_TokenPairs`): a temporal representative that is a single token is that token's
  unit vector, so edges between two such representatives are read from the cache and only
  the rows of the multi-token representatives are multiplied.

Search state lives in the counter object (one per call), never in module globals.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..ops import hub_order, normalize, row_block, segment_count, segment_mean, segment_sum
from ..ops.components import count_true, edge_components
from ..ops.similarity import BLOCK_ELEMENTS
from .scc import SCCStructure, spatial_step, temporal_step

__all__ = ["SearchCounter", "frame_similarities", "search_tau"]

# Bisection of the tau search: at most this many steps, and never finer than the float32
# resolution of a cosine near 1 (6e-8): two taus closer than that select the same edges.
_SEARCH_STEPS = 40
_SEARCH_TOL = 5e-8


def frame_similarities(xn: Tensor) -> Tensor | None:
    """(T, N, N) per-frame cosine similarities, computed with the same batched matmuls as
    ``spatial_step`` (so thresholding them gives its adjacency bit for bit), or None when
    they exceed BLOCK_ELEMENTS."""
    t, n, _ = xn.shape
    if t * n * n > BLOCK_ELEMENTS:
        return None
    chunk = max(1, BLOCK_ELEMENTS // (n * n))
    return torch.cat([torch.bmm(xs, xs.transpose(1, 2)) for xs in xn.split(chunk)])


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


class SearchCounter:
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


def search_tau(count_at, budget: int, total: int):
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
