"""Reconstruction losses: the phase loss (instantaneous frequency / group delay / instantaneous phase)."""

from __future__ import annotations

import math

import pytest
import torch

from codecfw.plugins.loss.phase import PhaseLoss, PhaseLossConfig

SR = 16000


def _harmonic(f0: float, seconds: float = 0.5, phase: float = 0.0) -> torch.Tensor:
    """A glottal-like tone: 20 harmonics at 1/k amplitude, Tensor[1 x 1 x N]."""
    t = torch.arange(int(SR * seconds)) / SR
    return sum(torch.sin(2 * math.pi * k * f0 * t + k * phase) / k for k in range(1, 21))[None, None]


def _loss(**kw) -> PhaseLoss:
    return PhaseLoss(PhaseLossConfig(**kw))


def test_phase_loss_separates_harmonics_from_noise():
    torch.manual_seed(0)
    y = _harmonic(150.0)
    noise = torch.randn_like(y) * y.std()
    loss = _loss()
    assert loss(y, y).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(noise, y).item() > 1.0
    assert loss(_harmonic(170.0), y).item() > 1.0  # the wrong pitch: every harmonic advances at the wrong rate


def test_instantaneous_frequency_ignores_time_shifts_and_phase_offsets_the_phase_term_does_not():
    y = _harmonic(150.0)
    shifted = torch.roll(y, 37, dims=-1)
    iaf = _loss(group_delay=0.0)
    ip = _loss(instantaneous_frequency=0.0, group_delay=0.0, instantaneous_phase=1.0)
    assert iaf(shifted, y).item() < 0.1
    assert ip(shifted, y).item() > 1.0
    assert iaf(_harmonic(150.0, phase=1.0), y).item() < 0.1


def test_descending_mel_plus_phase_makes_noise_more_periodic_than_mel_alone():
    """The gradient is usable and does what the loss is for: optimising a waveform that starts as noise on mel + phase
    ends more periodic at the target's pitch than on the mel loss alone, and the phase loss at least halves."""
    from codecfw.plugins.loss.mel import MelSpectrogramLoss, MelSpectrogramLossConfig

    y = _harmonic(200.0)
    mel, phase = MelSpectrogramLoss(MelSpectrogramLossConfig(), SR), _loss()

    def periodicity(z: torch.Tensor) -> float:  # normalised autocorrelation at the period (80 samples at 200 Hz)
        z = z.detach().flatten()[1000:-1000]
        z = z - z.mean()
        return float((z[80:] * z[:-80]).sum() / (z * z).sum())

    results = {}
    for phase_weight in (0.0, 1.0):
        torch.manual_seed(0)
        x = (0.3 * torch.randn_like(y)).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=3e-3)
        start = phase(x, y).item()
        for _ in range(200):
            opt.zero_grad()
            (mel(x, y) + phase_weight * phase(x, y)).backward()
            opt.step()
        results[phase_weight] = periodicity(x), phase(x, y).item() / start
    assert results[1.0][0] > results[0.0][0] + 0.1, results
    assert results[1.0][1] < 0.5, results


def test_phase_loss_gradient_is_finite_on_silence_and_config_errors_are_clear():
    y = torch.zeros(2, 1, 4000)
    y_hat = (1e-6 * torch.randn(2, 1, 4000)).requires_grad_(True)
    _loss(instantaneous_phase=1.0)(y_hat, y).backward()
    assert torch.isfinite(y_hat.grad).all()
    with pytest.raises(ValueError, match="one hop per FFT size"):
        PhaseLossConfig(fft_sizes=[512, 1024], hop_sizes=[128])
    with pytest.raises(ValueError, match="all 0"):
        PhaseLossConfig(instantaneous_frequency=0, group_delay=0)
