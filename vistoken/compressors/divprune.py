"""DivPrune: max-min diversity selection on cosine distance over all T*N tokens.

The selection problem is max-min diversity: choose ``budget`` tokens whose smallest pairwise
cosine distance (1 - cos) is as large as possible, solved greedily:

* first pick (DivPrune's rule): the token whose distance to its nearest *other* token is the
  largest, i.e. the most isolated token (ties: the smaller index);
* then repeatedly the token whose minimum distance to the selected set is the largest (ties:
  the smaller index), until ``budget``. A running (T*N,) min-distance vector is updated with
  one matrix-vector product per pick; picked tokens are masked so a pick never repeats.

The nearest-other-token distances are computed in row blocks, so memory grows with
T*N x block, not (T*N)^2. Zero-norm tokens have cosine 0 to everything (distance 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Compressed, register
from ..ops import normalize, row_block
from ._select import selection


def isolation(xn: Tensor) -> Tensor:
    """(n,) max cosine similarity of every unit row to any *other* row (-inf when n = 1)."""
    n = xn.shape[0]
    out = torch.empty(n, dtype=xn.dtype, device=xn.device)
    step = row_block(n, n)
    for r0 in range(0, n, step):  # row blocks of the similarity matrix, not tokens
        sim = xn[r0 : r0 + step] @ xn.T
        rows = torch.arange(sim.shape[0], device=xn.device)
        sim[rows, rows + r0] = float("-inf")
        out[r0 : r0 + step] = sim.max(dim=1).values
    return out


def divprune_indices(xn: Tensor, k: int) -> Tensor:
    """(k,) greedy max-min picks, in pick order, over unit rows xn (n, D)."""
    n = xn.shape[0]
    picks = torch.empty(k, dtype=torch.long, device=xn.device)
    first = torch.argmin(isolation(xn))  # largest nearest-other distance; first index on ties
    picks[0] = first
    min_dist = 1.0 - xn @ xn[first]
    taken = torch.zeros(n, dtype=torch.bool, device=xn.device)
    taken[first] = True
    neg_inf = torch.tensor(float("-inf"), dtype=xn.dtype, device=xn.device)
    for i in range(1, k):  # one pick per step: O(n D) tensor work, no host sync
        pick = torch.argmax(torch.where(taken, neg_inf, min_dist))
        picks[i] = pick
        taken[pick] = True
        min_dist = torch.minimum(min_dist, 1.0 - xn @ xn[pick])
    return picks


@register("divprune", kind="select")
def divprune(x: Tensor, *, grid: tuple[int, int] | None, budget: int | None) -> Compressed:
    """DivPrune: greedy max-min cosine diversity over all tokens of the video."""
    k = int(budget)
    t, n, d = x.shape
    picks = divprune_indices(normalize(x.reshape(t * n, d)), k)
    return selection(x, picks, grid, {"method": "divprune", "pick_order": picks})
