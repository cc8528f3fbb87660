"""Reading and writing audio files: mono float32 tensors, torchaudio resampling, a one-pass probe.

Shared by the datasets (:mod:`codecfw.core.data.dataset`, which re-exports :func:`read_audio`) and by the encode, eval and
cluster commands. Multichannel audio is mixed down to the channel mean by default; ``mixdown="first"`` takes channel
0 as SemantiCodec's reference does.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch

Mixdown = Literal["mean", "first"] | int  # channel mean, channel 0, or a channel index


class AudioReadError(RuntimeError):
    """An audio file could not be read; the message names the file."""


def _to_mono(frames: np.ndarray, mixdown: Mixdown) -> np.ndarray:
    """frames : [N x C] → [N]."""
    if mixdown == "mean":
        return frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    channel = 0 if mixdown == "first" else int(mixdown)
    if not 0 <= channel < frames.shape[1]:
        raise ValueError(f"mixdown channel {channel} out of range for {frames.shape[1]}-channel audio")
    return frames[:, channel]


@lru_cache(maxsize=32)
def _resampler(orig: int, new: int) -> torch.nn.Module:
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)  # kernel computed once per rate pair (per process)


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """wav : Tensor[... x N] at ``orig`` Hz → Tensor[... x ceil(N * new / orig)] at ``new`` Hz (torchaudio sinc)."""
    if orig == new:
        return wav
    with torch.no_grad():
        return _resampler(int(orig), int(new))(wav)


def _read_frames(path: str, start: int = 0, frames: int = -1, mixdown: Mixdown = "mean") -> tuple[np.ndarray, int]:
    try:
        data, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError... all mean "unreadable"
        raise AudioReadError(f"cannot read audio file {path}: {exc}") from exc
    return _to_mono(data, mixdown), sr


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, *, mixdown: Mixdown = "mean") -> torch.Tensor:
    """Read a whole file as mono float32, resampled to ``sample_rate`` (native rate when None).

    Returns wav : Tensor[1 x N]. Raises :class:`AudioReadError` naming the file when it cannot be read.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise AudioReadError(f"cannot read audio file {path}: no such file")
    mono, sr = _read_frames(path, mixdown=mixdown)
    wav = torch.from_numpy(np.ascontiguousarray(mono))[None]
    return resample(wav, sr, sample_rate) if sample_rate else wav


def write_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str | None = None) -> None:
    """Write wav : Tensor[C x N] (or [N]) atomically, creating the folder; the extension (.wav .flac .ogg) picks
    the format and ``subtype`` the encoding (soundfile's default: 16-bit PCM for WAV and FLAC)."""
    path = Path(path)
    data = wav.detach().float().cpu()
    data = (data[None] if data.dim() == 1 else data.reshape(-1, data.shape[-1])).T.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, subtype=subtype)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def probe_audio_file(path: str, block_frames: int = 1 << 16) -> dict[str, Any]:
    """Stream through a file once: {frames, sample_rate, channels, peak, finite} or {error}."""
    if not os.path.isfile(path):
        return {"error": "missing", "detail": "no such file"}
    try:
        info = sf.info(path)
        peak, frames, finite = 0.0, 0, True
        with sf.SoundFile(path) as f:
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
