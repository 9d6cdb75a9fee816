"""vistoken: visual token compression for video and image vision-language models."""

# Registers the built-in methods. Imported first: importing a subpackage sets the package
# attribute of the same name, and ``methods`` below must stay the function.
from . import methods as _builtin_methods  # noqa: F401
from .core import Compressed, compress, methods
from .models import Handle, apply

__all__ = ["Compressed", "Handle", "apply", "compress", "methods", "__version__"]
__version__ = "0.1.0"
