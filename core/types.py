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

Besides ``forward``/``from_tokens``, every slot declares (methods of the base classes, with defaults that suit a slot
that needs nothing special):

``streams()``
    its token streams (:class:`TokenStream`).
``chunk_policy() -> ChunkPolicy | None``
    how long recordings may be cut into windows (:class:`ChunkPolicy`); ``None`` = no constraint of its own.
``stream_embeddings(tokens) -> {stream: Tensor[B x D x T]}``
    one stream's own codebook vectors (an RVQ layer's), for probes; ``{}`` = not exposed.
``pretrained_parts() -> list[FrozenPart]``
    frozen parts whose weights must come from a pretrained source (:class:`FrozenPart`), and whether they did.

Capabilities live on the slot classes only: ``Decoder.objective``; a front-end is clusterable when it implements
``extract_features``; it emits tokens when ``streams()`` is not empty. ``register(kind, Config, factory,
**capabilities)`` still accepts keyword capabilities (the registry keeps them for display), but nothing about a
slot is read from them.
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


@dataclass(frozen=True)
class ChunkPolicy:
    """How a slot may be cut into windows (:mod:`codecfw.core.tokenizer.chunking` runs them). All lengths are
    samples at the codec's sample rate; the policies a codec's slots declare combine (smallest window, largest
    context and overlap, every alignment, ``exact`` only if all are).

    window : int | None
        Samples per window; ``None`` leaves the choice to other slots (or the default).
    context : int
        Neighbouring samples fed on each side of a window and dropped from its output (receptive field); a minimum,
        rounded up to whole frames of every stream.
    overlap : int
        Samples by which consecutive *decoding* windows overlap and are cross-faded (linear ramps); a minimum,
        rounded up like ``context``.
    align : int
        Every boundary (window, context, overlap) must be a multiple of this, in addition to whole token frames of
        every stream (e.g. SemantiCodec's 0.16 s patch columns, 2560 samples).
    window_align : int
        The window must also be a multiple of this (e.g. SemantiCodec's 10.24 s encoder segments, 163840 samples),
        so that encoding windows fall on the codec's own segment boundaries.
    exact : bool
        Whether chunked processing reproduces whole-file tokens (encoding) and waveforms up to float rounding
        (decoding). ``note`` says why not when ``False``.
    chunkable : bool
        ``False`` when a slot needs the whole recording at once (global normalisation, full-context attention
        with no usable window): recordings are then always processed whole and memory grows with duration.
    """

    window: int | None = None
    context: int = 0
    overlap: int = 0
    align: int = 1
    window_align: int = 1
    exact: bool = True
    chunkable: bool = True
    note: str = ""

    def __post_init__(self) -> None:
        if self.window is not None and self.window <= 0:
            raise ValueError(f"chunk policy: window must be > 0 samples, got {self.window}")
        if self.context < 0 or self.overlap < 0 or self.align < 1 or self.window_align < 1:
            raise ValueError(f"chunk policy: context and overlap must be >= 0, align and window_align >= 1; "
                             f"got {self}")

    @property
    def hop(self) -> int:
        """Decoding windows advance by this many samples (encoding windows by ``window``)."""
        assert self.window is not None
        return self.window - self.overlap


@dataclass(frozen=True)
class FrozenPart:
    """A frozen part of a slot whose weights must come from a pretrained source: training or clustering on it
    while it is random gives a codec that cannot work (SemantiCodec's AudioMAE, VAE and HiFi-GAN).

    key : str
        Names the part in recipes and messages; :meth:`Codec.pretrained_parts` prefixes it with the slot
        (``semantic.audiomae``). ``allow_random_frozen: [semantic.audiomae]`` opts in for this part alone.
    description : str
        What the part is (``"AudioMAE encoder (frozen feature extractor)"``).
    loaded : bool
        Whether the slot loaded pretrained weights into it when it was built.
    source : str
        How to get the weights: the recipe key to set and where the official files come from (a pretrained name,
        ``codecfw import ...``, a local file).
    feeds_features : bool
        Whether ``extract_features`` (``codecfw cluster``) runs through it; a codebook that clustering itself
        produces does not.
    """

    key: str
    description: str
    loaded: bool
    source: str
    feeds_features: bool = True


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
    losses, metrics, extras : as in :class:`SemanticOutput` (commitment loss, code usage, ...). By convention
        ``extras["pitch"]`` = (log2 F0, voiced), each ``Tensor[B x T]``, when the quantizer carries the pitch
        (a harmonic decoder's excitation follows it).
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


class Slot(nn.Module):
    """What the three slot base classes share: the declarations the core reads from every slot.

    Any submodule of any slot may set the class attribute ``static_buffers = True`` to declare that its own buffers
    never change after construction or checkpoint loading (frozen codebooks, schedules); distributed training then
    does not re-broadcast them after every step.
    """

    def chunk_policy(self) -> ChunkPolicy | None:
        """How long recordings may be cut for this slot. The default ``None`` declares no constraint: the other
        slots' policies decide, and when no slot declares one the tokenizer assumes 30 s windows with 1 s of
        context (not guaranteed exact). Convolutional slots return their receptive field as ``context``; slots
        with fixed segments return ``window``/``align``; a slot that needs the whole recording ``chunkable=False``.
        """
        return None

    def pretrained_parts(self) -> list[FrozenPart]:
        """Frozen parts whose weights must come from a pretrained source, with whether they did (see
        :class:`FrozenPart`). ``codecfw train`` and ``codecfw cluster`` refuse to start on a part that is not
        loaded unless the recipe opts in (``allow_random_frozen``). Default: none (every parameter is trained)."""
        return []


class SemanticFrontend(Slot):
    """Slot 1. Turns a waveform into semantic features and (optionally) semantic tokens.

    Clusterable (``codecfw cluster``) when it implements :meth:`extract_features`.
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

    def stream_embeddings(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{stream: LongTensor[B x T]}`` → ``{stream: Tensor[B x D x T]}``: each stream's own codebook vectors
        (what the semantic probe reads for the first stream). Default ``{}``: not exposed; the probe then uses the
        quantized output."""
        return {}

    def extract_features(self, waveform: Tensor) -> Tensor:
        """Continuous features for clustering, ``Tensor[B x D x T]``. Front-ends that cannot be clustered raise."""
        raise NotImplementedError(f"{type(self).__name__} exposes no continuous features for clustering")

    @classmethod
    def clusterable(cls) -> bool:
        """Whether ``codecfw cluster`` can run on this front-end: it implements :meth:`extract_features`."""
        return cls.extract_features is not SemanticFrontend.extract_features


class AcousticQuantizer(Slot):
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

    def stream_embeddings(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """As :meth:`SemanticFrontend.stream_embeddings`: one RVQ layer's codebook vectors per stream; ``{}``."""
        return {}


class Decoder(Slot):
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
