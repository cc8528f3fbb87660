"""Multi-scale mel-spectrogram L1 loss as in DAC (Kumar et al., arXiv 2306.06546, ``dac.nn.loss.MelSpectrogramLoss``).

At each (window, n_mels) scale: L1 between ``log10(clamp(mel, eps)^pow)`` of output and target (``log_weight``) plus
L1 between the mel magnitudes (``mag_weight``), summed over scales. DAC's defaults: windows 32..2048 (hop = window/4),
5..320 mels, eps 1e-5, pow 1, mag weight 0. X-Codec's optional mel loss (disabled in its config) is the single scale
window 1024 / n_fft 1024 / hop 160 / 80 mels: set ``window_lengths: [1024]``, ``hop_lengths: [160]``, ``n_mels: [80]``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig


class MelSpectrogramLossConfig(PluginConfig):
    kind: Literal["mel"] = "mel"
    weight: float = Field(1.0, ge=0, description="DAC trains with 15")
    window_lengths: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048], min_length=1)
    n_mels: list[int] = Field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320], min_length=1)
    hop_lengths: list[int] | None = Field(None, description="default: window / 4")
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, gt=0, description="default: Nyquist")
    clamp_eps: float = Field(1e-5, gt=0)
    pow: float = Field(1.0, gt=0)
    log_weight: float = Field(1.0, ge=0)
    mag_weight: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> MelSpectrogramLossConfig:
        if len(self.window_lengths) != len(self.n_mels) or (
                self.hop_lengths is not None and len(self.hop_lengths) != len(self.window_lengths)):
            raise ValueError("window_lengths, n_mels (and hop_lengths) must have the same length")
        return self


class MelSpectrogramLoss(nn.Module):
    """``forward(y_hat, y)`` on Tensor[B x 1 x N] → scalar (slaney mel filterbank on the STFT magnitude)."""

    def __init__(self, cfg: MelSpectrogramLossConfig, sample_rate: int) -> None:
        super().__init__()
        import torchaudio

        self.cfg = cfg
        hops = cfg.hop_lengths or [w // 4 for w in cfg.window_lengths]
        self.transforms = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=w, win_length=w, hop_length=h, f_min=cfg.f_min,
                                                 f_max=cfg.f_max, n_mels=m, power=1.0, norm="slaney",
                                                 mel_scale="slaney")
            for w, h, m in zip(cfg.window_lengths, hops, cfg.n_mels))

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        y_hat, y = y_hat.float().reshape(-1, y_hat.shape[-1]), y.float().reshape(-1, y.shape[-1])
        loss = y_hat.new_zeros(())
        eps, p = self.cfg.clamp_eps, self.cfg.pow
        for mel in self.transforms:
            a, b = mel(y_hat), mel(y)
            if self.cfg.log_weight:
                loss = loss + self.cfg.log_weight * F.l1_loss(a.clamp(min=eps).pow(p).log10(),
                                                              b.clamp(min=eps).pow(p).log10())
            if self.cfg.mag_weight:
                loss = loss + self.cfg.mag_weight * F.l1_loss(a, b)
        return loss


@hookimpl
def register_losses(register):
    register("mel", MelSpectrogramLossConfig,
             lambda cfg, ctx: MelSpectrogramLoss(cfg, getattr(ctx, "sample_rate", 16000)))
