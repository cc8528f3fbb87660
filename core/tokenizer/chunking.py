"""Long recordings: chunked encoding and decoding with memory bounded by the chunk, not the duration.

Each codec says how it may be cut through a :class:`~codecfw.core.types.ChunkPolicy` (re-exported here), declared by
the ``chunk_policy()`` method of its slots (semantic front-end, acoustic quantizer, decoder; the slot base classes'
default, ``None``, declares nothing)::

    class MyDecoder(Decoder):
        def chunk_policy(self) -> ChunkPolicy:
            return ChunkPolicy(window=163840, overlap=10240, exact=False, note="...")

Two boundary schemes cover the codecs codecfw ships, and they combine:

``context`` (convolutional codecs: X-Codec's DAC encoder/decoder, the toy codec)
    Each window of ``window`` samples is processed together with ``context`` samples of its neighbours on both sides
    (clipped at the file ends, exactly where the whole-file pass sees its own padding); the tokens / samples that
    belong to the context are dropped. When ``context`` covers the receptive field, chunked and whole-file results
    are identical (``exact=True``).
``overlap`` (SemantiCodec's decoder)
    Decoding windows of ``window`` samples advance by ``window - overlap`` and are joined by a linear cross-fade
    over ``overlap`` samples (the reference's 10.24 s windows with 0.64 s overlap-add). Encoding windows never
    overlap: every token is computed once.

The window schedule is the same for encoding and decoding: windows ``[k*hop, k*hop + window)`` while they end
before the recording does; the remainder (shorter than ``window``) is the last window. A recording no longer than
``window`` is processed whole, so short files never see a boundary.

Boundaries must fall on whole token frames of every stream: ``window``, ``context`` and ``overlap`` must be multiples
of :func:`frame_unit` (and of the policy's own ``align``, e.g. SemantiCodec's 0.16 s patch rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..types import ChunkPolicy, TokenStream

__all__ = ["ChunkPolicy", "DEFAULT_CONTEXT_SECONDS", "DEFAULT_WINDOW_SECONDS", "decode_stream", "encode_stream",
           "frame_unit", "frames", "resolve_chunk_policy", "windows"]

#: Window and context used when neither the codec nor its slots declare a policy.
DEFAULT_WINDOW_SECONDS = 30.0
DEFAULT_CONTEXT_SECONDS = 1.0

EncodeFn = Callable[[Tensor], dict[str, Tensor]]  # Tensor[B x 1 x n] -> {stream: LongTensor[B x T]}
DecodeFn = Callable[[dict[str, Tensor], int], Tensor]  # ({stream: LongTensor[B x T]}, n) -> Tensor[B x 1 x n]


def frame_unit(streams: Sequence[TokenStream], sample_rate: int) -> int:
    """The smallest number of samples that is a whole number of frames in every stream."""
    unit = 1
    for s in streams:
        per_frame = Fraction(sample_rate) / Fraction(s.frame_rate).limit_denominator(1_000_000)
        unit = math.lcm(unit, per_frame.numerator)
    return unit


def frames(samples: int, stream: TokenStream, sample_rate: int) -> int:
    """Frames of ``stream`` in ``samples`` samples; ``samples`` must be frame-aligned."""
    value = Fraction(samples) * Fraction(stream.frame_rate).limit_denominator(1_000_000) / sample_rate
    if value.denominator != 1:
        raise ValueError(f"{samples} samples is not a whole number of {stream.name!r} frames "
                         f"({stream.frame_rate} frames/s at {sample_rate} Hz)")
    return int(value)


def resolve_chunk_policy(codec: Any, window_seconds: float | None = None) -> ChunkPolicy:
    """The policy of a composed codec: its slots' combined (smallest window, largest context and overlap, every
    ``align``/``window_align`` and frame constraint, ``exact`` only if every slot is), else a default (30 s windows
    with 1 s of context, not guaranteed exact). ``window_seconds`` overrides the window (rounded down to the
    window's alignment; at least one unit)."""
    sample_rate, streams = int(codec.sample_rate), codec.streams()
    unit = frame_unit(streams, sample_rate)
    slots = (getattr(codec, name, None) for name in ("semantic", "acoustic", "decoder"))  # duck-typed codecs: tests
    declared = [p for p in (slot.chunk_policy() for slot in slots if slot is not None) if p is not None]
    if declared:
        windows_ = [p.window for p in declared if p.window is not None]
        policy = ChunkPolicy(
            window=min(windows_) if windows_ else None,
            context=max(p.context for p in declared),
            overlap=max(p.overlap for p in declared),
            align=math.lcm(*(p.align for p in declared)),
            window_align=math.lcm(*(p.window_align for p in declared)),
            exact=all(p.exact for p in declared),
            chunkable=all(p.chunkable for p in declared),
            note="; ".join(p.note for p in declared if p.note))
    else:
        policy = ChunkPolicy(exact=False, note=f"the codec declares no chunk policy: {DEFAULT_CONTEXT_SECONDS:g} s "
                                               f"of context is assumed to cover its receptive field")
        policy = replace(policy, context=_round_up(int(DEFAULT_CONTEXT_SECONDS * sample_rate), unit))
    unit = math.lcm(unit, policy.align)
    window_unit = math.lcm(unit, policy.window_align)
    if window_seconds is not None or policy.window is None:
        seconds = DEFAULT_WINDOW_SECONDS if window_seconds is None else window_seconds
        policy = replace(policy, window=max(window_unit, int(seconds * sample_rate) // window_unit * window_unit))
    # context and overlap are minimums (a receptive field, a cross-fade): rounded up to whole frames of every stream
    # (a slot cannot know the other slots' frame rates: a 25 Hz pitch stream beside a 50 Hz decoder)
    policy = replace(policy, context=_round_up(policy.context, unit), overlap=_round_up(policy.overlap, unit))
    if policy.window % window_unit:
        raise ValueError(f"chunk policy of {type(codec).__name__}: window={policy.window} samples is not a multiple "
                         f"of {window_unit} (whole frames of every stream, align={policy.align}, "
                         f"window_align={policy.window_align})")
    if policy.overlap >= policy.window:
        raise ValueError(f"chunk policy: overlap {policy.overlap} must be smaller than window {policy.window}")
    return policy


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def windows(num_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """``[(start, end)]``: windows ``[k*hop, k*hop + window)`` while they end before ``num_samples``, then the rest."""
    out, start = [], 0
    while start + window < num_samples:
        out.append((start, start + window))
        start += hop
    out.append((start, num_samples))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------------


class _Rolling:
    """Samples of a stream from absolute index ``start`` on, fed block by block."""

    def __init__(self, blocks: Iterable[Tensor]) -> None:
        self._it = iter(blocks)
        self._parts: list[Tensor] = []
        self.start = 0
        self.end = 0
        self.exhausted = False

    def fill(self, until: int) -> None:
        while not self.exhausted and self.end < until:
            try:
                block = next(self._it)
            except StopIteration:
                self.exhausted = True
                break
            block = block.reshape(-1).float()
            self._parts.append(block)
            self.end += block.numel()

    def slice(self, lo: int, hi: int) -> Tensor:
        data = torch.cat(self._parts) if len(self._parts) != 1 else self._parts[0]
        self._parts = [data]
        return data[lo - self.start:hi - self.start]

    def drop_before(self, pos: int) -> None:
        if pos > self.start and self._parts:
            data = torch.cat(self._parts) if len(self._parts) != 1 else self._parts[0]
            self._parts = [data[pos - self.start:].clone()]
            self.start = pos


@dataclass
class _Piece:
    chunk: Tensor  # [n]
    owned: int  # samples of the recording this piece's tokens stand for (the chunk minus its context)
    drop: dict[str, int]
    keep: dict[str, int] | None  # None: keep everything after ``drop`` (last window)


def encode_stream(encode: EncodeFn, blocks: Iterable[Tensor], policy: ChunkPolicy, streams: Sequence[TokenStream],
                  sample_rate: int, batch_size: int = 1,
                  progress: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Encode a recording given as mono blocks, window by window. Returns (``{stream: int64 array[T]}``, samples).

    Peak memory: ``batch_size`` windows of ``window + 2 * context`` samples plus one source block, whatever the
    duration; the tokens themselves grow with it (a few bytes per token).
    """
    window, context = policy.window, policy.context
    assert window is not None
    buf = _Rolling(blocks)
    out: dict[str, list[np.ndarray]] = {s.name: [] for s in streams}
    pending: list[_Piece] = []

    def flush() -> None:
        for piece, tokens in zip(pending, _run_grouped(encode, [p.chunk for p in pending])):
            for s in streams:
                got = tokens[s.name]
                need = piece.drop[s.name] + (piece.keep[s.name] if piece.keep else 0)
                if got.shape[0] < need:
                    raise RuntimeError(f"stream {s.name!r}: the codec returned {got.shape[0]} tokens for a "
                                       f"{piece.chunk.numel()}-sample chunk, the chunk policy needs >= {need}")
                end = None if piece.keep is None else piece.drop[s.name] + piece.keep[s.name]
                out[s.name].append(got[piece.drop[s.name]:end])
            if progress is not None:
                progress(piece.owned)
        pending.clear()

    start = 0
    while True:
        buf.fill(start + window + max(context, 1))  # one sample past the window tells whether it is the last
        if buf.end <= start and start > 0:
            break
        last = buf.exhausted and buf.end <= start + window
        end = buf.end if last else start + window
        lo, hi = max(start - context, 0), min(end + context, buf.end)
        if hi <= lo:
            break  # empty stream: nothing to encode
        pending.append(_Piece(buf.slice(lo, hi), end - start,
                              {s.name: frames(start - lo, s, sample_rate) for s in streams},
                              None if last else {s.name: frames(end - start, s, sample_rate) for s in streams}))
        if len(pending) >= batch_size:
            flush()
        if last:
            break
        buf.drop_before(end - context)
        start = end
    flush()
    return {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in out.items()}, buf.end


def _run_grouped(encode: EncodeFn, chunks: list[Tensor]) -> list[dict[str, np.ndarray]]:
    """Encode chunks, batching those of equal length, results in input order."""
    results: list[dict[str, np.ndarray] | None] = [None] * len(chunks)
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(chunks):
        groups.setdefault(c.numel(), []).append(i)
    for idx in groups.values():
        tokens = encode(torch.stack([chunks[i] for i in idx])[:, None, :])
        for j, i in enumerate(idx):
            results[i] = {k: v[j].detach().cpu().numpy().astype(np.int64) for k, v in tokens.items()}
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


def decode_stream(decode: DecodeFn, tokens: dict[str, np.ndarray], num_samples: int, policy: ChunkPolicy,
                  streams: Sequence[TokenStream], sample_rate: int, batch_size: int = 1) -> Iterator[Tensor]:
    """Decode tokens window by window; yields consecutive mono ``Tensor[n]`` blocks totalling ``num_samples``.

    Windows overlap by ``policy.overlap`` (linear cross-fade) and each sees ``policy.context`` samples' worth of
    neighbouring tokens. Peak memory: ``batch_size`` decoded windows, whatever the duration.
    """
    assert policy.window is not None
    spans = windows(num_samples, policy.window, policy.hop)
    overlap, context = policy.overlap, policy.context
    ramp = torch.linspace(0.0, 1.0, overlap) if overlap else None
    carry: Tensor | None = None
    for first in range(0, len(spans), batch_size):
        batch = spans[first:first + batch_size]
        requests = []
        for start, end in batch:
            lo, hi = max(start - context, 0), min(end + context, num_samples)
            sel = {}
            for s in streams:
                a = frames(lo, s, sample_rate)
                b = frames(hi, s, sample_rate) if hi < num_samples else len(tokens[s.name])
                sel[s.name] = tokens[s.name][a:b]
            requests.append((sel, hi - lo, start - lo, end - start))
        for k, piece in enumerate(_decode_grouped(decode, [(r[0], r[1]) for r in requests])):
            _, _, offset, length = requests[k]
            piece = piece[offset:offset + length]
            is_last = first + k == len(spans) - 1
            if carry is not None:
                head = carry * (1.0 - ramp) + piece[:overlap] * ramp
                piece = torch.cat([head, piece[overlap:]])
            if overlap and not is_last:
                carry = piece[-overlap:]
                piece = piece[:-overlap]
            yield piece


def _decode_grouped(decode: DecodeFn, requests: list[tuple[dict[str, np.ndarray], int]]) -> list[Tensor]:
    results: list[Tensor | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, (sel, n) in enumerate(requests):
        groups.setdefault((n, *sorted((k, len(v)) for k, v in sel.items())), []).append(i)
    for idx in groups.values():
        batch = {name: torch.from_numpy(np.stack([requests[i][0][name] for i in idx])) for name in requests[idx[0]][0]}
        wave = decode(batch, requests[idx[0]][1])
        for j, i in enumerate(idx):
            results[i] = wave[j].reshape(-1).detach().float().cpu()
    return results  # type: ignore[return-value]
