import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def toy_registry():
    """A registry with no entry points loaded and the toy codec registered by hand."""
    from codecfw.core.registry import Registry

    from . import toy_codec

    registry = Registry(strict=True)
    registry.register_module(toy_codec, name="toy_codec", distribution="codecfw-tests")
    return registry
