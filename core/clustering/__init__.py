"""Semantic codebooks by k-means: the engine (:mod:`.kmeans`) over on-disk feature shards (:mod:`.feature_store`),
and the codebook files it writes (:mod:`.codebook`). The k-means and codebook API is also importable from this
package (``from codecfw.core.clustering import KMeans, load_centroids``), as it was before the package was split."""


def __getattr__(name: str):
    import importlib

    # import_module, not `from . import`, which would look the submodule up through this very function
    for submodule in ("kmeans", "codebook"):
        module = importlib.import_module(f"{__name__}.{submodule}")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
