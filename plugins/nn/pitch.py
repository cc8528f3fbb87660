"""Pitch for decoders: a batched YIN F0 tracker (training targets) and a band-limited harmonic excitation.

YIN (de Cheveigné & Kawahara, JASA 2002): the cumulative-mean-normalised difference function of each frame, the first
lag whose value falls below ``threshold`` (then the minimum of that dip, refined by parabolic interpolation); a
frame whose minimum stays above it is unvoiced. It runs on the training batch itself, a few milliseconds for a CPU
batch, where CREPE (the evaluation's tracker) costs as much as the generator's step.

The excitation follows the source-filter idea of neural source-filter models (Wang et al., NSF, arXiv 1810.11946)
and DDSP (Engel et al., arXiv 2001.04643): the phase is integrated sample by sample from the F0 contour, so the
harmonics stay coherent over any number of frames, which a network predicting each frame's phase on its own
(an iSTFT head) has to learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def yin(wav: Tensor, sample_rate: int, hop: int, f_min: float = 50.0, f_max: float = 1000.0,
        threshold: float = 0.15, window: int | None = None, silence_db: float = -50.0) -> tuple[Tensor, Tensor]:
    """wav : Tensor[B x N] → (f0 : Tensor[B x T] in Hz, voiced : BoolTensor[B x T]), ``T = ceil(N / hop)``.

    Frame ``t`` is centred on sample ``t·hop + hop/2`` (the frames of a codec whose hop is ``hop``). ``window``
    (default: two periods of ``f_min``, at least ``hop``) is YIN's integration window. Unvoiced frames carry the
    F0 of their best lag (meaningless); frames quieter than ``silence_db`` below the clip's peak frame are unvoiced.
    """
    wav = wav.float()
    batch, n = wav.shape
    tau_min, tau_max = max(2, int(sample_rate / f_max)), int(math.ceil(sample_rate / f_min))
    win = window or max(hop, 2 * tau_max)
    length = win + tau_max + 1
    frames_n = -(-n // hop)
    left = length // 2 - hop // 2
    padded = F.pad(wav, (left, max(0, (frames_n - 1) * hop + length - n - left)))
    frames = padded.unfold(-1, length, hop)[:, :frames_n]                       # B x T x L
    frames = frames - frames.mean(-1, keepdim=True)
    a = frames[..., :win]
    size = 1 << (length + win).bit_length()
    cross = torch.fft.irfft(torch.fft.rfft(frames, size) * torch.fft.rfft(a, size).conj(), size)[..., :tau_max + 1]
    energy = F.pad(frames.square(), (1, 0)).cumsum(-1)                          # B x T x L+1
    lags = torch.arange(tau_max + 1, device=wav.device)
    e_shift = energy[..., lags + win] - energy[..., lags]
    diff = (energy[..., win:win + 1] + e_shift - 2 * cross).clamp(min=0)        # d(τ), τ = 0..τmax
    d = diff[..., 1:]
    cmnd = d * torch.arange(1, tau_max + 1, device=wav.device) / d.cumsum(-1).clamp(min=1e-12)
    cmnd = F.pad(cmnd, (1, 0), value=1.0)                                       # index = lag
    in_range = lags >= tau_min
    below = (cmnd < threshold) & in_range
    first = torch.where(below.any(-1), below.float().argmax(-1), cmnd.masked_fill(~in_range, 9.0).argmin(-1))
    # the dip that starts at `first`: lags from first on while still below the threshold
    after = lags >= first[..., None]
    run = (below | ~after).long().cumprod(-1).bool() & after
    dip = torch.where(run.any(-1, keepdim=True), run, lags == first[..., None])
    best = cmnd.masked_fill(~dip, 9.0).argmin(-1).clamp(1, tau_max - 1)
    c0, c1, c2 = (cmnd.gather(-1, (best + k)[..., None])[..., 0] for k in (-1, 0, 1))
    curvature = c0 - 2 * c1 + c2
    shift = torch.where(curvature > 1e-9, 0.5 * (c0 - c2) / curvature.clamp(min=1e-9), torch.zeros_like(c1))
    f0 = sample_rate / (best.float() + shift.clamp(-1, 1))
    power = a.square().mean(-1)
    loud = 10 * torch.log10(power.clamp(min=1e-12) / power.amax(-1, keepdim=True).clamp(min=1e-12)) > silence_db
    return f0, (c1 < threshold) & loud


def harmonic_excitation(f0: Tensor, hop: int, sample_rate: int, max_harmonics: int | None = None) -> Tensor:
    """f0 : Tensor[B x T] (Hz, per frame) → Tensor[B x T·hop]: ``Σ_k cos(k·φ(n))`` over the harmonics below Nyquist,
    each at amplitude 1, with ``φ(n) = 2π Σ_{m≤n} f0(m) / sample_rate`` (F0 linearly interpolated between frame
    centres). A band-limited pulse train: every harmonic present, so a per-bin gain shapes it into any envelope."""
    f0 = f0.float().clamp(min=1.0)
    samples = F.interpolate(f0[:, None], scale_factor=hop, mode="linear", align_corners=False)[:, 0]
    cycles = torch.cumsum(samples.double() / sample_rate, dim=-1)
    phase = (2 * math.pi * torch.frac(cycles)).float()
    k_max = int(sample_rate / 2 / float(f0.min())) if max_harmonics is None else max_harmonics
    out = torch.zeros_like(samples)
    for k in range(1, k_max + 1):  # k·f0 ≥ Nyquist is masked per sample (F0 varies)
        out = out + torch.cos(k * phase) * (k * samples < sample_rate / 2)
    return out
