"""Built-in compression methods; importing this package registers them all."""

from . import scc  # noqa: F401
