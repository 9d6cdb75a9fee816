"""Connected components of thresholded cosine-similarity graphs, vectorised.

A graph over unit vectors x_1..x_n links i and j when x_i . x_j > tau (strict); the
diagonal is always an edge. Components are found by min-label propagation with hooking and
pointer jumping (Shiloach-Vishkin style): every round each node takes the smallest label in
its neighbourhood, hooks its root onto it, and then labels jump to their root until they
form stars. At the fixed point the label of every node is the smallest node index of its
component. There is no Python loop over nodes or edges; the number of rounds grows with the
logarithm of the component diameter in practice. Host synchronisation happens once per
round (the convergence test), never per frame or per node.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .similarity import BLOCK_ELEMENTS, row_block

# Above this many adjacency entries a single graph stores its rows as packed bits.
DENSE_ADJ_LIMIT = 1 << 26
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _pack(a: Tensor) -> Tensor:
    """(r, n) bool -> (r, ceil(n/8)) uint8, eight columns a byte."""
    r, n = a.shape
    pad = (-n) % 8
    if pad:
        a = torch.nn.functional.pad(a, (0, pad))
    bits = _BITS.to(a.device)
    return (a.view(r, -1, 8).to(torch.uint8) * bits).sum(-1, dtype=torch.uint8)


def _unpack(p: Tensor, n: int) -> Tensor:
    """(r, ceil(n/8)) uint8 -> (r, n) bool."""
    bits = _BITS.to(p.device)
    return (p.unsqueeze(-1) & bits).ne(0).view(p.shape[0], -1)[:, :n]


def _jump(labels: Tensor) -> Tensor:
    """Pointer jumping until every label points at a root (labels[labels] == labels)."""
    while True:
        nxt = labels.gather(-1, labels)
        if torch.equal(nxt, labels):
            return labels
        labels = nxt


def propagate(neighbor_min: Callable[[Tensor], Tensor], labels: Tensor) -> Tensor:
    """Run hooking + pointer jumping to the fixed point.

    Args:
        neighbor_min: maps labels (..., n) to the smallest label over each node's
            neighbourhood, itself included.
        labels: (..., n) int64 initial labels, labels[..., i] = i.
    Returns:
        (..., n) int64: the smallest node index of each node's component.
    """
    while True:
        m = neighbor_min(labels)
        hooked = labels.scatter_reduce(-1, labels, m, reduce="amin")
        new = _jump(torch.minimum(hooked, m))
        if torch.equal(new, labels):
            return labels
        labels = new


def sample_mask(
    batch: int, n: int, epsilon: float, generator: torch.Generator, device: torch.device
) -> Tensor | None:
    """The official SCC node sample: s = min(n, ceil(ln n / epsilon^2)) nodes per graph.

    Returns (batch, n) bool, or None when every node is sampled (then components are exact).
    """
    import math

    s = min(n, math.ceil(math.log(n) / epsilon**2)) if n > 1 else n
    if s >= n:
        return None
    keys = torch.rand(batch, n, generator=generator)
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return (ranks < s).to(device)


def threshold_adjacency(
    xn: Tensor, tau: float, sampled: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Adjacency of B small graphs at once.

    Args:
        xn: (B, n, D) unit vectors; tau: edge when similarity > tau.
        sampled: optional (B, n) bool; when given only edges touching a sampled node are
            kept for the components (official SCC sampling). Degrees use every edge.
    Returns:
        adj (B, n, n) bool with the diagonal set, degree (B, n) int64 (self-loop counted).
    """
    b, n, _ = xn.shape
    adj = torch.bmm(xn, xn.transpose(1, 2)) > tau
    adj.diagonal(dim1=1, dim2=2).fill_(True)
    degree = adj.sum(-1)
    if sampled is not None:
        adj &= sampled.unsqueeze(2) | sampled.unsqueeze(1)
    return adj, degree


def dense_components(adj: Tensor) -> Tensor:
    """Components of B graphs given as (B, n, n) bool adjacency -> (B, n) int64 labels."""
    b, n, _ = adj.shape
    big = torch.tensor(n, dtype=torch.int32, device=adj.device)

    def neighbor_min(labels: Tensor) -> Tensor:
        lab = labels.to(torch.int32).unsqueeze(1)
        return torch.where(adj, lab, big).amin(-1).long()

    init = torch.arange(n, device=adj.device).expand(b, n).contiguous()
    return propagate(neighbor_min, init)


class BlockGraph:
    """One thresholded cosine graph over n nodes, built in row blocks.

    The similarity matrix is never held whole: each row block of it is computed once,
    thresholded, and kept as bool rows (or packed bits when n*n > DENSE_ADJ_LIMIT), so the
    memory is n*n bytes (n*n/8 packed) plus one float block.

    Attributes:
        degree: (n,) int64 degree of every node, self-loop counted.
    """

    def __init__(self, xn: Tensor, tau: float, sampled: Tensor | None = None) -> None:
        n = xn.shape[0]
        self.n = n
        self.packed = n * n > DENSE_ADJ_LIMIT
        self.step = row_block(n, n, BLOCK_ELEMENTS // 2)
        self.rows: list[Tensor] = []
        self.degree = torch.empty(n, dtype=torch.long, device=xn.device)
        for r0 in range(0, n, self.step):
            r1 = min(n, r0 + self.step)
            a = (xn[r0:r1] @ xn.T) > tau
            a[:, r0:r1].diagonal().fill_(True)
            self.degree[r0:r1] = a.sum(1)
            if sampled is not None:
                a &= sampled[r0:r1].unsqueeze(1) | sampled.unsqueeze(0)
            self.rows.append(_pack(a) if self.packed else a)

    def neighbor_min(self, labels: Tensor) -> Tensor:
        """(n,) labels -> (n,) smallest label in each node's neighbourhood."""
        lab = labels.to(torch.int32)
        big = torch.tensor(self.n, dtype=torch.int32, device=labels.device)
        out = torch.empty_like(labels)
        for i, rows in enumerate(self.rows):
            a = _unpack(rows, self.n) if self.packed else rows
            r0 = i * self.step
            out[r0 : r0 + a.shape[0]] = torch.where(a, lab, big).amin(1)
        return out

    def components(self) -> Tensor:
        """(n,) int64: the smallest node index of each node's component."""
        init = torch.arange(self.n, device=self.degree.device)
        return propagate(self.neighbor_min, init)


def hub_order(labels: Tensor, degree: Tensor) -> tuple[Tensor, Tensor]:
    """Number components by their hub, as LLaVA-Scissor orders them.

    A component's hub is its member of largest degree, ties to the smallest index;
    components are numbered by ascending hub index.

    Args:
        labels: (n,) int64 component label of every node (a node index of the component).
        degree: (n,) int64 degree of every node.
    Returns:
        comp (n,) int64 in [0, K): the component number of every node;
        hubs (K,) int64: the hub node of every component, ascending.
    """
    n = labels.numel()
    idx = torch.arange(n, device=labels.device)
    key = degree * n + (n - 1 - idx)  # larger degree first, then smaller index
    best = torch.full((n,), -1, dtype=torch.long, device=labels.device)
    best = best.scatter_reduce(0, labels, key, reduce="amax")
    hub_of_node = (n - 1) - best[labels] % n
    is_hub = hub_of_node == idx
    rank = torch.cumsum(is_hub, 0) - 1
    return rank[hub_of_node], idx[is_hub]
