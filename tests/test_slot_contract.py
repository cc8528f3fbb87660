"""The slot contract (issue 14, item 5): every method the core reads from a slot is declared on the slot base classes
in codecfw.core.types with a documented default, ChunkPolicy lives there too (re-exported by the chunking engine),
and a slot's capabilities have one home, its class."""

from __future__ import annotations

import types

import pytest
import torch

from codecfw.core import types as slot_types
from codecfw.core.codec import build_codec
from codecfw.core.config import validate_recipe
from codecfw.core.registry import Registry
from codecfw.core.tokenizer import chunking
from codecfw.core.tokenizer.chunking import resolve_chunk_policy

from .toy_codec import TOY_RECIPE


def test_the_core_reads_only_declared_slot_methods(toy_registry):
    codec = build_codec(validate_recipe(TOY_RECIPE, toy_registry), toy_registry)
    for slot in (codec.semantic, codec.acoustic, codec.decoder):
        assert isinstance(slot, slot_types.Slot)
        assert slot.chunk_policy() is None and slot.pretrained_parts() == []  # the documented defaults
    tokens = codec.encode(torch.zeros(1, 1, 1600))
    assert codec.semantic.stream_embeddings(tokens) == {} and codec.acoustic.stream_embeddings(tokens) == {}
    assert codec.pretrained_parts() == [] and type(codec.semantic).clusterable()
    assert not slot_types.SemanticFrontend.clusterable()  # no extract_features: codecfw cluster refuses it


def test_chunk_policy_lives_in_the_slot_contract_and_the_engine_reexports_it(toy_registry):
    assert chunking.ChunkPolicy is slot_types.ChunkPolicy
    codec = build_codec(validate_recipe(TOY_RECIPE, toy_registry), toy_registry)

    class Windowed(type(codec.decoder)):  # a plugin overrides the declared method, nothing is probed
        def chunk_policy(self):
            return slot_types.ChunkPolicy(window=32000, overlap=1600)

    codec.decoder.__class__ = Windowed
    policy = resolve_chunk_policy(codec)
    assert (policy.window, policy.overlap) == (32000, 1600)
    with pytest.raises(ValueError, match="window must be > 0"):
        slot_types.ChunkPolicy(window=0)


def test_third_party_keyword_capabilities_still_register():
    """A plugin written against the README may still pass ``register(kind, Config, factory, **capabilities)``;
    the registry keeps them for display, while the core reads a slot's capabilities from its class."""
    from .toy_codec import ToyDecoder, ToyDecoderConfig

    plugin = types.ModuleType("old_style_plugin")

    from codecfw import hookimpl

    @hookimpl
    def register_decoders(register):
        register("toy_decoder", ToyDecoderConfig, ToyDecoder, objective="adversarial", note="kept for display")

    plugin.register_decoders = register_decoders
    registry = Registry(strict=True)
    registry.register_module(plugin, name="old_style_plugin")
    registration = registry.get("decoder", "toy_decoder")
    assert registration.capabilities == {"objective": "adversarial", "note": "kept for display"}
    assert ToyDecoder.objective == "adversarial"
