"""Shared tensor kernels: similarity, connected components, segment reductions."""

from .components import BlockGraph, dense_components, hub_order, threshold_adjacency
from .segment import finite_cast, segment_count, segment_mean, segment_sum, sum_scale
from .similarity import nearest, normalize, normalize_with_norm, pow2_scale, row_block, work_dtype

__all__ = [
    "BlockGraph",
    "dense_components",
    "hub_order",
    "threshold_adjacency",
    "finite_cast",
    "segment_count",
    "segment_mean",
    "segment_sum",
    "sum_scale",
    "nearest",
    "normalize",
    "normalize_with_norm",
    "pow2_scale",
    "row_block",
    "work_dtype",
]
