"""Phase losses: instantaneous frequency, group delay and instantaneous phase of the output's STFT against the
target's (the anti-wrapping phase losses of APNet, Ai & Ling, arXiv 2305.09312, §3.3).

Why a codec needs them: a mel (or STFT-magnitude) loss is blind to phase, so a decoder that predicts the complex
STFT (``vocos_istft``) can satisfy it with a noise-excited spectral envelope, and only the discriminators push the
phase towards a harmonic structure. On a small, CPU-trained codec they did not in 9000 steps (docs/training.md, "The
adversarial phase: a stall that the mel loss does not show"); these losses supervise the phase directly.

With ``Y[f, t]`` the STFT, the three terms compare, between output and target:

- instantaneous frequency (IAF): the phase advance of each bin from frame ``t-1`` to ``t``
  (``angle(Y[f, t] · conj(Y[f, t-1]))``): harmonics at the right frequencies, stable from frame to frame. It is
  invariant to a time shift of the whole signal and to a constant phase offset.
- group delay (GD): the phase difference between neighbouring bins (``angle(Y[f, t] · conj(Y[f-1, t]))``): where the
  energy sits inside the frame (a glottal pulse against noise spread over it).
- instantaneous phase (IP): the phase itself. A low-bitrate codec cannot know it, so it is off by default.

APNet takes ``|wrap(Δ̂ − Δ)|`` of angles; here each phase difference is a unit phasor and the distance between
two phasors, ``|e^{iΔ̂} − e^{iΔ}| = 2|sin((Δ̂ − Δ)/2)|``, is the same anti-wrapping distance without the
``angle`` (whose gradient is unbounded near zero magnitude: phasors are normalised by ``|Y| + eps``, so the
gradient stays finite on silence). Bins are weighted by the target's magnitude (``magnitude_weighted``): the
phase of a bin holding noise or nothing carries no information, and unweighted it dominates the mean.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig


class PhaseLossConfig(PluginConfig):
    kind: Literal["phase"] = "phase"
    weight: float = Field(1.0, ge=0)
    fft_sizes: list[int] = Field(default_factory=lambda: [512, 1024], min_length=1)
    hop_sizes: list[int] | None = Field(None, description="default: fft size / 4")
    instantaneous_frequency: float = Field(1.0, ge=0, description="weight of the IAF term")
    group_delay: float = Field(1.0, ge=0, description="weight of the GD term")
    instantaneous_phase: float = Field(0.0, ge=0, description="weight of the IP term (APNet: 1; a codec: 0)")
    magnitude_weighted: bool = Field(True, description="weight bins by the target's magnitude")
    eps: float = Field(1e-3, gt=0, description="phasor normaliser, relative to each clip's peak STFT magnitude")
    start_step: int = Field(0, ge=0, description="the training loop adds this loss from this step on")

    @model_validator(mode="after")
    def _check(self) -> PhaseLossConfig:
        if self.hop_sizes is not None and len(self.hop_sizes) != len(self.fft_sizes):
            raise ValueError(f"hop_sizes has {len(self.hop_sizes)} entries, fft_sizes {len(self.fft_sizes)}: "
                             f"one hop per FFT size")
        if not (self.instantaneous_frequency or self.group_delay or self.instantaneous_phase):
            raise ValueError("instantaneous_frequency, group_delay and instantaneous_phase are all 0: "
                             "the loss would be constant")
        return self


def _weighted_mean(distance: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return distance.mean()
    return (distance * weight).sum() / weight.sum().clamp(min=1e-12)


class PhaseLoss(nn.Module):
    """``forward(y_hat, y)`` on Tensor[B x 1 x N] → scalar: Σ over terms of weight × the resolutions' mean
    (magnitude-weighted) phasor distance, each in [0, 2] (≈ 1.27 between independent random phases)."""

    def __init__(self, cfg: PhaseLossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hops = cfg.hop_sizes or [n // 4 for n in cfg.fft_sizes]
        self.resolutions = list(zip(cfg.fft_sizes, hops))
        for i, (n_fft, _) in enumerate(self.resolutions):
            self.register_buffer(f"window_{i}", torch.hann_window(n_fft), persistent=False)

    def _phasor(self, x: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """x : Tensor[B x N] → (unit phasors, magnitudes), each Tensor[B x F x T]."""
        n_fft, hop = self.resolutions[i]
        spec = torch.stft(x, n_fft, hop, n_fft, getattr(self, f"window_{i}"), return_complex=True)
        mag = spec.abs()
        eps = self.cfg.eps * mag.detach().amax(dim=(1, 2), keepdim=True).clamp(min=1e-8)
        return spec / (mag + eps), mag

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        y_hat, y = y_hat.float().reshape(-1, y_hat.shape[-1]), y.float().reshape(-1, y.shape[-1])
        cfg = self.cfg
        total = y_hat.new_zeros(())
        for i in range(len(self.resolutions)):
            p_hat, _ = self._phasor(y_hat, i)
            p, mag = self._phasor(y, i)
            w = mag.detach() if cfg.magnitude_weighted else None
            if cfg.instantaneous_frequency:
                d_hat, d = p_hat[..., 1:] * p_hat[..., :-1].conj(), p[..., 1:] * p[..., :-1].conj()
                wt = None if w is None else torch.sqrt(w[..., 1:] * w[..., :-1])
                total = total + cfg.instantaneous_frequency * _weighted_mean((d_hat - d).abs(), wt)
            if cfg.group_delay:
                d_hat, d = p_hat[:, 1:] * p_hat[:, :-1].conj(), p[:, 1:] * p[:, :-1].conj()
                wf = None if w is None else torch.sqrt(w[:, 1:] * w[:, :-1])
                total = total + cfg.group_delay * _weighted_mean((d_hat - d).abs(), wf)
            if cfg.instantaneous_phase:
                total = total + cfg.instantaneous_phase * _weighted_mean((p_hat - p).abs(), w)
        return total / len(self.resolutions)


@hookimpl
def register_losses(register):
    register("phase", PhaseLossConfig, lambda cfg, ctx: PhaseLoss(cfg))
