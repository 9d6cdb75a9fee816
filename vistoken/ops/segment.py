"""Segment reductions: sums and means of rows grouped by an index, without Python loops."""

from __future__ import annotations

import torch
from torch import Tensor


def segment_sum(x: Tensor, seg: Tensor, k: int) -> Tensor:
    """(n, D) rows summed into k groups by seg (n,) int64 in [0, k) -> (k, D)."""
    return torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, seg, x)


def segment_count(seg: Tensor, k: int) -> Tensor:
    """(k,) int64 number of rows in each group."""
    return torch.bincount(seg, minlength=k)


def segment_mean(x: Tensor, seg: Tensor, k: int) -> Tensor:
    """(n, D) rows averaged (unweighted) into k non-empty groups -> (k, D)."""
    counts = segment_count(seg, k).to(x.dtype)
    return segment_sum(x, seg, k) / counts.unsqueeze(1)
