"""codecfw: low-bitrate semantic audio codecs assembled from interchangeable plugins."""

from . import _moved
from .core.hookspecs import hookimpl

_moved.install()

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__", "load"]


def __getattr__(name: str):
    # ``codecfw.load`` imports torch and the codec machinery only when first used, so ``import codecfw`` (plugin
    # modules, the CLI's start-up) stays light.
    if name == "load":
        from .core.tokenizer.api import load

        return load
    raise AttributeError(f"module 'codecfw' has no attribute {name!r}")
