"""Multi-resolution STFT loss: spectral convergence + log-magnitude L1 (Yamamoto et al., Parallel WaveGAN,
arXiv 1910.11480), full band or on PQMF sub-bands (Yang et al., Multi-band MelGAN, arXiv 2005.05106).

X-Codec's generator loss uses both at weight 1: full band with fft (512, 1024, 2048) / window (480, 960, 1200) / hop
(120, 240, 300), and 6 PQMF sub-bands with fft (128, 256, 256) / window (80, 120, 200) / hop (20, 40, 50).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig

#: cut-off ratios tuned per band count (kan-bayashi/ParallelWaveGAN#195); others fall back to 0.142
PQMF_CUTOFF = {2: 0.25, 4: 0.13, 6: 0.10032791, 8: 0.07949452}


class PQMF(nn.Module):
    """Pseudo-QMF analysis filterbank: ``Tensor[B x 1 x N] → Tensor[B x bands x N/bands]``.

    A Kaiser-windowed sinc prototype (``taps + 1`` coefficients), cosine-modulated per band (Nguyen, 1994)."""

    def __init__(self, bands: int, taps: int = 62, cutoff_ratio: float | None = None, beta: float = 9.0) -> None:
        super().__init__()
        from scipy.signal.windows import kaiser

        cutoff = cutoff_ratio if cutoff_ratio is not None else PQMF_CUTOFF.get(bands, 0.142)
        n = torch.arange(taps + 1, dtype=torch.float64) - taps / 2
        omega = math.pi * cutoff
        with torch.no_grad():
            proto = torch.where(n == 0, torch.tensor(cutoff, dtype=torch.float64),
                                torch.sin(omega * n) / (math.pi * torch.where(n == 0, torch.ones_like(n), n)))
            proto = proto * torch.from_numpy(kaiser(taps + 1, beta))
            k = torch.arange(bands, dtype=torch.float64)[:, None]
            phase = (2 * k + 1) * (math.pi / (2 * bands)) * n[None] + (-1) ** k * math.pi / 4
            analysis = 2 * proto[None] * torch.cos(phase)
        self.bands, self.taps = bands, taps
        self.register_buffer("filters", analysis.float().unsqueeze(1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv1d(F.pad(x, (self.taps // 2, self.taps // 2)), self.filters)
        return y[..., :: self.bands]


class MultiResolutionSTFTLossConfig(PluginConfig):
    kind: Literal["multi_resolution_stft"] = "multi_resolution_stft"
    weight: float = Field(1.0, ge=0)
    fft_sizes: list[int] = Field(default_factory=lambda: [512, 1024, 2048], min_length=1)
    win_sizes: list[int] = Field(default_factory=lambda: [480, 960, 1200], min_length=1)
    hop_sizes: list[int] = Field(default_factory=lambda: [120, 240, 300], min_length=1)
    subbands: int = Field(1, ge=1, description="1: full band; >1: PQMF sub-bands (X-Codec's sub-band loss: 6)")
    reduction: Literal["sum", "mean"] = Field("sum", description="combine spectral convergence and log magnitude")
    convergence_weight: float = Field(1.0, ge=0, description="spectral convergence ‖|Y| − |Ŷ|‖ / ‖|Y|‖: weighs a "
                                      "bin by its energy, so loud bands (formants, harmonics) dominate")
    log_magnitude_weight: float = Field(1.0, ge=0, description="log-magnitude L1: every bin alike, the quiet ones "
                                        "as much as the loud (what a log-mel loss already does)")
    per_clip: bool = Field(False, description="spectral convergence per clip, then averaged (default: one ratio "
                                              "over the batch, as the reference, where the loudest clip dominates)")

    @model_validator(mode="after")
    def _check(self) -> MultiResolutionSTFTLossConfig:
        if not len(self.fft_sizes) == len(self.win_sizes) == len(self.hop_sizes):
            raise ValueError("fft_sizes, win_sizes and hop_sizes must have the same length")
        bad = [(f, w) for f, w in zip(self.fft_sizes, self.win_sizes) if w > f]
        if bad:
            raise ValueError(f"window longer than its FFT: {bad}")
        if not (self.convergence_weight or self.log_magnitude_weight):
            raise ValueError("convergence_weight and log_magnitude_weight are both 0: the loss would be constant")
        return self


class MultiResolutionSTFTLoss(nn.Module):
    """``forward(y_hat, y)`` on Tensor[B x 1 x N] → the resolutions' mean spectral convergence plus their mean
    log-magnitude L1 (magnitudes clamped at ``sqrt(1e-7)`` as in the reference), each times its weight."""

    def __init__(self, cfg: MultiResolutionSTFTLossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.resolutions = list(zip(cfg.fft_sizes, cfg.win_sizes, cfg.hop_sizes))
        for i, (_, win, _) in enumerate(self.resolutions):
            self.register_buffer(f"window_{i}", torch.hann_window(win), persistent=False)
        self.pqmf = PQMF(cfg.subbands) if cfg.subbands > 1 else None

    def _magnitude(self, x: Tensor, i: int) -> Tensor:
        n_fft, win, hop = self.resolutions[i]
        spec = torch.stft(x, n_fft, hop, win, getattr(self, f"window_{i}"), return_complex=True)
        return torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=1e-7))

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        y_hat, y = y_hat.float(), y.float()
        if self.pqmf is not None:
            y_hat, y = self.pqmf(y_hat.reshape(-1, 1, y_hat.shape[-1])), self.pqmf(y.reshape(-1, 1, y.shape[-1]))
        y_hat, y = y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1, y.shape[-1])
        sc, mag = 0.0, 0.0
        for i in range(len(self.resolutions)):
            p, t = self._magnitude(y_hat, i), self._magnitude(y, i)
            if self.cfg.per_clip:  # rows are clips (or a clip's sub-bands): ratios per row, then their mean
                ratio = torch.linalg.vector_norm(t - p, dim=(-2, -1)) / torch.linalg.vector_norm(t, dim=(-2, -1))
                sc = sc + ratio.mean()
            else:
                sc = sc + torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t)
            if self.cfg.log_magnitude_weight:
                mag = mag + F.l1_loss(torch.log(p), torch.log(t))
        sc, mag = sc / len(self.resolutions), mag / len(self.resolutions)
        total = self.cfg.convergence_weight * sc + self.cfg.log_magnitude_weight * mag
        return total if self.cfg.reduction == "sum" else total / 2


@hookimpl
def register_losses(register):
    register("multi_resolution_stft", MultiResolutionSTFTLossConfig, lambda cfg, ctx: MultiResolutionSTFTLoss(cfg))
