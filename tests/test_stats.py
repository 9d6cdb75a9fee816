"""vistoken.stats: per-frame statistics of a compression (what summary.json reports)."""

from __future__ import annotations

import json

import pytest
import torch

import vistoken as vt
from vistoken.core import Compressed
from vistoken.stats import (
    dropped_per_frame,
    frame_stats,
    inputs_per_output_token,
    output_tokens_per_frame,
)


def by_hand() -> Compressed:
    """2 frames x 3 tokens -> 3 outputs: output 0 stands for 3 inputs, output 1 for one,
    output 2 for none; inputs 2 and 3 were dropped; anchors in frames 0, 0 and 1."""
    return Compressed(
        tokens=torch.zeros(3, 4),
        sources=torch.tensor([0, 0, -1, -1, 1, 0]),
        positions=torch.tensor([[0, 0, 0], [0, 0, 2], [1, 0, 1]]),
    )


def test_frame_stats_by_hand():
    out = by_hand()
    stats = frame_stats(out, frames=2, tokens_per_frame=3)
    assert stats == {
        "output_tokens_per_frame": [2, 1],
        "dropped_per_frame": [1, 1],
        "inputs_per_output_token": {"min": 0, "median": 1.0, "max": 3},
    }
    json.dumps(stats, allow_nan=False)  # plain Python values only
    assert output_tokens_per_frame(out, 2) == [2, 1]
    assert dropped_per_frame(out, 2, 3) == [1, 1]
    assert inputs_per_output_token(out) == stats["inputs_per_output_token"]


def test_a_frame_without_anchors_counts_zero():
    out = by_hand()
    assert output_tokens_per_frame(out, 3) == [2, 1, 0]  # anchors only in frames 0 and 1


def test_nothing_kept_has_no_group_sizes():
    empty = torch.zeros(1, 3, dtype=torch.long)
    out = Compressed(tokens=torch.zeros(1, 4), sources=torch.full((4,), -1), positions=empty)
    assert inputs_per_output_token(out) is None
    assert dropped_per_frame(out, 2, 2) == [2, 2]


@pytest.mark.parametrize("method", ["pool", "uniform", "tome"])
def test_frame_stats_of_real_methods_add_up(method):
    t, n = 4, 16
    x = torch.randn(t, n, 8, generator=torch.Generator().manual_seed(0))
    out = vt.compress(x, method, retention=0.25, grid=(4, 4))
    stats = frame_stats(out, frames=t, tokens_per_frame=n)
    assert sum(stats["output_tokens_per_frame"]) == out.num_tokens == 16
    dropped = sum(stats["dropped_per_frame"])
    assert dropped == int((out.sources < 0).sum())
    groups = stats["inputs_per_output_token"]
    if method == "uniform":  # selection: one input per kept token, the rest dropped
        assert groups == {"min": 1, "median": 1.0, "max": 1} and dropped == t * n - 16
    else:  # merging: nothing dropped, groups share out the t * n inputs
        assert dropped == 0 and groups["min"] >= 1 and groups["max"] > 1


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError, match="expected frames \\* tokens_per_frame = 2 \\* 4"):
        frame_stats(by_hand(), frames=2, tokens_per_frame=4)
    with pytest.raises(ValueError, match="frames must be an int >= 1"):
        output_tokens_per_frame(by_hand(), 0)
