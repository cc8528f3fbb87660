"""Semantic codebooks by k-means: the engine (:mod:`.kmeans`) over on-disk feature shards (:mod:`.feature_store`).
The k-means API is also importable from this package (``from codecfw.core.clustering import KMeans``), as it was
before the package was split."""


def __getattr__(name: str):
    import importlib

    # import_module, not `from . import`, which would look the submodule up through this very function
    module = importlib.import_module(f"{__name__}.kmeans")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
