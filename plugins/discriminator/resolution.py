"""Multi-resolution STFT discriminator (UnivNet, Jang et al., arXiv 2106.07889; as in Vocos and SimVQ's audio recipe).

Each sub-discriminator takes a linear magnitude spectrogram ``Tensor[B x 1 x F x T]`` at one (n_fft, hop, window)
and runs 2-D convolutions that stride along frequency.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.plugins.nn.dac import WNConv2d


class MultiResolutionDiscriminatorConfig(PluginConfig):
    kind: Literal["multi_resolution"] = "multi_resolution"
    resolutions: list[tuple[int, int, int]] = Field(
        default_factory=lambda: [(1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)], min_length=1,
        description="(n_fft, hop, window) of each sub-discriminator")
    channels: int = Field(32, gt=0)
    negative_slope: float = Field(0.1, ge=0)


class ResolutionDiscriminator(nn.Module):
    """y : Tensor[B x N] → (logits Tensor[B x 1 x F' x T], feature maps) on one STFT resolution."""

    def __init__(self, n_fft: int, hop: int, window: int, channels: int, slope: float) -> None:
        super().__init__()
        self.n_fft, self.hop, self.slope = n_fft, hop, slope
        self.register_buffer("window", torch.hann_window(window), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            WNConv2d(1, c, (9, 3), padding=(4, 1)),
            WNConv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1)),
            WNConv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1)),
            WNConv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1)),
            WNConv2d(c, c, (3, 3), padding=(1, 1)),
        ])
        self.conv_post = WNConv2d(c, 1, (3, 3), padding=(1, 1))

    def forward(self, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(y.float(), self.n_fft, self.hop, self.window.shape[0], self.window, return_complex=True)
        x = spec.abs().unsqueeze(1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            features.append(x)
        return self.conv_post(x), features


class MultiResolutionDiscriminator(nn.Module):
    """y : Tensor[B x 1 x N] → one (logits, feature maps) per STFT resolution."""

    def __init__(self, cfg: MultiResolutionDiscriminatorConfig) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ResolutionDiscriminator(n_fft, hop, win, cfg.channels, cfg.negative_slope)
            for n_fft, hop, win in cfg.resolutions)

    def forward(self, y: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        y = y.reshape(-1, y.shape[-1])
        return [d(y) for d in self.discriminators]


@hookimpl
def register_discriminators(register):
    register("multi_resolution", MultiResolutionDiscriminatorConfig,
             lambda cfg, ctx: MultiResolutionDiscriminator(cfg))
