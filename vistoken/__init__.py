"""vistoken: visual token compression for video and image vision-language models."""

from .core import Compressed, compress, methods

__all__ = ["Compressed", "compress", "methods", "__version__"]
__version__ = "0.1.0"
