"""Multi-frequency discriminator: X-Codec's only discriminator (``modules/discriminators/frequency_discriminator.py``).

Six STFT scales (hop 32..1024, ``n_fft = win = 4·hop``, Hann, ``normalized=True``); each magnitude spectrogram is
optionally mapped to a mel scale with as many bands as STFT bins, and fed as two channels, linear magnitude and a
clamped dB magnitude (``domain='double'``), to a 2-D conv stack of seven reflection-padded 3×3 weight-normed convs
(strides 1,2,1,2,1,2,1, LeakyReLU 0.2). Ye et al., arXiv 2408.17175.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.plugins.nn.dac import WNConv2d


class MultiFrequencyDiscriminatorConfig(PluginConfig):
    kind: Literal["multi_frequency"] = "multi_frequency"
    hop_lengths: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 512, 1024], min_length=1,
                                   description="one sub-discriminator per hop; n_fft = window = 4·hop")
    hidden_channels: list[int] = Field(default_factory=lambda: [64, 128, 256, 512, 512, 512], min_length=1,
                                       description="widest conv of each sub-discriminator (must be >= 32)")
    domain: Literal["double", "linear", "log"] = Field("double", description="input channels: linear magnitude, "
                                                                            "clamped dB magnitude, or both")
    mel_scale: bool = Field(True, description="map each STFT to n_fft/2+1 mel bands (reference)")
    ref_level_db: float = 20.0
    min_level_db: float = -100.0

    @model_validator(mode="after")
    def _check(self) -> MultiFrequencyDiscriminatorConfig:
        if len(self.hop_lengths) != len(self.hidden_channels):
            raise ValueError(f"hop_lengths ({len(self.hop_lengths)}) and hidden_channels ({len(self.hidden_channels)})"
                             f" must have the same length")
        if min(self.hidden_channels) < 32:
            raise ValueError("hidden_channels must be >= 32 (the first conv has hidden/32 channels)")
        return self


class FrequencyScaleDiscriminator(nn.Module):
    """Seven reflection-padded 3×3 convs over a ``Tensor[B x C x F x T]`` spectrogram → (logits, 6 feature maps)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        widths = [in_channels, hidden // 32, hidden // 16, hidden // 8, hidden // 4, hidden // 2, hidden, 1]
        self.convs = nn.ModuleList(
            nn.Sequential(nn.ReflectionPad2d(1), WNConv2d(widths[i], widths[i + 1], 3, stride=1 + i % 2))
            for i in range(7))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = []
        for i, conv in enumerate(self.convs):
            if i:
                # the reference's in-place LeakyReLU also rewrites the stored map, so its features are post-activation
                x = F.leaky_relu(x, 0.2)
                features.append(x)
            x = conv(x)
        return x, features


class MultiFrequencyDiscriminator(nn.Module):
    """y : Tensor[B x 1 x N] → one (logits Tensor[B x 1 x F' x T'], feature maps) per STFT scale."""

    def __init__(self, cfg: MultiFrequencyDiscriminatorConfig, sample_rate: int = 16000) -> None:
        super().__init__()
        import torchaudio

        self.cfg = cfg
        self.hops = list(cfg.hop_lengths)
        for hop in self.hops:
            n_fft = 4 * hop
            self.register_buffer(f"window_{hop}", torch.hann_window(n_fft), persistent=False)
            if cfg.mel_scale:
                n_freqs = n_fft // 2 + 1
                with warnings.catch_warnings():  # as many bands as bins: the lowest are empty by design
                    warnings.simplefilter("ignore", UserWarning)
                    fb = torchaudio.functional.melscale_fbanks(n_freqs, 0.0, float(sample_rate // 2), n_freqs,
                                                               sample_rate, norm=None, mel_scale="htk")
                # the reference clamps its filterbank to [1e-6, 1]: empty low bands keep a tiny weight
                self.register_buffer(f"mel_{hop}", fb.clamp(1e-6, 1), persistent=False)
        channels = 2 if cfg.domain == "double" else 1
        self.discriminators = nn.ModuleList(FrequencyScaleDiscriminator(channels, c) for c in cfg.hidden_channels)

    def spectrogram(self, y: Tensor, hop: int) -> Tensor:
        """y : Tensor[B x N] → Tensor[B x C x F x T] as the sub-discriminator sees it."""
        spec = torch.stft(y.float(), 4 * hop, hop, 4 * hop, getattr(self, f"window_{hop}"), normalized=True,
                          return_complex=True)
        mag = torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=1e-7))
        if self.cfg.mel_scale:
            mag = torch.matmul(mag.transpose(1, 2), getattr(self, f"mel_{hop}")).transpose(1, 2)
        log = 20 * torch.log10(mag) - self.cfg.ref_level_db
        log = torch.clamp((log - self.cfg.min_level_db) / -self.cfg.min_level_db, 0, 1)
        if self.cfg.domain == "linear":
            return mag.unsqueeze(1)
        if self.cfg.domain == "log":
            return log.unsqueeze(1)
        return torch.stack([mag, log], 1)

    def forward(self, y: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        y = y.reshape(-1, y.shape[-1])
        return [disc(self.spectrogram(y, hop)) for hop, disc in zip(self.hops, self.discriminators)]


@hookimpl
def register_discriminators(register):
    register("multi_frequency", MultiFrequencyDiscriminatorConfig,
             lambda cfg, ctx: MultiFrequencyDiscriminator(cfg, getattr(ctx, "sample_rate", 16000)))
