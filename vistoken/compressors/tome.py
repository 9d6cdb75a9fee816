"""ToMe: bipartite soft matching over the whole video, repeated until the budget.

Token Merging (Bolya et al., ICLR 2023; REFERENCE.md section 3) applied to all T*N tokens
at once, outside any model. Each round over the current sequence of m tokens:

1. set A = tokens at even positions of the current sequence, set B = odd positions;
2. each A token's best B partner by cosine similarity of the (current, merged) tokens
   themselves (ToMe uses attention keys, which bare tokens do not have); ties to the
   earlier B token;
3. the r = min(|A|, m - budget) A tokens with the highest best-partner similarity (ties:
   the earlier A token) are merged into their partners by size-weighted average;
4. merged A tokens leave the sequence; every other token keeps its relative order (B
   tokens stay in place, unlike ToMe's concatenation of unmerged A then B).

Each round removes up to half the tokens, so it takes O(log(T*N / budget)) rounds. A
merged token's value is the size-weighted mean of its parts, which is the plain mean of
every input token it covers; the output is computed that way, from the inputs.

Positions: the (t, h, w) of the token that survives every merge (the B token a group ends
in), followed through the rounds. info: "sizes" (input tokens per output, int64), "rounds".
Memory: the A x B similarity is taken in row blocks (ops.similarity.row_block).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Compressed, grid_positions, register
from ..ops import (
    finite_cast,
    normalize,
    row_block,
    segment_count,
    segment_mean,
    sum_scale,
    work_dtype,
)


def _best_partner(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """For unit rows a (p, D), b (q, D): the best cosine to b and its index, per row of a."""
    best = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    arg = torch.empty(a.shape[0], dtype=torch.int64, device=a.device)
    step = row_block(a.shape[0], b.shape[0])
    for r0 in range(0, a.shape[0], step):
        best[r0 : r0 + step], arg[r0 : r0 + step] = (a[r0 : r0 + step] @ b.T).max(dim=1)
    return best, arg


def tome_merge(x: Tensor, budget: int) -> tuple[Tensor, Tensor, int]:
    """Bipartite soft matching of the rows of x (n, D) down to ``budget`` groups.

    Returns (sources (n,) int64 group of every row, anchors (budget,) int64 row each group
    is anchored at, rounds).
    """
    n = x.shape[0]
    device = x.device
    acc = x.clone()  # size-weighted sums; their direction is that of the merged means
    sources = torch.arange(n, device=device)
    anchors = torch.arange(n, device=device)
    rounds = 0
    while acc.shape[0] > budget:
        m = acc.shape[0]
        xn = normalize(acc)
        a_pos = torch.arange(0, m, 2, device=device)
        b_pos = torch.arange(1, m, 2, device=device)
        best, partner = _best_partner(xn[a_pos], xn[b_pos])
        r = min(a_pos.numel(), m - budget)
        order = torch.sort(best, descending=True, stable=True).indices
        src = a_pos[order[:r]]
        dst = b_pos[partner[order[:r]]]
        acc.index_add_(0, dst, acc[src])
        keep = torch.ones(m, dtype=torch.bool, device=device)
        keep[src] = False
        new_index = torch.cumsum(keep, 0) - 1
        new_index[src] = new_index[dst]
        sources = new_index[sources]
        acc = acc[keep]
        anchors = anchors[keep]
        rounds += 1
    return sources, anchors, rounds


@register("tome", kind="merge")
def tome(x: Tensor, *, grid: tuple[int, int] | None, budget: int | None) -> Compressed:
    """ToMe bipartite soft matching over all T*N tokens until exactly ``budget`` remain.

    x: (T, N, D). Rounds of even/odd (A/B) matching by cosine, the most similar pairs merged
    by size-weighted average; the sequence order is kept (see the module docstring).
    """
    t, n, d = x.shape
    total = t * n
    xw = x.reshape(total, d).to(work_dtype(x.dtype))
    # the running sums and the means add at most T*N tokens: pre-scale by a power of two
    # when they could overflow (scale 1.0 for ordinary inputs); cosines are unchanged
    scale = sum_scale(float(xw.abs().amax()), total, xw.dtype)
    if scale != 1.0:
        xw = xw * scale
    sources, anchors, rounds = tome_merge(xw, budget)
    out = segment_mean(xw, sources, budget) / scale
    positions = grid_positions(t, grid, n, x.device)[anchors]
    info = {
        "method": "tome",
        "rounds": rounds,
        "sizes": segment_count(sources, budget),
    }
    return Compressed(finite_cast(out, x.dtype), sources, positions, info, anchors=anchors)
