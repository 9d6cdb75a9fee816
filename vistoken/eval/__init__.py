"""Evaluation of compression methods: how faithfully the output stands for the input.

Metrics and the report only; tokens of a real video come from :mod:`vistoken.pipeline`.
"""

from typing import Any

from .fidelity import (
    RATIOS,
    FidelityRow,
    attention_error,
    coverage,
    default_temperature,
    fixed_queries,
    reconstruction,
    run_fidelity,
    write_report,
)

__all__ = [
    "RATIOS",
    "default_temperature",
    "FidelityRow",
    "attention_error",
    "coverage",
    "fixed_queries",
    "reconstruction",
    "run_fidelity",
    "video_features",
    "write_report",
]


def __getattr__(name: str) -> Any:
    # video_features decodes and encodes a video: it lives in vistoken.pipeline, imported only
    # when asked for, so that the metrics never pull in the media stack
    if name == "video_features":
        from ..pipeline import video_features

        return video_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
