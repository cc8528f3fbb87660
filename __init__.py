"""codecfw: low-bitrate semantic audio codecs assembled from interchangeable plugins."""

from .core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
