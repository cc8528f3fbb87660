"""Audio in: file reading, writing and resampling (:mod:`.audio`), streamed sources and sinks (:mod:`.stream`), and
the training/evaluation datasets (:mod:`.dataset`). The dataset API is also importable from this package
(``from codecfw.core.data import build_dataloader``), as it was before the package was split."""


def __getattr__(name: str):
    import importlib

    # import_module, not `from . import`, which would look the submodule up through this very function
    module = importlib.import_module(f"{__name__}.dataset")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
