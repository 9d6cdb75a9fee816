"""vistoken: visual token compression for video and image vision-language models.

The public names below are loaded on first use (PEP 562): ``import vistoken`` imports no
torch, so the ``vistoken`` command (whose entry point imports ``vistoken.cli``, and with it
this package, before its error handling runs) starts at once and exits cleanly on Ctrl-C
even while torch is being imported. The built-in methods register themselves when the method
registry is first consulted (``vistoken.core.get_method`` / ``methods``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import Compressed, compress, methods
    from .models import Handle, apply

__all__ = ["Compressed", "Handle", "apply", "compress", "methods", "__version__"]
__version__ = "0.1.0"

# public name -> the submodule defining it
_LAZY = {
    "Compressed": "core",
    "compress": "core",
    "methods": "core",
    "Handle": "models",
    "apply": "models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
