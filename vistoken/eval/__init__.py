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


#: names loaded on first use: the benchmark's modules draw with PIL, which the metrics never
#: need (name -> its submodule)
_LAZY = {
    "Setting": "runner",
    "evaluate": "runner",
    "wilson": "runner",
    "build_results": "results",
    "format_table": "results",
    "write_results": "results",
}


def __getattr__(name: str) -> Any:
    # video_features decodes and encodes a video: it lives in vistoken.pipeline, imported only
    # when asked for, so that the metrics never pull in the media stack
    if name == "video_features":
        from ..pipeline import video_features

        return video_features
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
