"""Audio files: one mixdown rule, one resampler, one error type and one list of extensions for every reader.

Reading (:func:`read_audio`, :func:`audio_info`, :func:`probe_audio_file`), writing (:func:`write_audio`),
resampling (:func:`resample`) and mixing down (:func:`to_mono`) live here; the datasets
(:mod:`codecfw.core.data.dataset`), the streamed sources and sinks of encode/decode (:mod:`codecfw.core.data.stream`),
evaluation and clustering all use them, so a file one of them accepts the others accept too. Multichannel audio is
mixed down to the channel mean by default; ``mixdown="first"`` takes channel 0 as SemantiCodec's reference does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from ..atomic import atomic_path
from ..files import unreadable_reason

#: channel mean, channel 0, refuse anything but mono, or a channel index
Mixdown = Literal["mean", "first", "error"] | int
MIXDOWNS = ("mean", "first", "error")
#: what folders are scanned for and what ``codecfw encode`` accepts (formats libsndfile reads)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")


class AudioError(ValueError):
    """An audio file (or waveform) cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        self.path = str(path) if path is not None else "<waveform>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


AudioReadError = AudioError  # its name in the datasets' API before the audio modules merged


def short_error(exc: BaseException) -> str:
    """The last line of an exception's message (libsndfile's are long), or its class name."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def to_mono(frames: Tensor, mixdown: Mixdown, path: str | os.PathLike | None = None) -> Tensor:
    """frames : Tensor[C x N] → Tensor[N]. ``mean`` averages channels, ``first`` keeps channel 0 (SemantiCodec's
    reference), an integer keeps that channel, ``error`` refuses anything but mono."""
    if isinstance(mixdown, int) and not isinstance(mixdown, bool):
        if not 0 <= mixdown < frames.shape[0]:
            raise AudioError(path, f"mixdown channel {mixdown} out of range for {frames.shape[0]}-channel audio")
        return frames[mixdown]
    if mixdown not in MIXDOWNS:
        raise ValueError(f"mixdown must be one of {', '.join(MIXDOWNS)} or a channel index, got {mixdown!r}")
    if frames.shape[0] == 1:
        return frames[0]
    if mixdown == "mean":
        return frames.mean(0)
    if mixdown == "first":
        return frames[0]
    raise AudioError(path, f"has {frames.shape[0]} channels but mono input is required (mixdown='error'); use "
                           f"mixdown 'mean' (average) or 'first' (channel 0)")


@lru_cache(maxsize=32)
def _resampler(orig: int, new: int) -> torch.nn.Module:
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)  # kernel computed once per rate pair (per process)


def resample(wav: Tensor, orig: int, new: int) -> Tensor:
    """wav : Tensor[... x N] at ``orig`` Hz → Tensor[... x ceil(N * new / orig)] at ``new`` Hz: torchaudio's sinc
    resampler with its defaults (Hann window, 6 zero crossings, roll-off 0.99), the kernel cached per rate pair."""
    if orig == new:
        return wav
    if wav.dtype == torch.float32 and wav.device.type == "cpu":
        return _resampler(int(orig), int(new))(wav)
    import torchaudio

    return torchaudio.functional.resample(wav, int(orig), int(new))


@dataclass
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def sf_path(path: str | os.PathLike) -> bytes:
    """``path`` as libsndfile should get it: the file system's bytes. soundfile encodes a ``str`` as strict UTF-8,
    which fails for a name that is not UTF-8 (kept by Python as surrogate escapes, ``os.fsdecode``)."""
    return os.fsencode(path)


def check_readable(path: str | os.PathLike) -> None:
    """Raise :class:`AudioError` saying why ``path`` is not a readable regular file ("no such file", "not a regular
    file (a FIFO (named pipe))", "Permission denied"), without opening anything else than a regular file."""
    reason = unreadable_reason(path)
    if reason is not None:
        raise AudioError(path, reason[1])


def check_finite(wav: Tensor, path: str | os.PathLike) -> None:
    """Refuse audio with NaN/Inf samples (a diverged or damaged codec): libsndfile would write noise or fail."""
    if not bool(torch.isfinite(wav).all()):
        raise AudioError(path, "the audio to write has NaN/Inf samples (a diverged or damaged checkpoint?); "
                               "nothing was written")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header facts of an audio file; unreadable or empty files raise :class:`AudioError`."""
    path = os.fspath(path)
    check_readable(path)
    try:
        info = sf.info(sf_path(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError: all mean unreadable
        raise AudioError(path, f"cannot read audio file ({short_error(exc)})") from None
    if info.frames <= 0:
        raise AudioError(path, "empty audio (0 samples)")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def read_frames(path: str, start: int = 0, frames: int = -1, mixdown: Mixdown = "mean") -> tuple[Tensor, int]:
    """``frames`` frames from ``start`` as mono Tensor[N] float32, and the file's sample rate."""
    try:
        data, sr = sf.read(sf_path(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError... all mean "unreadable"
        raise AudioError(path, f"cannot read audio file ({short_error(exc)})") from exc
    return to_mono(torch.from_numpy(np.ascontiguousarray(data.T)), mixdown, path), sr


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, *, mixdown: Mixdown = "mean") -> Tensor:
    """Read a whole file as mono float32, resampled to ``sample_rate`` (native rate when None).

    Returns wav : Tensor[1 x N]. Raises :class:`AudioError` naming the file when it cannot be read.
    """
    path = os.fspath(path)
    check_readable(path)
    mono, sr = read_frames(path, mixdown=mixdown)
    wav = mono[None]
    return resample(wav, sr, sample_rate) if sample_rate else wav


def write_audio(path: str | os.PathLike, wav: Tensor, sample_rate: int, subtype: str | None = None) -> None:
    """Write wav : Tensor[C x N] (or [N]) atomically, creating the folder; the extension (.wav .flac .ogg) picks
    the format and ``subtype`` the encoding (soundfile's default: 16-bit PCM for WAV and FLAC)."""
    data = wav.detach().float().cpu()
    check_finite(data, path)
    data = (data[None] if data.dim() == 1 else data.reshape(-1, data.shape[-1])).T.numpy()
    with atomic_path(path) as tmp:
        sf.write(sf_path(tmp), data, sample_rate, subtype=subtype)


def probe_audio_file(path: str, block_frames: int = 1 << 16) -> dict[str, Any]:
    """Stream through a file once: {frames, sample_rate, channels, peak, finite} or {error}."""
    reason = unreadable_reason(path)  # missing, not a regular file (a FIFO is never opened), permission denied
    if reason is not None:
        return {"error": reason[0], "detail": reason[1]}
    try:
        info = sf.info(sf_path(path))
        peak, frames, finite = 0.0, 0, True
        with sf.SoundFile(sf_path(path)) as f:
            for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                frames += len(block)
                if not np.isfinite(block).all():
                    finite = False
                    break
                if len(block):
                    peak = max(peak, float(np.abs(block).max()))
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return {"error": "unreadable", "detail": f"{type(exc).__name__}: {exc}"}
    return {"frames": frames, "sample_rate": int(info.samplerate), "channels": int(info.channels), "peak": peak,
            "finite": finite}
