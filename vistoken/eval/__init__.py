"""Evaluation of compression methods: how faithfully the output stands for the input
(:mod:`.fidelity`), and what it costs in answers (:mod:`.runner`, :mod:`.results`: the
``vistoken eval`` benchmark on the reference model of :mod:`.reference`).

Tokens of a real video come from :mod:`vistoken.pipeline`.
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
from .results import build_results, format_table, write_results
from .runner import Setting, evaluate, wilson

__all__ = [
    "RATIOS",
    "Setting",
    "build_results",
    "evaluate",
    "format_table",
    "wilson",
    "write_results",
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
