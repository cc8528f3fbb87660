"""A codec composed from a recipe: semantic front-end + acoustic quantizer + decoder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor, nn

from .config import RecipeBase
from .registry import Registry, get_registry
from .types import (AcousticOutput, AcousticQuantizer, BuildContext, Decoder, DecoderOutput, FrozenPart,
                    SemanticFrontend, SemanticOutput, TokenStream, bitrate, token_rate)


@dataclass
class CodecOutput:
    """One training-time pass: each slot's result (the decoder's against the target waveform)."""

    semantic: SemanticOutput
    acoustic: AcousticOutput
    decoder: DecoderOutput


class Codec(nn.Module):
    """semantic front-end + acoustic quantizer + decoder.

    The codec knows its token streams and derives its token rate and bitrate from them; nothing stores a bitrate.
    """

    def __init__(self, semantic: SemanticFrontend, acoustic: AcousticQuantizer, decoder: Decoder,
                 sample_rate: int) -> None:
        super().__init__()
        self.semantic = semantic
        self.acoustic = acoustic
        self.decoder = decoder
        self.sample_rate = sample_rate
        names = [s.name for s in self.streams()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"token stream names must be unique across slots; repeated: {', '.join(duplicates)}")

    # -- accounting ------------------------------------------------------------------------------------------
    def streams(self) -> list[TokenStream]:
        return [*self.semantic.streams(), *self.acoustic.streams()]

    @property
    def token_rate(self) -> float:
        """Tokens per second over all streams."""
        return token_rate(self.streams())

    @property
    def bitrate(self) -> float:
        """Bits per second over all streams."""
        return bitrate(self.streams())

    def pretrained_parts(self) -> list[FrozenPart]:
        """Every slot's frozen pretrained parts, keys prefixed with the slot (``semantic.audiomae``)."""
        return [replace(part, key=f"{name}.{part.key}") for name in ("semantic", "acoustic", "decoder")
                for part in getattr(self, name).pretrained_parts()]

    # -- use ---------------------------------------------------------------------------------------------------
    def forward(self, waveform: Tensor) -> CodecOutput:
        """Training pass. waveform : Tensor[B x 1 x N]."""
        semantic = self.semantic(waveform)
        acoustic = self.acoustic(waveform, semantic)
        decoded = self.decoder.training_output(semantic, acoustic, waveform)
        return CodecOutput(semantic, acoustic, decoded)

    @torch.no_grad()
    def encode(self, waveform: Tensor) -> dict[str, Tensor]:
        """waveform : Tensor[B x 1 x N] → ``{stream name: LongTensor[B x T]}``."""
        semantic = self.semantic(waveform)
        acoustic = self.acoustic(waveform, semantic)
        return {**semantic.tokens, **acoustic.tokens}

    @torch.no_grad()
    def decode(self, tokens: dict[str, Tensor], num_samples: int) -> Tensor:
        """``{stream name: LongTensor[B x T]}`` → Tensor[B x 1 x num_samples]."""
        missing = [s.name for s in self.streams() if s.name not in tokens]
        acoustic_names = [s.name for s in self.acoustic.streams()]
        kept = len(acoustic_names) - len(missing)
        if self.acoustic.decodes_stream_prefix and 0 < kept and missing == acoustic_names[kept:]:
            missing = []  # a leading prefix of a residual quantizer's streams decodes at the lower bitrate
        if missing:
            raise KeyError(f"tokens lack the stream(s) {', '.join(missing)}; this codec has "
                           f"{', '.join(s.name for s in self.streams())}")
        return self.decoder.decode_tokens(tokens, self.semantic, self.acoustic, num_samples)


def build_codec(recipe: RecipeBase, registry: Registry | None = None) -> Codec:
    """Build the three slots of a validated recipe, in order semantic → acoustic → decoder."""
    registry = registry or get_registry()
    ctx = BuildContext(sample_rate=recipe.sample_rate)
    ctx.semantic = registry.build("semantic", recipe.semantic, ctx)  # type: ignore[attr-defined]
    ctx.acoustic = registry.build("acoustic", recipe.acoustic, ctx)  # type: ignore[attr-defined]
    decoder = registry.build("decoder", recipe.decoder, ctx)  # type: ignore[attr-defined]
    return Codec(ctx.semantic, ctx.acoustic, decoder, recipe.sample_rate)


class FrozenPartsError(ValueError):
    """The recipe's frozen pretrained parts refuse a start (a user error: CLI exit status 2)."""


class RandomFrozenParts(FrozenPartsError):
    """Training or clustering would start with frozen parts that should hold pretrained weights but are random.
    ``parts`` lists the offending :class:`~codecfw.core.types.FrozenPart` objects."""

    def __init__(self, parts: Sequence[FrozenPart], what: str) -> None:
        self.parts = list(parts)
        lines = [f"  {p.key}: {p.description}; {p.source}" for p in self.parts]
        keys = ", ".join(p.key for p in self.parts)
        super().__init__(f"{what} would start with {len(self.parts)} frozen part(s) that need pretrained weights "
                         f"but are random:\n" + "\n".join(lines) + f"\nGive the weights, or start from a "
                         f"checkpoint that holds them (--init-from), or opt in to random frozen parts (tests, "
                         f"smoke runs) with the recipe key allow_random_frozen: true (or a list: [{keys}]).")


def check_pretrained_parts(parts: Sequence[FrozenPart], allow: bool | Sequence[str], what: str,
                           slots: Sequence[str] = ("semantic", "acoustic", "decoder")) -> None:
    """Raise :class:`RandomFrozenParts` for every part that is not loaded and not opted in by ``allow``
    (``True``: all; a list: those keys). A key of ``allow`` in one of ``slots`` (the slots ``parts`` cover) that
    names no part is an error too: a typo would otherwise opt in nothing, silently."""
    if allow is True:
        return
    allowed = set(allow or ())
    unknown = sorted(k for k in allowed - {p.key for p in parts} if k.split(".")[0] in slots)
    if unknown:
        known = ", ".join(p.key for p in parts) or "none"
        raise FrozenPartsError(f"allow_random_frozen: {', '.join(unknown)} names no frozen pretrained part of this codec "
                         f"(its parts: {known})")
    missing = [p for p in parts if not p.loaded and p.key not in allowed]
    if missing:
        raise RandomFrozenParts(missing, what)
