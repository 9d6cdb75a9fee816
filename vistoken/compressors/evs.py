"""EVS (Efficient Video Sampling), as shipped in vLLM behind ``video_pruning_rate``.

Every token is scored by its dissimilarity to the same grid position in the previous frame,
1 - cos(x[t, p], x[t-1, p]); the first frame scores +inf, so it is always kept; the
``budget`` highest scores are kept, ties to the smaller (earlier) index (a stable
descending sort, as in vLLM). Static regions, repeated frame after frame, go first.

Rules beyond the reference (vLLM never retains less than one frame):
* budget < N (less than the first frame): the first frame keeps the ``budget`` cells that
  :func:`._select.spread` spreads evenly over its grid (not a raster prefix);
* T = 1: the same rule, since every token is a first-frame token.
Zero-norm tokens have cosine 0 to everything (dissimilarity 1), never NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Compressed, register
from ..ops import normalize
from ._select import selection, spread


def evs_scores(x: Tensor) -> Tensor:
    """(T, N) dissimilarity to the previous frame's same position; +inf on frame 0."""
    xn = normalize(x)
    score = torch.full(x.shape[:2], float("inf"), dtype=xn.dtype, device=x.device)
    if x.shape[0] > 1:
        score[1:] = 1.0 - (xn[1:] * xn[:-1]).sum(dim=-1)
    return score


@register("evs", kind="select")
def evs(x: Tensor, *, grid: tuple[int, int] | None, budget: int | None) -> Compressed:
    """EVS: keep frame 0 and the tokens that changed most since the previous frame."""
    k = int(budget)
    t, n, _ = x.shape
    if k <= n:
        keep = spread(k, grid, n, x.device)
    else:
        order = torch.sort(evs_scores(x).flatten(), descending=True, stable=True).indices
        keep = order[:k]
    return selection(x, keep, grid, {"method": "evs"})
