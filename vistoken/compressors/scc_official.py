"""SCC's official mode: the published code's node sampling and membership read-out, replayed.

The official ``approximate_components`` (REFERENCE.md section 1) samples
s = min(n, ceil(ln n / epsilon^2)) nodes of every graph with numpy's global random stream,
one draw per graph: one per frame in frame order (spatial step), then one for the temporal
graph. The draw is ``choice(n, s, replace=False)``, which consumes a permutation of n even
when s = n (so the frames' draws move the stream the temporal draw reads). Only edges
touching a sampled node are unioned. :class:`OfficialSampler` replays those draws from a
``numpy.random.RandomState(seed)``, which is the stream ``numpy.random.seed(seed)`` gives the
global functions.

Membership read-out (``readout``):

- ``"find"`` (default): every node belongs to its component (what a union-find ``find``
  gives); components are the exact components of the sampled edge set, computed on the
  device like exact mode.
- ``"parent"``: the official read-out of the raw union-find parent array. The union-find
  (union by rank, path halving in ``find``) is replayed edge by edge in the official order
  (node i ascending, then its sampled neighbours j ascending, self-loop included); a
  component is a root r (parent[r] == r) with the nodes whose parent entry is r. A node
  whose parent is not a root belongs to no component: it is left out of its component's
  mean and of the hub choice (which can change the hub, and so the order). This replay is
  sequential, one Python step per edge, as slow as the official code; it is an opt-in for
  reproducing published runs, never the default.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def sample_size(n: int, epsilon: float) -> int:
    """The official sample size s = min(n, ceil(ln n / epsilon^2)) (0 for n <= 1)."""
    if n <= 1:
        return 0
    eps2 = epsilon * epsilon
    raw = math.log(n) / eps2 if eps2 > 0 else math.inf
    return n if raw >= n else math.ceil(raw)


def every_node_sampled(total: int, epsilon: float) -> bool:
    """Whether every graph of at most ``total`` nodes has all its nodes sampled (s = n).
    ln(n) / n falls on both sides of its peak at n = e, so checking n = 2 and n = total
    covers every size in between."""
    return total < 2 or all(sample_size(n, epsilon) == n for n in (2, total))


class OfficialSampler:
    """The official code's node samples, drawn from numpy's stream in its order.

    ``frames(b, n)`` draws b per-frame samples in order -> (b, n) bool, or None when every
    node is sampled (the draws are made anyway: they move the stream); ``graph(n)`` draws
    one sample -> (n,) bool or None. ``indices`` keeps the raw index draws (for tests).
    """

    def __init__(self, seed: int, epsilon: float, device: torch.device) -> None:
        self.rng = np.random.RandomState(seed % (2**32))
        self.epsilon = epsilon
        self.device = device
        self.indices: list[np.ndarray] = []

    def _draw(self, n: int) -> np.ndarray:
        s = sample_size(n, self.epsilon)
        idx = self.rng.choice(n, s, replace=False) if n > 0 else np.empty(0, dtype=np.int64)
        self.indices.append(idx)
        return idx

    def frames(self, b: int, n: int) -> Tensor | None:
        masks = np.zeros((b, n), dtype=bool)
        for f in range(b):  # one draw per frame, in order: the stream is sequential
            masks[f, self._draw(n)] = True
        if masks.all():
            return None
        return torch.from_numpy(masks).to(self.device)

    def graph(self, n: int) -> Tensor | None:
        return self.frames(1, n)


def parent_readout(adj: np.ndarray, sampled: np.ndarray | None) -> np.ndarray:
    """The official union-find over one graph, read from its raw parent array.

    Args:
        adj: (n, n) bool adjacency (diagonal set); sampled: (n,) bool or None (all).
    Returns:
        (n,) int64: the root of each node's component, or -1 for a node the read-out
        drops (its parent entry is not a root).
    """
    n = adj.shape[0]
    parent = np.arange(n)
    rank = np.zeros(n, dtype=np.int64)
    cols = adj if sampled is None else adj & sampled[None, :]
    ii, jj = np.nonzero(cols)  # row-major: i ascending, then j ascending
    par = parent.tolist()
    rk = rank.tolist()
    for a, b in zip(ii.tolist(), jj.tolist(), strict=True):
        while par[a] != a:  # find(a) with path halving
            par[a] = par[par[a]]
            a = par[a]
        while par[b] != b:
            par[b] = par[par[b]]
            b = par[b]
        if a == b:
            continue
        if rk[a] < rk[b]:
            par[a] = b
        else:
            par[b] = a
            if rk[a] == rk[b]:
                rk[a] += 1
    p = np.asarray(par, dtype=np.int64)
    is_root = p == np.arange(n)
    return np.where(is_root[p], p, -1)


def parent_components(adj: Tensor, sampled: Tensor | None) -> Tensor:
    """:func:`parent_readout` over B graphs: adj (B, n, n) bool, sampled (B, n) bool or
    None -> (B, n) int64 within-graph root label, -1 where the read-out drops the node."""
    a = adj.cpu().numpy()
    s = None if sampled is None else sampled.cpu().numpy()
    out = np.stack([parent_readout(a[f], None if s is None else s[f]) for f in range(a.shape[0])])
    return torch.from_numpy(out).to(adj.device)


def _parent_step(x: Tensor, labels: Tensor, degree: Tensor):
    """Components from a parent read-out: labels (n,) global root or -1 (dropped), degree
    (n,) -> comp (n,) int64 (-1 dropped), hubs (M,) int64 ascending, reps (M, D) means of
    the kept members."""
    from ..ops import hub_order, segment_mean

    kept = (labels >= 0).nonzero().squeeze(1)
    sub_comp, sub_hubs = hub_order(
        torch.searchsorted(kept, labels[kept]), degree[kept]
    )  # labels are roots, kept themselves: relabel them to positions in ``kept``
    comp = torch.full_like(labels, -1)
    comp[kept] = sub_comp
    reps = segment_mean(x[kept], sub_comp, sub_hubs.numel())
    return comp, kept[sub_hubs], reps


def official_structure(
    x: Tensor, xn: Tensor, tau: float, epsilon: float, seed: int, readout: str = "find",
    unit=None,
):
    """The spatial and temporal steps of the official code at one tau -> ``SCCStructure``.

    x: (T, N, D) work dtype; xn: its unit vectors (work dtype, or the input's with
    ``similarity="input"``, then ``unit`` makes the representatives' ones the same way).
    Samples are drawn with numpy's stream from ``seed`` (:class:`OfficialSampler`)."""
    from ..ops import normalize, row_block, segment_count, segment_sum, threshold_adjacency
    from ..ops.components import count_true
    from .scc import SCCStructure, spatial_step, temporal_step

    unit = normalize if unit is None else unit
    t, n, d = x.shape
    sampler = OfficialSampler(seed, epsilon, x.device)
    if readout == "find":
        comp1, hubs1, reps1 = spatial_step(x, xn, tau, sampler.frames)
        m1 = hubs1.numel()
        comp2, hubs2, reps2 = temporal_step(reps1, tau, _row(sampler.graph(m1)), unit)
        size1 = segment_count(comp1, m1)
    else:
        sampled = sampler.frames(t, n)
        adj, degree = threshold_adjacency(xn, tau, sampled)
        roots = parent_components(adj, sampled)
        offset = (torch.arange(t, device=x.device) * n).unsqueeze(1)
        labels = torch.where(roots >= 0, roots + offset, -1).flatten()
        comp1, hubs1, reps1 = _parent_step(x.reshape(t * n, d), labels, degree.flatten())
        m1 = hubs1.numel()
        sampled2 = _row(sampler.graph(m1))
        rn = unit(reps1)
        step = row_block(m1, m1)
        adj2 = torch.cat([(rn[r0 : r0 + step] @ rn.T) > tau for r0 in range(0, m1, step)])
        adj2.diagonal().fill_(True)
        degree2 = count_true(adj2, 1)  # every edge, as the official code counts
        roots2 = parent_components(adj2.unsqueeze(0), None if sampled2 is None else sampled2[None])
        comp2, hubs2, reps2 = _parent_step(reps1, roots2[0], degree2)
        size1 = segment_count(comp1[comp1 >= 0], m1)
        # dropped representatives cover nothing; dropped tokens count nowhere
        keep2 = comp2 >= 0
        support = segment_sum(size1[keep2].unsqueeze(1), comp2[keep2], hubs2.numel()).squeeze(1)
        return SCCStructure(reps2, hubs1[hubs2], support, m1)
    support = segment_sum(size1.unsqueeze(1), comp2, hubs2.numel()).squeeze(1)
    return SCCStructure(reps2, hubs1[hubs2], support, m1)


def _row(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask[0]
