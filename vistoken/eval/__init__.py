"""Evaluation of compression methods: how faithfully the output stands for the input."""

from .fidelity import (
    RATIOS,
    FidelityRow,
    attention_error,
    coverage,
    default_temperature,
    fixed_queries,
    reconstruction,
    run_fidelity,
    video_features,
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
