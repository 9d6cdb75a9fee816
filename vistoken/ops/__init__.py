"""Shared tensor kernels: similarity, connected components, segment reductions."""

from .components import BlockGraph, dense_components, hub_order, threshold_adjacency
from .segment import segment_count, segment_mean, segment_sum
from .similarity import nearest, normalize, row_block, work_dtype

__all__ = [
    "BlockGraph",
    "dense_components",
    "hub_order",
    "threshold_adjacency",
    "segment_count",
    "segment_mean",
    "segment_sum",
    "nearest",
    "normalize",
    "row_block",
    "work_dtype",
]
