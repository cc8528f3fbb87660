"""Reconstruction losses: the phase loss (instantaneous frequency / group delay / instantaneous phase) and the
PESQ-shaped loss (P.862's disturbance, torch-pesq)."""

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


# --- the PESQ-shaped loss (plugins/loss/pesq.py) ---

def _voice(seconds: float = 1.5, seed: int = 0) -> torch.Tensor:
    """A vowel-like test signal: a 120-200 Hz glide of harmonics through two formant-like peaks, syllable-rate
    amplitude modulation, a short pause; Tensor[1 x 1 x N], peak ~0.5."""
    g = torch.Generator().manual_seed(seed)
    n = int(SR * seconds)
    t = torch.arange(n) / SR
    f0 = 120 + 80 * t / seconds
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    x = torch.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        gain = torch.exp(-((fk - 700) / 300) ** 2) + 0.5 * torch.exp(-((fk - 2200) / 500) ** 2) + 0.02
        x = x + gain * torch.sin(k * phase + float(torch.rand((), generator=g)) * 6.28)
    x = x * (0.55 + 0.45 * torch.sin(2 * math.pi * 4 * t)) * (t % 0.75 < 0.6)
    return (0.5 * x / x.abs().max())[None, None]


def _pesq_loss(**kw):
    pytest.importorskip("torch_pesq")
    from codecfw.plugins.loss.pesq import PesqLoss, PesqLossConfig

    return PesqLoss(PesqLossConfig(**kw), SR)


def test_pesq_loss_ranks_degradations_as_pesq_does():
    pesq = pytest.importorskip("pesq")
    torch.manual_seed(0)
    y = _voice()
    noise = torch.randn_like(y)
    lowpass = torch.fft.irfft(torch.fft.rfft(y) * (torch.fft.rfftfreq(y.shape[-1], 1 / SR) < 1500), y.shape[-1])
    degraded = [y + 0.003 * noise, y + 0.03 * noise, lowpass, lowpass + 0.05 * noise]
    loss = _pesq_loss()
    assert loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    ours = [loss(d, y).item() for d in degraded]
    ref = [pesq.pesq(SR, y[0, 0].numpy(), d[0, 0].numpy(), "wb") for d in degraded]
    # a lower loss wherever PESQ is clearly higher (by > 0.2), for every pair of degradations
    for i in range(len(degraded)):
        for j in range(len(degraded)):
            if ref[i] > ref[j] + 0.2:
                assert ours[i] < ours[j], (i, j, ours, ref)


def test_descending_the_pesq_loss_raises_pesq():
    pesq = pytest.importorskip("pesq")
    torch.manual_seed(1)
    y = _voice(seed=1)
    start = y + 0.05 * torch.randn_like(y)
    y_hat = start.clone().requires_grad_(True)
    loss = _pesq_loss()
    opt = torch.optim.Adam([y_hat], lr=1e-3)
    for _ in range(40):
        opt.zero_grad()
        loss(y_hat, y).backward()
        opt.step()
    before = pesq.pesq(SR, y[0, 0].numpy(), start[0, 0].numpy(), "wb")
    after = pesq.pesq(SR, y[0, 0].numpy(), y_hat.detach()[0, 0].numpy(), "wb")
    assert after > before + 0.3, (before, after)


def test_pesq_loss_gradient_is_finite_where_a_window_is_undisturbed_and_silent_clips_are_skipped():
    y = torch.cat([_voice(seconds=1.0), torch.zeros(1, 1, SR)])  # a clip with sound, a silent one
    y[0, 0, 2000:] *= 1e-4                                      # mostly below hearing: windows with no disturbance
    y_hat = (y * 1.01).requires_grad_(True)
    loss = _pesq_loss()
    value = loss(y_hat, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(y_hat.grad).all()  # float32 inside torch-pesq: NaN here
    assert y_hat.grad[1].abs().max() == 0                              # the silent clip: skipped, not scored
    assert value.item() == pytest.approx(loss(y_hat[:1].detach(), y[:1]).item(), rel=1e-6)
    assert loss(torch.zeros(2, 1, SR).requires_grad_(True), torch.zeros(2, 1, SR)).item() == 0.0
    with pytest.raises(ValueError, match="at least 5376 samples"):
        loss(torch.zeros(1, 1, 4000), torch.zeros(1, 1, 4000))


def test_pesq_loss_registers_and_the_stage_6_recipe_uses_it():
    pytest.importorskip("torch_pesq")
    from codecfw.core.config import load_recipe
    from codecfw.core.registry import get_registry
    from codecfw.plugins.loss.pesq import PesqLoss

    assert "pesq" in get_registry().kinds("loss")
    recipe = load_recipe("sacodec_small_16k_pesq")
    (cfg,) = [c for c in recipe.losses if c.kind == "pesq"]
    assert cfg.weight > 0 and recipe.data.segment_seconds * recipe.sample_rate >= PesqLoss(cfg, 16000).min_samples
