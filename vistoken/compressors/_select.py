"""Shared helpers of the selection baselines (methods whose outputs are input tokens).

A selection keeps some input tokens unchanged, in ascending original (frame-major) order;
``sources`` gives every kept token its rank among the kept ones and -1 to the dropped ones,
and ``positions`` / ``anchors`` are the kept tokens' own (t, h, w) grid positions / indices.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..core import Compressed, grid_positions


def selection(
    x: Tensor, keep_idx: Tensor, grid: tuple[int, int] | None, info: dict[str, Any]
) -> Compressed:
    """The Compressed result of keeping the input tokens ``keep_idx`` (flat, frame-major).

    x: (T, N, D); keep_idx: (M,) distinct int64 indices into T*N, any order (sorted here).
    """
    t, n, d = x.shape
    total = t * n
    keep = keep_idx.to(device=x.device, dtype=torch.long).sort().values
    m = keep.numel()
    sources = torch.full((total,), -1, dtype=torch.long, device=x.device)
    sources[keep] = torch.arange(m, device=x.device)
    positions = grid_positions(t, grid, n, x.device)[keep]
    tokens = x.reshape(total, d)[keep]  # advanced indexing copies: no alias of the input
    return Compressed(tokens, sources, positions, info, anchors=keep)


def spread(k: int, grid: tuple[int, int] | None, n: int, device: torch.device | str) -> Tensor:
    """(k,) ascending indices in [0, N) of k cells spread evenly over one frame's grid.

    The rule (exact integer arithmetic): with the grid (H, W) (a single row (1, N) when there
    is none), take r = min(H, k, ceil(sqrt(k * H / W))) rows; row i (of r) is grid row
    floor((2i + 1) * H / (2r)) and holds c_i = floor((i+1) k / r) - floor(i k / r) cells, at
    columns floor((2j + 1) * W / (2 c_i)), j < c_i. When r divides k this is the centred
    strided sub-grid (k = N/4 on 14x14 gives rows and columns 1, 3, ..., 13); otherwise the
    rows hold counts that differ by at most one.
    """
    if not 1 <= k <= n:
        raise ValueError(f"spread needs 1 <= k <= N={n}, got k={k}")
    h, w = grid if grid is not None else (1, n)
    r = math.isqrt(k * h // w)
    while r * r * w < k * h:  # smallest r with r^2 >= k*H/W
        r += 1
    r = max(1, min(h, k, r))
    j = torch.arange(k, device=device)
    i = torch.arange(r + 1, device=device)
    starts = (i * k) // r  # (r+1,), starts[r] == k
    row = torch.searchsorted(starts[:-1], j, right=True) - 1
    count = starts[row + 1] - starts[row]
    jj = j - starts[row]
    rows = ((2 * row + 1) * h) // (2 * r)
    cols = ((2 * jj + 1) * w) // (2 * count)
    return rows * w + cols
