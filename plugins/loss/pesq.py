"""PESQ-shaped perceptual loss: ``torch_pesq.PesqLoss`` (Schmidt, audiolabs, MIT), a differentiable re-implementation
of ITU-T P.862's disturbance model (Bark filterbank, Zwicker loudness, symmetric and asymmetric disturbance with
P.862's dead zone and asymmetry factor), without P.862's time alignment (a codec's output is aligned by construction).

Why a codec wants it: the losses that shape a GAN codec's spectrum (log-mel L1, spectral convergence) score a missing
formant and an added one alike, bin by bin; PESQ's disturbance is computed on *loudness* after it has compensated the
clip's average band powers (a fixed EQ costs little), and it punishes added energy (asymmetric disturbance) and energy
that misses a loud band far more than a quiet bin gone wrong. A low-rate codec trained on log-mel spends its capacity
where PESQ does not look (docs/training.md, "Stage 4's spectrum"). MetricGAN (Fu et al., arXiv 1905.04874) learns a
PESQ surrogate; this one is P.862's own arithmetic, so nothing has to be learned.

What the loss is per clip: ``0.1·d_symm + 0.0309·d_asymm`` (P.862's raw MOS is ``4.5`` minus it), averaged over the
clips that carry sound. Clips whose reference is near silence are skipped: P.862 aligns each signal's level to a
fixed power before comparing, which a silent crop turns into a division by ~0 (and the reference metric calls such a
pair "no utterance"). P.862 compares frames in windows of 20 (16 ms hop at 16 kHz), so a training crop must last at
least ~0.34 s.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig

#: P.862 at 16 kHz: 512-sample frames, hop 256, disturbances aggregated over windows of 20 frames
_MIN_SAMPLES_16K = 512 + 19 * 256


class PesqLossConfig(PluginConfig):
    kind: Literal["pesq"] = "pesq"
    weight: float = Field(1.0, ge=0)
    silence_db: float = Field(-50.0, le=0, description="skip clips whose reference RMS is below this (dBFS)")
    start_step: int = Field(0, ge=0, description="the training loop adds this loss from this step on")


class PesqLoss(nn.Module):
    """``forward(y_hat, y)`` on Tensor[B x 1 x N] (or [B x N]) → scalar: the mean, over clips that carry sound, of
    P.862's weighted disturbance ``0.1·d_symm + 0.0309·d_asymm`` (0 for identical signals; a raw MOS of ``4.5 − it``).
    """

    def __init__(self, cfg: PesqLossConfig, sample_rate: int) -> None:
        super().__init__()
        try:
            from torch_pesq import PesqLoss as _P862
        except ImportError as e:  # optional: only a recipe that names the loss needs it
            raise ImportError("the 'pesq' loss needs the torch-pesq package: pip install 'codecfw[perceptual]'") from e
        self.cfg = cfg
        self.sample_rate = sample_rate
        # float64: P.862 aggregates each 20-frame window as an L6 norm; where a window's disturbance is 0 (silence,
        # or inside the dead zone in both signals) torch-pesq's floor of 1e-20 underflows to 0 in float32 once raised
        # to the 6th power, and the root's infinite slope times 0 makes the gradient NaN. In float64 it stays finite.
        self.p862 = _P862(1.0, sample_rate=sample_rate).requires_grad_(False).double()
        self.min_samples = math.ceil(_MIN_SAMPLES_16K * sample_rate / 16000)

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        y_hat, y = y_hat.float().reshape(-1, y_hat.shape[-1]), y.float().reshape(-1, y.shape[-1])
        if y.shape[-1] < self.min_samples:
            raise ValueError(f"the 'pesq' loss needs clips of at least {self.min_samples} samples "
                             f"({self.min_samples / self.sample_rate:.2f} s at {self.sample_rate} Hz: P.862 windows "
                             f"of 20 frames); got {y.shape[-1]}: raise data.segment_seconds")
        floor = 10 ** (self.cfg.silence_db / 20)
        rms = lambda x: x.detach().square().mean(-1).sqrt()  # noqa: E731
        keep = ((rms(y) > floor) & (rms(y_hat) > 1e-6)).nonzero().squeeze(1)
        if keep.numel() == 0:  # all silence: nothing to compare, but keep the graph connected
            return y_hat.sum() * 0.0
        # rows are selected before the loss, so a skipped clip gets no gradient at all (not 0 × inf)
        ref, deg = y.index_select(0, keep).double(), y_hat.index_select(0, keep).double()
        return self.p862(ref, deg).mean().float()


@hookimpl
def register_losses(register):
    register("pesq", PesqLossConfig, lambda cfg, ctx: PesqLoss(cfg, getattr(ctx, "sample_rate", 16000)))
