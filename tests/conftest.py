import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where torch sees no CUDA device (``pytest -m cuda`` selects them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is faster on a shared 2-core machine and bitwise reproducible.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_registry():
    """A registry with no entry points loaded and the toy codec registered by hand."""
    from codecfw.core.registry import Registry

    from . import toy_codec

    registry = Registry(strict=True)
    registry.register_module(toy_codec, name="toy_codec", distribution="codecfw-tests")
    return registry


@pytest.fixture
def eval_registry():
    """The toy codec, the toy training plugins and codecfw's metric plugins, registered by hand (no entry points)."""
    from codecfw.core.registry import Registry
    from codecfw.plugins.metric import asr, distance, perceptual, tokens

    from . import toy_codec, toy_training

    registry = Registry(strict=True)
    registry.register_module(toy_codec, name="toy_codec", distribution="codecfw-tests")
    registry.register_module(toy_training, name="toy_training", distribution="codecfw-tests")
    for module in (distance, perceptual, asr, tokens):
        registry.register_module(module, name=module.__name__, distribution="codecfw")
    return registry
