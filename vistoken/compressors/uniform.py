"""Uniform (strided) selection: evenly spaced tokens over time and over each frame's grid.

The plain-downsampling baseline. Deterministic, no options.

Rules:
* over time, frame t keeps k_t = floor((t+1) B / T) - floor(t B / T) tokens (B the budget):
  the counts differ by at most one and the frames that get the extra token are themselves
  evenly spaced in time (B = 5, T = 4 gives 1, 1, 1, 2);
* within a frame, k_t cells spread over the (H, W) grid by :func:`._select.spread`: r rows
  evenly spaced, each with evenly spaced columns (a centred strided sub-grid when r divides
  k_t, e.g. stride 2 for k_t = N/4); frames with the same count keep the same cells.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Compressed, register
from ._select import selection, spread


def frame_counts(budget: int, t: int, n: int, device) -> Tensor:
    """(T,) int64 per-frame counts floor((t+1)B/T) - floor(tB/T); each <= N when B <= T*N."""
    edges = (torch.arange(t + 1, device=device) * budget) // t
    return edges[1:] - edges[:-1]


@register("uniform", kind="select")
def uniform(x: Tensor, *, grid: tuple[int, int] | None, budget: int | None) -> Compressed:
    """Evenly spaced selection: budget spread evenly over frames, cells evenly over the grid."""
    k = int(budget)
    t, n, _ = x.shape
    counts = frame_counts(k, t, n, x.device)
    lo = k // t  # every count is lo or lo + 1
    mask = torch.zeros(t, n, dtype=torch.bool, device=x.device)
    for c in (lo, lo + 1):  # at most two distinct per-frame patterns (not a loop over tokens)
        if 1 <= c <= n:
            pattern = torch.zeros(n, dtype=torch.bool, device=x.device)
            pattern[spread(c, grid, n, x.device)] = True
            mask |= (counts == c).unsqueeze(1) & pattern
    keep = mask.flatten().nonzero().squeeze(1)
    return selection(x, keep, grid, {"method": "uniform", "frame_counts": counts})
