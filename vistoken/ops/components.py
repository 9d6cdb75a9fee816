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

# Above this many adjacency entries a single graph stores its dense tiles as packed bits.
DENSE_ADJ_LIMIT = 1 << 26
_BITS: dict[torch.device, Tensor] = {}


def _bits(device: torch.device) -> Tensor:
    """The eight bit masks on ``device`` (made once per device, no copy per call)."""
    if device not in _BITS:
        _BITS[device] = torch.tensor(
            [1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device
        )
    return _BITS[device]


def _pack(a: Tensor) -> Tensor:
    """(r, n) bool -> (r, ceil(n/8)) uint8, eight columns a byte."""
    r, n = a.shape
    pad = (-n) % 8
    if pad:
        a = torch.nn.functional.pad(a, (0, pad))
    bits = _bits(a.device)
    return (a.view(r, -1, 8).to(torch.uint8) * bits).sum(-1, dtype=torch.uint8)


def _unpack(p: Tensor, n: int) -> Tensor:
    """(r, ceil(n/8)) uint8 -> (r, n) bool."""
    bits = _bits(p.device)
    return (p.unsqueeze(-1) & bits).ne(0).view(p.shape[0], -1)[:, :n]


def count_true(a: Tensor, dim: int | None = None) -> Tensor:
    """Number of True entries of a bool tensor along ``dim`` (all when None), as int64.

    Summing the bool bytes as uint8 into int32 is an order of magnitude faster on the CPU
    than ``a.sum()`` on bool.
    """
    u = a.view(torch.uint8)
    if dim is None:
        return u.sum(dtype=torch.int64)
    return u.sum(dim, dtype=torch.int32).long()


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
    degree = count_true(adj, -1)
    if sampled is not None:
        adj &= sampled.unsqueeze(2) | sampled.unsqueeze(1)
    return adj, degree


def dense_components(adj: Tensor) -> Tensor:
    """Components of B graphs given as (B, n, n) bool adjacency -> (B, n) int64 labels."""
    b, n, _ = adj.shape

    def neighbor_min(labels: Tensor) -> Tensor:
        lab = labels.to(torch.int32).unsqueeze(1)
        return torch.where(adj, lab, n).amin(-1).long()

    init = torch.arange(n, device=adj.device).expand(b, n).contiguous()
    return propagate(neighbor_min, init)


class BlockGraph:
    """One thresholded cosine graph over n nodes, built tile by tile.

    The similarity matrix is never held whole and only its upper triangle is computed
    (it is symmetric): row block [r0, r1) against columns [r0, n), thresholded, and kept
    as the tile's edge list when the tile is sparse, else as bool rows (packed bits when
    n*n > DENSE_ADJ_LIMIT). Memory is at most n*n/2 bytes (n*n/16 packed) plus one float
    tile, and usually far less: thresholded graphs at useful taus are sparse.

    Attributes:
        degree: (n,) int64 degree of every node, self-loop counted (all edges, also in
            sampled mode).
    """

    def __init__(self, xn: Tensor, tau: float, sampled: Tensor | None = None) -> None:
        n = xn.shape[0]
        dev = xn.device
        self.n = n
        self.packed = n * n > DENSE_ADJ_LIMIT
        # Row blocks of at most n/16 rows (and 256 at least), so that the computed upper
        # triangle is close to half the matrix.
        self.step = min(row_block(n, n, BLOCK_ELEMENTS // 2), max(256, -(-n // 16)))
        self.tiles: list[tuple[int, int, Tensor, Tensor | None]] = []
        degree = torch.ones(n, dtype=torch.long, device=dev)
        for r0 in range(0, n, self.step):
            r1 = min(n, r0 + self.step)
            a = (xn[r0:r1] @ xn[r0:].T) > tau
            a[:, : r1 - r0].triu_(1)  # strict upper triangle: each edge once, no self-loop
            if sampled is None:
                row_count = count_true(a, 1)
            else:
                degree[r0:r1] += count_true(a, 1)
                degree[r0:] += count_true(a, 0)
                a &= sampled[r0:r1].unsqueeze(1) | sampled[r0:].unsqueeze(0)
                row_count = count_true(a, 1)
            if int(row_count.sum()) * 16 <= a.numel() // 8:  # edges smaller than bits
                rows, cols = a.nonzero(as_tuple=True)
                rows, cols = rows + r0, cols + r0
                self.tiles.append((r0, r1, rows, cols))
                if sampled is None:
                    degree[r0:r1] += row_count
                    degree += torch.bincount(cols, minlength=n)
            else:
                if sampled is None:
                    degree[r0:r1] += row_count
                    degree[r0:] += count_true(a, 0)
                self.tiles.append((r0, r1, _pack(a) if self.packed else a, None))
        self.degree = degree

    def neighbor_min(self, labels: Tensor) -> Tensor:
        """(n,) labels -> (n,) smallest label over each node's neighbourhood and itself."""
        out = labels.clone()
        lab32 = labels.to(torch.int32)
        big = self.n
        for r0, r1, a, cols in self.tiles:
            if cols is not None:  # edge list: a holds the rows
                edge_min_(out, labels, a, cols)
                continue
            if self.packed:
                a = _unpack(a, self.n - r0)
            row_min = torch.where(a, lab32[r0:], big).amin(1)
            col_min = torch.where(a, lab32[r0:r1].unsqueeze(1), big).amin(0)
            out[r0:r1] = torch.minimum(out[r0:r1], row_min.long())
            out[r0:] = torch.minimum(out[r0:], col_min.long())
        return out

    def components(self) -> Tensor:
        """(n,) int64: the smallest node index of each node's component."""
        init = torch.arange(self.n, device=self.degree.device)
        return propagate(self.neighbor_min, init)


def edge_min_(out: Tensor, labels: Tensor, ei: Tensor, ej: Tensor) -> Tensor:
    """In place: out[i] = min(out[i], labels[j]) and out[j] = min(out[j], labels[i]) over the
    undirected edges (ei[k], ej[k])."""
    out.scatter_reduce_(0, ei, labels[ej], reduce="amin")
    return out.scatter_reduce_(0, ej, labels[ei], reduce="amin")


def edge_components(n: int, ei: Tensor, ej: Tensor) -> Tensor:
    """(n,) int64: the smallest node index of each node's component, for an undirected
    edge list (ei, ej) over nodes 0..n-1."""
    init = torch.arange(n, device=ei.device)
    return propagate(lambda labels: edge_min_(labels.clone(), labels, ei, ej), init)


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


def spanning_forest(sims: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A maximum spanning tree of each of B complete graphs (single linkage), batched.

    Args:
        sims: (B, n, n) symmetric edge weights (cosine similarities), finite.
    Returns:
        (ei, ej, w): the B * (n - 1) tree edges as flat node indices b * n + i (ei < ej)
        and their weights. The graph thresholded at tau (edge when weight > tau) has the
        components of the tree edges of weight > tau, for every tau at once (true of every
        maximum spanning tree, whatever tree ties pick); graph b has
        n - #(b's tree weights > tau) components.

    Prim's algorithm, the B graphs in step: n - 1 rounds, each adding to every tree the
    outside node of heaviest link to it (ties: the smallest index) and relaxing the links
    with that node's row; (B, n) work a round and no host synchronisation. Tree nodes carry
    -inf (in the keys, and added to every relaxed row), so a round is eight small ops and a
    node's parent never changes once it is in the tree (read once at the end).
    """
    b, n, _ = sims.shape
    dev = sims.device
    if n < 2:
        ei = torch.empty(0, dtype=torch.long, device=dev)
        return ei, ei, sims.new_empty(0)
    flat = sims.reshape(b * n, n)
    base = torch.arange(b, device=dev) * n
    neg = torch.zeros(b, n, dtype=sims.dtype, device=dev)  # -inf once in the tree
    neg[:, 0] = -torch.inf
    key = flat[base] + neg  # heaviest link of every outside node to the tree so far
    parent = torch.zeros(b, n, dtype=torch.long, device=dev)
    us = torch.empty(b, n - 1, dtype=torch.long, device=dev)
    neg_flat, key_flat = neg.view(-1), key.view(-1)
    for k in range(n - 1):
        u = key.argmax(1)
        us[:, k] = u
        at = base + u
        neg_flat[at] = -torch.inf
        key_flat[at] = -torch.inf
        link = flat[at] + neg
        better = link > key
        torch.maximum(key, link, out=key)
        parent = torch.where(better, u.unsqueeze(1), parent)
    p = parent.gather(1, us)  # (B, n - 1)
    start = base.unsqueeze(1)
    ei = (start + torch.minimum(us, p)).flatten()
    ej = (start + torch.maximum(us, p)).flatten()
    return ei, ej, sims.view(-1)[(ei // n) * n * n + (ei % n) * n + ej % n]
