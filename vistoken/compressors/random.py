"""Random selection: a uniformly random subset of exactly ``budget`` input tokens.

The baseline that benchmark papers keep finding strong. The draw uses a local CPU
``torch.Generator`` seeded with ``seed`` (never the global RNG), so one seed always gives
the same subset on every device; the indices are then moved to the input's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import INT64_MAX, Compressed, int_option, register
from ._select import selection


@register(
    "random",
    kind="select",
    options=(int_option("seed", 0, 0, INT64_MAX, "seed of the CPU generator"),),
)
def random_select(
    x: Tensor, *, grid: tuple[int, int] | None, budget: int | None, seed: int = 0
) -> Compressed:
    """Uniform random selection of exactly ``budget`` tokens (option ``seed``, default 0).

    The kept set is the first ``budget`` entries of ``torch.randperm(T*N)`` drawn from a CPU
    generator seeded with ``seed``; the kept tokens are returned in input order.
    """
    k = int(budget)
    t, n, _ = x.shape
    gen = torch.Generator().manual_seed(seed)
    keep = torch.randperm(t * n, generator=gen)[:k]
    return selection(x, keep.to(x.device), grid, {"method": "random", "seed": seed})
