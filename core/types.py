"""The contracts between the three slots of a codec.

A codec is ``semantic front-end → acoustic quantizer → decoder``. Each slot is an ``nn.Module`` subclassing one
of the three base classes below, and the slots talk only through the result dataclasses defined here:

::

    waveform ──► SemanticFrontend ──► SemanticOutput(features, quantized, tokens, losses, ...)
       │                                  │
       └────────► AcousticQuantizer ◄─────┘
                          │
                          ▼
                   AcousticOutput(quantized, tokens, losses, ...)
                          │
                          ▼
                       Decoder ──► waveform         (training: DecoderOutput with losses)

Shapes follow descript-audio-codec's convention: ``Tensor[B x C x T]`` channels-first; waveforms are
``Tensor[B x 1 x N]``; tokens are ``LongTensor[B x T]`` per named stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import Tensor, nn


@dataclass(frozen=True)
class TokenStream:
    """One stream of discrete tokens a codec emits.

    name : str
        Unique within a codec, e.g. ``"semantic"``, ``"acoustic"``, ``"rvq0"``.
    frame_rate : float
        Tokens per second of audio in this stream.
    codebook_size : int
        Number of distinct token values; the stream carries ``log2(codebook_size)`` bits a token.
    """

    name: str
    frame_rate: float
    codebook_size: int

    def __post_init__(self) -> None:
        if self.frame_rate <= 0:
            raise ValueError(f"stream {self.name!r}: frame_rate must be > 0, got {self.frame_rate}")
        if self.codebook_size < 2:
            raise ValueError(f"stream {self.name!r}: codebook_size must be >= 2, got {self.codebook_size}")

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def bitrate(self) -> float:
        """Bits per second of this stream."""
        return self.frame_rate * self.bits_per_token


def token_rate(streams: list[TokenStream] | tuple[TokenStream, ...]) -> float:
    """Tokens per second over all streams."""
    return sum(s.frame_rate for s in streams)


def bitrate(streams: list[TokenStream] | tuple[TokenStream, ...]) -> float:
    """Bits per second over all streams (uncompressed, ``log2(codebook_size)`` bits a token)."""
    return sum(s.bitrate for s in streams)


@dataclass
class SemanticOutput:
    """What a semantic front-end hands to the acoustic quantizer and the decoder.

    features : Tensor[B x D x T] | None
        Continuous features (before any quantization). ``None`` when rebuilt from tokens.
    quantized : Tensor[B x D' x T] | None
        What the decoder is conditioned on from the semantic path (centroids, projected features, ...).
        ``None`` for front-ends that emit no tokens and whose features the acoustic quantizer consumes instead.
    tokens : dict[str, LongTensor[B x T]]
        One entry per stream this front-end declares in ``streams()``; empty if it emits none.
    losses : dict[str, Tensor]
        Scalar training losses this slot contributes (anchoring loss, ...). Weighted by the recipe.
    metrics : dict[str, Tensor]
        Scalar statistics to log (codebook utilisation, ...); never back-propagated.
    extras : dict[str, Any]
        Slot-specific side data (teacher features for a reconstruction head, padding masks, ...).
    """

    features: Tensor | None = None
    quantized: Tensor | None = None
    tokens: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class AcousticOutput:
    """What an acoustic quantizer hands to the decoder.

    quantized : Tensor[B x D x T]
        Quantized acoustic latent (straight-through during training).
    tokens : dict[str, LongTensor[B x T]]
        One entry per stream in ``streams()``.
    losses, metrics, extras : as in :class:`SemanticOutput` (commitment loss, code usage, ...).
    """

    quantized: Tensor
    tokens: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecoderOutput:
    """A decoder's training-time result.

    waveform : Tensor[B x 1 x N] | None
        The reconstruction, when the objective needs it (adversarial decoders). Diffusion decoders return ``None``
        during training: a sampled waveform costs a full reverse process.
    losses : dict[str, Tensor]
        The decoder's own losses (``"diffusion"``, ``"semantic_reconstruction"``, ...).
    """

    waveform: Tensor | None = None
    losses: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)


class SemanticFrontend(nn.Module):
    """Slot 1. Turns a waveform into semantic features and (optionally) semantic tokens.

    Any submodule of any slot may set the class attribute ``static_buffers = True`` to declare that its own buffers
    never change after construction or checkpoint loading (frozen codebooks, schedules); distributed training then
    does not re-broadcast them after every step.
    """

    #: Frames per second of ``features``/``quantized``/``tokens``.
    frame_rate: float
    #: Channel dimension of ``SemanticOutput.features`` (``0`` if the front-end exposes none).
    feature_dim: int = 0
    #: Channel dimension of ``SemanticOutput.quantized`` (``0`` if it produces none).
    quantized_dim: int = 0

    def streams(self) -> list[TokenStream]:
        return []

    def forward(self, waveform: Tensor) -> SemanticOutput:  # pragma: no cover - abstract
        """waveform : Tensor[B x 1 x N] at the codec's sample rate."""
        raise NotImplementedError

    def from_tokens(self, tokens: dict[str, Tensor]) -> SemanticOutput:
        """Rebuild the decoder-side ``SemanticOutput`` (``quantized``) from this slot's token streams."""
        if self.streams():
            raise NotImplementedError(f"{type(self).__name__} emits tokens but cannot rebuild features from them")
        return SemanticOutput()

    def extract_features(self, waveform: Tensor) -> Tensor:
        """Continuous features for clustering, ``Tensor[B x D x T]``. Front-ends that cannot be clustered raise."""
        raise NotImplementedError(f"{type(self).__name__} exposes no continuous features for clustering")


class AcousticQuantizer(nn.Module):
    """Slot 2. Encodes what the semantic path leaves out and quantizes it."""

    frame_rate: float
    #: Channel dimension of ``AcousticOutput.quantized``.
    quantized_dim: int
    #: Residual quantizers whose leading streams decode on their own (lower bitrate) set this.
    decodes_stream_prefix: bool = False

    def streams(self) -> list[TokenStream]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:  # pragma: no cover
        raise NotImplementedError

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:  # pragma: no cover
        raise NotImplementedError


class Decoder(nn.Module):
    """Slot 3. Turns the two paths' quantized latents back into a waveform."""

    #: Which training objective the loop runs for this decoder.
    objective: ClassVar[Literal["diffusion", "adversarial"]]

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:  # pragma: no cover
        """Synthesis: returns ``Tensor[B x 1 x num_samples]``."""
        raise NotImplementedError

    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        """Training-time pass against the target ``waveform : Tensor[B x 1 x N]``."""
        raise NotImplementedError  # pragma: no cover

    def decode_tokens(self, tokens: dict[str, Tensor], semantic_slot: SemanticFrontend,
                      acoustic_slot: AcousticQuantizer, num_samples: int) -> Tensor:
        """Synthesis from ``{stream: LongTensor[B x T]}`` (``Codec.decode`` calls this).

        The default rebuilds both paths' features for the whole input and calls ``forward``. A decoder that works
        window by window overrides it to look features up per window, so that decoding an hour keeps only the
        output buffer, not an hour of features (``latent_diffusion`` does).
        """
        sem_names = {s.name for s in semantic_slot.streams()}
        semantic = semantic_slot.from_tokens({k: v for k, v in tokens.items() if k in sem_names})
        acoustic = acoustic_slot.from_tokens({k: v for k, v in tokens.items() if k not in sem_names}, semantic)
        return self(semantic, acoustic, num_samples)


@dataclass
class BuildContext:
    """What a plugin factory may need besides its own config: the codec-wide settings and the slots built so far
    (slots are built in the order semantic → acoustic → decoder)."""

    sample_rate: int
    semantic: SemanticFrontend | None = None
    acoustic: AcousticQuantizer | None = None
    extras: dict[str, Any] = field(default_factory=dict)
