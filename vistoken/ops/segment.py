"""Segment reductions: sums and means of rows grouped by an index, without Python loops.

Sums of finite values can overflow (float32 tokens near 3e38). A method that sums takes
``s = sum_scale(max|x|, count)`` once, sums ``x * s`` and divides the means by ``s``:
``s`` is 1.0 (the plain sums, bit for bit) unless the sums could overflow, and a power of
two otherwise (exact scaling). :func:`finite_cast` then brings the result to the output
dtype without rounding a largest-magnitude mean up to Inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def segment_sum(x: Tensor, seg: Tensor, k: int) -> Tensor:
    """(n, D) rows summed into k groups by seg (n,) int64 in [0, k) -> (k, D)."""
    return torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, seg, x)


def segment_count(seg: Tensor, k: int) -> Tensor:
    """(k,) int64 number of rows in each group."""
    return torch.bincount(seg, minlength=k)


def segment_mean(x: Tensor, seg: Tensor, k: int) -> Tensor:
    """(n, D) rows averaged (unweighted) into k non-empty groups -> (k, D).

    The sums are plain sums: scale x with :func:`sum_scale` first when they may overflow.
    """
    counts = segment_count(seg, k).to(x.dtype)
    return segment_sum(x, seg, k).div_(counts.unsqueeze(1))  # in place: no second (k, D)


def sum_scale(bound: float, count: int, dtype: torch.dtype) -> float:
    """A power of two s <= 1 such that any sum of up to ``count`` values of magnitude at
    most ``bound``, each multiplied by s, is finite in ``dtype`` (with a factor 4 to spare
    for rounding). 1.0 whenever the unscaled sums already are, so that ordinary inputs
    give exactly the plain sums. ``bound`` may be Inf (a norm that overflowed)."""
    limit = torch.finfo(dtype).max / 4
    if bound * count <= limit:
        return 1.0
    return 2.0 ** -(math.ceil(math.log2(max(count, 1))) + 2)


def finite_cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` in ``dtype``, values beyond its largest finite magnitude clamped to it.

    Means of finite values are finite in exact arithmetic; rounding (and the narrower range
    of float16) can push a mean of values at the very top of the range just past it, which
    a plain cast would turn into Inf. For every other value this is the plain cast.
    """
    big = torch.finfo(dtype).max
    return x.clamp(-big, big).to(dtype)
