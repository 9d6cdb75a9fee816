"""Model integration: ``vt.apply`` on transformers VLMs (adapters per family + hooks)."""

from .apply import Handle, apply, supported_models

__all__ = ["Handle", "apply", "supported_models"]
