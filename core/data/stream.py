"""Streamed audio I/O for encode/decode: read and write files block by block, resampling on the fly.

Memory stays bounded by the block size, not the file's duration. :class:`StreamingResampler` computes exactly what
``torchaudio.functional.resample`` computes on the whole signal (same sinc-Hann kernel, same zero padding at both
ends, same output length ``ceil(n * new / orig)``), so a streamed file and an in-memory waveform give the same
samples, and therefore the same tokens.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..atomic import atomic_path
from .audio import MIXDOWNS, AudioError, Mixdown, audio_info, check_finite, sf_path, short_error, to_mono


class StreamingResampler:
    """Block-wise sinc resampling, equal to ``torchaudio.functional.resample`` over the concatenated input.

    torchaudio pads the signal with ``width`` zeros on the left and ``width + orig`` on the right and runs a strided
    convolution (stride ``orig``, kernel ``2 * width + orig``, ``new`` output phases). Here the same convolution runs
    over a rolling buffer: each push emits every output step whose kernel lies entirely in the data seen so far.
    """

    def __init__(self, orig_freq: int, new_freq: int) -> None:
        import torchaudio

        gcd = math.gcd(int(orig_freq), int(new_freq))
        self.orig, self.new = int(orig_freq) // gcd, int(new_freq) // gcd
        self.identity = self.orig == self.new
        if not self.identity:
            transform = torchaudio.transforms.Resample(int(orig_freq), int(new_freq))
            self.kernel, self.width = transform.kernel.float(), int(transform.width)
            self._buffer = torch.zeros(self.width)
        self._pushed = 0
        self._emitted = 0

    def output_length(self, input_length: int) -> int:
        return input_length if self.identity else math.ceil(self.new * input_length / self.orig)

    def _run(self) -> Tensor:
        size = self.kernel.shape[-1]
        steps = (self._buffer.numel() - size) // self.orig + 1 if self._buffer.numel() >= size else 0
        if steps <= 0:
            return torch.zeros(0)
        used = (steps - 1) * self.orig + size
        out = F.conv1d(self._buffer[None, None, :used], self.kernel, stride=self.orig)  # 1 x new x steps
        self._buffer = self._buffer[steps * self.orig:]
        return out[0].transpose(0, 1).reshape(-1)

    def push(self, block: Tensor) -> Tensor:
        """block : Tensor[n] float32 → the resampled samples that are final so far."""
        self._pushed += block.numel()
        if self.identity:
            return block
        self._buffer = torch.cat([self._buffer, block.float()])
        out = self._run()
        self._emitted += out.numel()
        return out

    def flush(self) -> Tensor:
        """The remaining samples (right zero padding applied); the total equals ``output_length(pushed)``."""
        if self.identity:
            return torch.zeros(0)
        self._buffer = torch.cat([self._buffer, torch.zeros(self.width + self.orig)])
        out = self._run()
        remaining = self.output_length(self._pushed) - self._emitted
        self._emitted += min(remaining, out.numel())
        return out[:max(remaining, 0)]


class AudioSource:
    """A file read as mono float32 blocks at ``target_rate``.

    mixdown : ``"mean" | "first" | "error"``, see :func:`to_mono`.
    resample : resample when the file's rate differs; ``False`` turns a different rate into an :class:`AudioError`.
    block_seconds : seconds of source audio per read (bounds memory).
    """

    def __init__(self, path: str | os.PathLike, target_rate: int, *, mixdown: Mixdown = "mean",
                 resample: bool = True, block_seconds: float = 10.0) -> None:
        self.info = audio_info(path)
        self.path = self.info.path
        self.target_rate = int(target_rate)
        self.mixdown = mixdown
        if mixdown not in MIXDOWNS:
            raise ValueError(f"mixdown must be one of {', '.join(MIXDOWNS)}, got {mixdown!r}")
        if mixdown == "error" and self.info.channels > 1:
            to_mono(torch.zeros(self.info.channels, 1), mixdown, self.path)
        if self.info.sample_rate != self.target_rate and not resample:
            raise AudioError(self.path, f"sample rate {self.info.sample_rate} Hz, but the codec expects "
                                        f"{self.target_rate} Hz and resampling is off (allow resampling, or convert "
                                        f"the file first)")
        self.block_frames = max(1, int(block_seconds * self.info.sample_rate))

    @property
    def num_samples(self) -> int:
        """Expected length at ``target_rate`` (from the header; the stream is authoritative)."""
        return StreamingResampler(self.info.sample_rate, self.target_rate).output_length(self.info.frames)

    def blocks(self) -> Iterator[Tensor]:
        """Yield ``Tensor[n]`` float32 mono blocks at ``target_rate``; raise :class:`AudioError` on read errors,
        non-finite samples or a file that turns out empty."""
        import soundfile as sf

        resampler = StreamingResampler(self.info.sample_rate, self.target_rate)
        seen = 0
        try:
            with sf.SoundFile(sf_path(self.path)) as fh:
                while True:
                    data = fh.read(self.block_frames, dtype="float32", always_2d=True)
                    if data.shape[0] == 0:
                        break
                    if not np.isfinite(data).all():
                        bad = int(np.flatnonzero(~np.isfinite(data).all(1))[0])
                        raise AudioError(self.path, f"non-finite sample (NaN or inf) at frame {seen + bad}")
                    frames = torch.from_numpy(np.ascontiguousarray(data.T))
                    seen += frames.shape[1]
                    out = resampler.push(to_mono(frames, self.mixdown, self.path))
                    if out.numel():
                        yield out
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(self.path, f"cannot read audio after {seen} frames ({short_error(exc)})") from None
        if seen == 0:
            raise AudioError(self.path, "empty audio (0 samples)")
        tail = resampler.flush()
        if tail.numel():
            yield tail

    def read(self) -> Tensor:
        """The whole file as ``Tensor[N]`` (memory grows with duration; :meth:`blocks` does not)."""
        return torch.cat(list(self.blocks()))


class AudioSink:
    """Write mono float blocks to a FLAC/WAV file atomically, optionally resampling from ``sample_rate`` to
    ``output_rate``. Samples are clipped to [-1, 1] before integer conversion (libsndfile would wrap around).

    Use as a context manager: the file appears at ``path`` only when the block exits without an error.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *, output_rate: int | None = None,
                 subtype: str | None = None) -> None:
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.output_rate = int(output_rate or sample_rate)
        fmt = self.path.suffix.lower().lstrip(".")
        if fmt not in ("flac", "wav"):
            raise ValueError(f"{self.path}: output format must be .flac or .wav, got {self.path.suffix!r}")
        self.format = fmt.upper()
        self.subtype = subtype or "PCM_16"
        self.samples_written = 0
        self._resampler = StreamingResampler(self.sample_rate, self.output_rate)

    def __enter__(self) -> "AudioSink":
        import soundfile as sf

        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._fh = sf.SoundFile(sf_path(tmp), "w", samplerate=self.output_rate, channels=1, format=self.format,
                                    subtype=self.subtype)
        except Exception as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise ValueError(f"{self.path}: cannot write {self.format}/{self.subtype}: {short_error(exc)}") from None
        return self

    def write(self, block: Tensor | np.ndarray) -> None:
        block = torch.as_tensor(block, dtype=torch.float32).reshape(-1)
        check_finite(block, self.path)
        self._write(self._resampler.push(block))

    def _write(self, block: Tensor) -> None:
        if block.numel():
            data = block.clamp(-1.0, 1.0).numpy() if self.subtype != "FLOAT" else block.numpy()
            self._fh.write(data)
            self.samples_written += block.numel()

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._write(self._resampler.flush())
        finally:
            self._fh.close()
        return bool(self._atomic.__exit__(exc_type, exc, tb))
